package master

import (
	"bytes"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/gavel-auction/gavel/pki"
)

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func identity(t *testing.T, ca *pki.CA, trust []byte, id string) *pki.Identity {
	t.Helper()
	return identityAs(t, ca, trust, pki.Peer{Role: pki.RoleMaster, ID: id})
}

func identityAs(t *testing.T, ca *pki.CA, trust []byte, who pki.Peer) *pki.Identity {
	t.Helper()
	kp, err := ca.Issue(who, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := pki.Parse(trust, kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return ident
}

// The Raft transport over TLS: a peer that connects and says nothing does
// not hold up a peer that handshakes; a peer with a certificate of another
// CA is refused and logged; after Close, Accept returns an error.
func TestStreamLayerTLS(t *testing.T) {
	ca, err := pki.NewCA("gavel CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := pki.NewCA("foreign CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := ca.PEM().CertPEM
	var logs lockedBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	masters := map[string]bool{"m1": true, "m2": true}
	server, err := newStreamLayer(lis, addr, addr, identity(t, ca, caPEM, "m1").PeerConfig(), []string{"m1", "m2"}, log)
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	peer := &streamLayer{tls: identity(t, ca, caPEM, "m2").PeerConfig(), masters: masters, log: log}
	stranger := &streamLayer{tls: identity(t, foreign, caPEM, "m9").PeerConfig(), masters: masters, log: log}
	// A node's certificate, of the cluster's own CA, is not a master's,
	// even when it carries a master's id.
	node := &streamLayer{tls: identityAs(t, ca, caPEM, pki.Peer{Role: pki.RoleNode, ID: "m2"}).PeerConfig(),
		masters: map[string]bool{"m1": true}, log: log}

	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()

	type accepted struct {
		c   net.Conn
		err error
	}
	got := make(chan accepted, 4)
	go func() {
		for {
			c, err := server.Accept()
			got <- accepted{c, err}
			if err != nil {
				return
			}
		}
	}()
	start := time.Now()
	c, err := peer.Dial(raft.ServerAddress(addr), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case a := <-got:
		if a.err != nil {
			t.Fatal(a.err)
		}
		a.c.Close()
		if d := time.Since(start); d > time.Second {
			t.Errorf("accepting a peer took %v behind a silent connection", d)
		}
	case <-time.After(handshakeTimeout - time.Second):
		t.Fatal("a silent connection held up the peer's")
	}

	if c, err := stranger.Dial(raft.ServerAddress(addr), 2*time.Second); err == nil {
		// TLS 1.3: the client's handshake ends before the server has
		// checked its certificate; the server's refusal shows on read.
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a certificate of another CA was accepted")
		}
		c.Close()
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(logs.String(), "peer_cert=m9") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	for _, want := range []string{`level=WARN msg="refused raft connection: TLS handshake failed"`, "peer_cert=m9",
		"the peer's certificate is not signed by this cluster's CA"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	select {
	case a := <-got:
		t.Fatalf("Accept returned a refused connection: %v %v", a.c, a.err)
	default:
	}

	if c, err := node.Dial(raft.ServerAddress(addr), 2*time.Second); err == nil {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Error("a node's certificate was accepted for Raft")
		}
		c.Close()
	}
	deadline = time.Now().Add(2 * time.Second)
	for !strings.Contains(logs.String(), "peer_cert=node/m2") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if want := `msg="refused raft connection: the peer's certificate is not a master's"`; !strings.Contains(logs.String(), want) ||
		!strings.Contains(logs.String(), "peer_cert=node/m2") {
		t.Errorf("log lacks %q for node/m2:\n%s", want, logs.String())
	}
	// A master dialing a server that is not a master refuses it too.
	if c, err := peer.Dial(raft.ServerAddress(addr), 2*time.Second); err != nil {
		t.Errorf("m2 dialing m1: %v", err)
	} else {
		c.Close()
		if a := <-got; a.err == nil {
			a.c.Close()
		}
	}
	notMaster := &streamLayer{tls: identity(t, ca, caPEM, "m2").PeerConfig(), masters: map[string]bool{"m2": true}, log: log}
	if c, err := notMaster.Dial(raft.ServerAddress(addr), 2*time.Second); err == nil {
		c.Close()
		t.Error("a dialer that knows m2 only accepted m1's certificate as a master's")
	} else if !strings.Contains(err.Error(), "not of a master") {
		t.Errorf("dial error %v does not say the server is not a master", err)
	}
	// The server, for its part, accepted m2's certificate: take that
	// connection.
	select {
	case a := <-got:
		if a.err == nil {
			a.c.Close()
		}
	case <-time.After(2 * time.Second):
		t.Error("the server did not accept m2's connection")
	}

	server.Close()
	select {
	case a := <-got:
		if a.err == nil {
			t.Error("Accept after Close returned a connection")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}
