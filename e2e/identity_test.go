package e2e

// Identity on every link, against real processes: a cluster of 3 masters,
// 3 nodes and a gateway with mutual TLS (gavel certs init) and bidder
// tokens (auth.secret). Each forgery a process could try with a
// certificate of the cluster's CA that is not the right one — replication
// messages, a heartbeat for another node, a configuration change, a bid
// for another bidder — and a WebSocket connection that outlives its token,
// is refused with a logged reason, and the chain's state and membership
// stay as they were. The same cluster without TLS and without insecure:
// true does not start at all.

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/pki"
)

// identitySecret is the auth.secret of the secure cluster.
const identitySecret = "identity-test-secret-0123456789"

// newSecureCluster starts 3 masters, 3 nodes (chain n1 -> n2 -> n3) and
// gateway g1 with TLS on every link (certificates from gavel certs init,
// in the test's directory) and auth.secret set. The test's own gRPC
// connections present the admin tools' certificate.
func newSecureCluster(t *testing.T) *cluster {
	t.Helper()
	c := newEmptyCluster(t)
	var b strings.Builder
	b.WriteString(c.masterClusterYAML(3))
	gw := freePort(t)
	fmt.Fprintf(&b, "gateways:\n  - id: g1\n    addr: %s\n", gw)
	fmt.Fprintf(&b, "tls:\n  ca: certs/ca.crt\nauth:\n  secret: %s\n", identitySecret)
	c.cfgPath = filepath.Join(c.dir, "config.yaml")
	if err := os.WriteFile(c.cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	certs := exec.Command(gavelBin, "certs", "init", "--config", c.cfgPath)
	certs.Dir = c.dir
	if out, err := certs.CombinedOutput(); err != nil {
		t.Fatalf("gavel certs init: %v\n%s", err, out)
	}
	pool, err := pki.LoadPool(filepath.Join(c.dir, "certs", "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	c.caPool = pool
	c.dialOpts = []grpc.DialOption{c.identity("admin").DialOption()}
	t.Cleanup(c.shutdown)
	c.startMasterCluster()
	c.gatewayIDs = []string{"g1"}
	c.addrs["g1"] = gw
	c.startGateway("g1")
	return c
}

// identity loads the certificate and key gavel certs init wrote for id.
func (c *cluster) identity(id string) *pki.Identity {
	c.t.Helper()
	dir := filepath.Join(c.dir, "certs")
	ident, err := pki.Load(filepath.Join(dir, "ca.crt"), filepath.Join(dir, id+".crt"), filepath.Join(dir, id+".key"))
	if err != nil {
		c.t.Fatal(err)
	}
	return ident
}

// dialAs opens a connection to process to, presenting as's certificate.
func (c *cluster) dialAs(as, to string) *grpc.ClientConn {
	c.t.Helper()
	conn, err := grpc.NewClient(c.addrs[to], c.identity(as).DialOption())
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	return conn
}

// bidderToken signs a token for bidder, valid for ttl.
func bidderToken(t *testing.T, bidder string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.NewToken([]byte(identitySecret), bidder, auth.RoleBidder, ttl, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// dialBidder connects to g1 over wss with bidder's token, from the
// gateway's own page (Origin).
func (c *cluster) dialBidder(token string) *wsClient {
	c.t.Helper()
	d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second,
		TLSClientConfig: &tls.Config{RootCAs: c.caPool, MinVersion: tls.VersionTLS12}}
	hdr := http.Header{"Authorization": {"Bearer " + token}, "Origin": {c.gatewayURL("g1")}}
	w, err := dialWSWith(c.t, d, c.wsURL("g1", ""), hdr)
	if err != nil {
		c.t.Fatal(err)
	}
	return w
}

// chainState is what the forgeries must leave as it is: each node's
// applied sequence number, state digest and epoch, and the master
// leader's configuration.
type chainState struct {
	nodes  map[string]string
	config string
}

// settledState waits until every node has applied the same updates (the
// same digest) and returns the chain's state.
func (c *cluster) settledState() chainState {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := chainState{nodes: map[string]string{}, config: configKey(c.config())}
		distinct := map[string]bool{}
		for id, s := range c.statuses(c.ids...) {
			st.nodes[id] = fmt.Sprintf("applied %d digest %s epoch %d", s.Applied, s.StateDigest, s.Config.GetEpoch())
			distinct[st.nodes[id]] = true
		}
		if len(distinct) == 1 {
			return st
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the nodes did not settle on one state: %v", st.nodes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitLogLine waits up to 5 s for a line of id's log holding every one of
// want, and returns it.
func (c *cluster) waitLogLine(id string, want ...string) string {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(c.dir, id+".log"))
		for _, line := range strings.Split(string(b), "\n") {
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(line, w)
			}
			if ok && line != "" {
				return line
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no line of %s.log holds %q; its end:\n%s", id, want, tail(filepath.Join(c.dir, id+".log"), 20))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// certName is how logs name the certificate gavel certs init wrote for
// id: ROLE/ID.
func certName(id string) string {
	switch {
	case id == "client" || id == "admin":
		return id + "/" + id
	case strings.HasPrefix(id, "g"):
		return "gateway/" + id
	case strings.HasPrefix(id, "m"):
		return "master/" + id
	}
	return "node/" + id
}

// wantRefused checks that err is a gRPC refusal with code, saying why.
func wantRefused(t *testing.T, what string, err error, code codes.Code, why string) {
	t.Helper()
	if status.Code(err) != code || !strings.Contains(status.Convert(err).Message(), why) {
		t.Fatalf("%s: %v; want %v saying %q", what, err, code, why)
	}
}

// streamForgery sends msgs on a replication stream to node to, presenting
// as's certificate, and returns how the stream ended.
func (c *cluster) streamForgery(as, to string, msgs ...*api.ChainMessage) error {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := api.NewChainClient(c.dialAs(as, to)).Stream(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(&api.Envelope{Messages: msgs}); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

func TestIdentityForgeriesRefusedTLS(t *testing.T) {
	c := newSecureCluster(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// An auction and a bid through the gateway, as bidders place them.
	if r, err := c.auctions("n1").OpenAuction(ctx, &api.OpenAuctionRequest{Open: &api.OpenAuction{Auction: "a1",
		DurationMs: time.Hour.Milliseconds(), MinIncrement: 1, RequestId: "open-a1"}}); err != nil || r.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("open a1 with the admin certificate: %v %v", r, err)
	}
	alice := c.dialBidder(bidderToken(t, "alice", time.Hour))
	if out := bidVia(t, alice, "a1", 100); out != "success" {
		t.Fatalf("alice's bid through the gateway: %s", out)
	}
	before := c.settledState()
	cfg := c.config()
	epoch, tail := cfg.GetEpoch(), chainIDs(cfg)[2]
	t.Logf("before: %v, configuration %s", before.nodes, before.config)
	forgedBid := &api.Update{Seq: 1000, Epoch: epoch, Command: &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{
		Auction: "a1", Bidder: "mallory", Amount: 1 << 40, RequestId: "forged"}}}}

	t.Run("replication messages from a gateway's or a client's certificate", func(t *testing.T) {
		// A forged ack from the tail would make the head answer bids the
		// tail does not hold; a forged forward would inject updates; a
		// forged hello would open a link.
		for _, f := range []struct {
			as, to string
			msg    *api.ChainMessage
		}{
			{"g1", "n1", &api.ChainMessage{Epoch: epoch, From: tail, To: "n1", Body: &api.ChainMessage_Ack{Ack: &api.Ack{Seq: 1 << 40}}}},
			{"client", "n2", &api.ChainMessage{Epoch: epoch, From: "n1", To: "n2", Body: &api.ChainMessage_Forward{Forward: &api.Forward{
				Updates: []*api.Update{forgedBid}, PredApplied: 1000, PredCommitted: 1000}}}},
			{"client", "n1", &api.ChainMessage{Epoch: epoch, From: "n2", To: "n1", Body: &api.ChainMessage_Hello{Hello: &api.Hello{}}}},
			{"admin", "n2", &api.ChainMessage{Epoch: epoch, From: "n3", To: "n2", Body: &api.ChainMessage_Ack{Ack: &api.Ack{Seq: 1 << 40}}}},
		} {
			err := c.streamForgery(f.as, f.to, f.msg)
			wantRefused(t, f.as+" on "+f.to+"'s replication stream", err, codes.PermissionDenied, "only node certificates may call this")
			line := c.waitLogLine(f.to, `msg="call refused"`, "method=/gavel.v1.Chain/Stream", "peer="+certName(f.as))
			t.Logf("%s: %s", f.to, line)
		}
	})

	t.Run("a node's certificate speaks only for that node", func(t *testing.T) {
		// n3's certificate, with an ack that says it comes from n2.
		err := c.streamForgery("n3", "n1", &api.ChainMessage{Epoch: epoch, From: "n2", To: "n1",
			Body: &api.ChainMessage_Ack{Ack: &api.Ack{Seq: 1 << 40}}})
		wantRefused(t, "n3's certificate with n2's messages", err, codes.PermissionDenied, "a node speaks only for itself")
		t.Logf("n1: %s", c.waitLogLine("n1", `msg="call refused"`, "peer=node/n3", `a message from \"n2\"`))
	})

	t.Run("a heartbeat for another node", func(t *testing.T) {
		// With a new incarnation at n1's address, the master would take n1
		// for restarted and splice it out.
		leader := c.leader(15 * time.Second)
		var follower string
		for _, m := range c.masterIDs {
			if m != leader {
				follower = m
			}
		}
		hb := &api.HeartbeatRequest{Id: "n1", Addr: c.addrs["n1"], Incarnation: 424242, Epoch: epoch, Role: api.Role_HEAD}
		for _, f := range []struct{ as, to string }{{"n3", leader}, {"g1", leader}, {"n2", follower}} {
			_, err := api.NewMasterClient(c.dialAs(f.as, f.to)).Heartbeat(ctx, hb)
			wantRefused(t, f.as+"'s heartbeat for n1 at "+f.to, err, codes.PermissionDenied, "a node heartbeats only for itself")
			t.Logf("%s: %s", f.to, c.waitLogLine(f.to, `msg="call refused"`, "method=/gavel.v1.Master/Heartbeat", "peer="+certName(f.as),
				"node=n1", "incarnation=424242"))
		}
	})

	t.Run("a configuration change from a certificate that is not a master's or an admin's", func(t *testing.T) {
		change := &api.ChainConfig{Epoch: epoch + 1, Chain: []*api.Member{{Id: "n2", Addr: c.addrs["n2"]}}}
		for _, as := range []string{"g1", "client", "n3"} {
			_, err := api.NewAdminClient(c.dialAs(as, "n2")).SetConfig(ctx, change)
			wantRefused(t, "SetConfig from "+as, err, codes.PermissionDenied, "changing the chain configuration needs an admin certificate or an admin token")
			t.Logf("n2: %s", c.waitLogLine("n2", `msg="call refused"`, "method=/gavel.v1.Admin/SetConfig", "peer="+certName(as)))
		}
		// An admin passes the check; the master owns this chain's
		// configuration, so the node still refuses the change.
		_, err := api.NewAdminClient(c.dialAs("admin", "n2")).SetConfig(ctx, change)
		wantRefused(t, "SetConfig from the admin tools", err, codes.FailedPrecondition, "owned by the master")
	})

	t.Run("a bid for another bidder", func(t *testing.T) {
		bid := &api.BidRequest{Auction: "a1", Bidder: "alice", Amount: 1 << 40, RequestId: "not-alice"}
		nodes := api.NewAuctionsClient(c.dialAs("client", "n2"))
		_, err := nodes.Bid(ctx, bid)
		wantRefused(t, "a bid for alice without a token", err, codes.Unauthenticated, `a bid for "alice" needs alice's token`)
		mallory := metadata.AppendToOutgoingContext(ctx, auth.MetadataKey, "Bearer "+bidderToken(t, "mallory", time.Hour))
		_, err = nodes.Bid(mallory, bid)
		wantRefused(t, "a bid for alice with mallory's token", err, codes.PermissionDenied, "nobody bids under another name")
		t.Logf("n2: %s", c.waitLogLine("n2", `msg="call refused"`, "method=/gavel.v1.Auctions/Bid", "peer=client/client",
			`the token is mallory's, the bid is for \"alice\"`))
		// On a stream, the bid carries its token; a wrong one is answered
		// NOT_AUTHORIZED and the stream goes on.
		stream, err := nodes.BidStream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		streamed := &api.BidRequest{Auction: "a1", Bidder: "alice", Amount: 1 << 40, RequestId: "not-alice-2",
			Token: bidderToken(t, "mallory", time.Hour)}
		if err := stream.Send(streamed); err != nil {
			t.Fatal(err)
		}
		rep, err := stream.Recv()
		if err != nil || rep.Outcome != api.Outcome_EXCEPTION || rep.Reason != api.Reason_NOT_AUTHORIZED {
			t.Fatalf("a streamed bid for alice with mallory's token: %v %v", rep, err)
		}
		_ = stream.CloseSend()
	})

	t.Run("an expired token on an open connection", func(t *testing.T) {
		carol := c.dialBidder(bidderToken(t, "carol", 2*time.Second))
		if _, err := carol.call("help", "help", 5*time.Second); err != nil {
			t.Fatal(err)
		}
		select {
		case <-carol.done:
		case <-time.After(8 * time.Second):
			t.Fatal("carol's connection still open 8 s after her token was issued for 2 s")
		}
		carol.mu.Lock()
		err := carol.readErr
		carol.mu.Unlock()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.HasPrefix(ce.Text, "token expired at ") {
			t.Fatalf("carol's connection ended with %v, want close 1008 \"token expired at ...\"", err)
		}
		t.Logf("close frame: %d %q", ce.Code, ce.Text)
		t.Logf("g1: %s", c.waitLogLine("g1", `msg="connection closed: token expired"`, "bidder=carol"))
	})

	// Nothing changed: the same updates at every node, the same
	// configuration; the auction as alice left it.
	after := c.settledState()
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("the chain changed:\nbefore %v\nafter  %v", before, after)
	}
	res, err := c.auctions(tail).Result(ctx, &api.ResultRequest{Auction: "a1"})
	if err != nil || res.Info.GetHighest() != 100 || res.Info.GetBidder() != "alice" {
		t.Errorf("a1 after the forgeries: %v %v", res, err)
	}
	// The tools work as they should: gavel status over TLS with the admin
	// certificate, gavel bid with a token signed with auth.secret.
	run := func(args ...string) string {
		cmd := exec.Command(gavelBin, append(args, "--config", c.cfgPath)...)
		cmd.Dir = c.dir
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("gavel %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	status := run("status")
	if !strings.Contains(status, fmt.Sprintf("chain epoch %d", epoch)) {
		t.Errorf("gavel status:\n%s", status)
	}
	t.Logf("gavel status after the forgeries:\n%s", status)
	if out := run("bid", "--auction", "a1", "--bidder", "bob", "200"); !strings.Contains(out, "success: bob leads a1 with 200") {
		t.Errorf("gavel bid: %s", out)
	}
}

// TestPlaintextClusterRefusesToStart: the same cluster without TLS and
// without insecure: true. Every master, node and gateway exits at once,
// naming the key and the file; nothing listens, so none of the forgeries
// above has anything to reach.
func TestPlaintextClusterRefusesToStart(t *testing.T) {
	c := newEmptyCluster(t)
	var b strings.Builder
	b.WriteString(c.masterClusterYAML(3))
	gw := freePort(t)
	fmt.Fprintf(&b, "gateways:\n  - id: g1\n    addr: %s\nauth:\n  secret: %s\n", gw, identitySecret)
	c.cfgPath = filepath.Join(c.dir, "config.yaml")
	if err := os.WriteFile(c.cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	c.gatewayIDs = []string{"g1"}
	c.addrs["g1"] = gw
	t.Cleanup(c.shutdown)
	for _, id := range append(append(slices.Clone(c.masterIDs), c.ids...), "g1") {
		p := c.start(id)
		select {
		case <-p.exited:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s still runs 10 s after its start", id)
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 3 {
			t.Errorf("%s exited %d, want 3", id, code)
		}
		line := c.waitLogLine(id, c.cfgPath+": insecure: tls.ca is not set")
		if !strings.Contains(line, "set insecure: true") {
			t.Errorf("%s: %s", id, line)
		}
	}
	t.Logf("n1: %s", tail(filepath.Join(c.dir, "n1.log"), 1))
	// The forgeries find nobody to talk to.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(c.addrs["m1"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = api.NewMasterClient(conn).Heartbeat(ctx, &api.HeartbeatRequest{Id: "n1", Addr: c.addrs["n1"], Incarnation: 1})
	if status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("a heartbeat to m1: %v, want no master there", err)
	}
	for _, d := range []string{"data", ".run"} {
		if _, err := os.Stat(filepath.Join(c.dir, d)); err == nil {
			t.Errorf("a refused process made %s in its directory", d)
		}
	}
}
