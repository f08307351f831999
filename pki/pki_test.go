package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const day = 24 * time.Hour

// files is a CA and one process's certificate written to a directory.
type files struct {
	ca, cert, key string
}

// writeIdentity issues a certificate for id from ca and writes it, with
// ca's certificate, to dir.
func writeIdentity(t *testing.T, dir string, ca *CA, id string, hosts ...string) files {
	t.Helper()
	kp, err := ca.Issue(testPeer(id), hosts, day)
	if err != nil {
		t.Fatal(err)
	}
	f := files{ca: filepath.Join(dir, "ca.crt"), cert: filepath.Join(dir, id+".crt"), key: filepath.Join(dir, id+".key")}
	if err := os.WriteFile(f.ca, ca.PEM().CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := WriteKeyPair(f.cert, f.key, kp, false); err != nil {
		t.Fatal(err)
	}
	return f
}

// testPeer is the identity of a test certificate for id: a master for
// m..., a node for n..., a gateway for g..., else a client.
func testPeer(id string) Peer {
	switch id[0] {
	case 'm':
		return Peer{RoleMaster, id}
	case 'n':
		return Peer{RoleNode, id}
	case 'g':
		return Peer{RoleGateway, id}
	}
	return Peer{RoleClient, id}
}

// issue makes who's certificate with ca and parses it into an Identity.
func issue(t *testing.T, ca *CA, who Peer, hosts []string, validFor time.Duration) *Identity {
	t.Helper()
	kp, err := ca.Issue(who, hosts, validFor)
	if err != nil {
		t.Fatal(err)
	}
	id, err := Parse(ca.PEM().CertPEM, kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func newCA(t *testing.T, name string) *CA {
	t.Helper()
	ca, err := NewCA(name, CAValidity)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func load(t *testing.T, f files) *Identity {
	t.Helper()
	id, err := Load(f.ca, f.cert, f.key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestNewCA(t *testing.T) {
	ca := newCA(t, "gavel CA test")
	c := ca.Cert
	if !c.IsCA || !c.BasicConstraintsValid || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate: IsCA %v, basic constraints %v, key usage %v", c.IsCA, c.BasicConstraintsValid, c.KeyUsage)
	}
	if c.Subject.CommonName != "gavel CA test" || c.Issuer.CommonName != c.Subject.CommonName {
		t.Errorf("CA subject %q issuer %q, want self-signed gavel CA test", c.Subject, c.Issuer)
	}
	if years := time.Until(c.NotAfter).Hours() / 24 / 365; years < 9.9 {
		t.Errorf("CA valid for %.1f years, want about 10", years)
	}
	if err := c.CheckSignatureFrom(c); err != nil {
		t.Errorf("CA is not self-signed: %v", err)
	}
	if _, err := Parse(ca.PEM().CertPEM, ca.PEM().CertPEM, ca.PEM().KeyPEM); err != nil {
		t.Errorf("the CA's own PEM pair does not parse: %v", err)
	}
}

func TestIssueNamesAndUsages(t *testing.T) {
	ca := newCA(t, "gavel CA")
	hosts := Hosts("10.0.0.7:7101", "0.0.0.0:7101", "node1.example.com:7111", "10.0.0.7:7301", "[fd00::1]:7101", "")
	if want := []string{"10.0.0.7", "node1.example.com", "fd00::1"}; !slices.Equal(hosts, want) {
		t.Fatalf("Hosts = %q, want %q (unspecified and duplicate hosts left out)", hosts, want)
	}
	id := issue(t, ca, testPeer("n1"), hosts, 30*day)
	c := id.Certificate()
	if c.Subject.CommonName != "n1" || c.IsCA {
		t.Errorf("leaf: CN %q, IsCA %v", c.Subject.CommonName, c.IsCA)
	}
	if !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageServerAuth) || !slices.Contains(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) {
		t.Errorf("leaf usages %v: want server and client auth", c.ExtKeyUsage)
	}
	var ips []string
	for _, ip := range c.IPAddresses {
		ips = append(ips, ip.String())
	}
	if want := []string{"10.0.0.7", "fd00::1", "127.0.0.1", "::1"}; !slices.Equal(ips, want) {
		t.Errorf("IP SANs %q, want %q", ips, want)
	}
	if want := []string{"node1.example.com", "localhost"}; !slices.Equal(c.DNSNames, want) {
		t.Errorf("DNS SANs %q, want %q", c.DNSNames, want)
	}
	for _, h := range []string{"10.0.0.7", "node1.example.com", "localhost", "127.0.0.1", "::1"} {
		if err := c.VerifyHostname(h); err != nil {
			t.Errorf("certificate does not cover %s: %v", h, err)
		}
	}
	if err := c.VerifyHostname("10.0.0.8"); err == nil {
		t.Error("certificate covers a host it was not issued for")
	}
	if d := time.Until(c.NotAfter); d < 29*day || d > 31*day {
		t.Errorf("leaf valid for %v, want 30 days", d)
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: id.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("leaf does not verify under its CA: %v", err)
	}
}

func TestWriteKeyPair(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "gavel CA")
	kp, err := ca.Issue(testPeer("m1"), nil, day)
	if err != nil {
		t.Fatal(err)
	}
	crt, key := filepath.Join(dir, "sub", "m1.crt"), filepath.Join(dir, "sub", "m1.key")
	if err := WriteKeyPair(crt, key, kp, false); err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]fs.FileMode{crt: 0o644, key: 0o600} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s: mode %v, want %v", path, st.Mode().Perm(), mode)
		}
	}
	err = WriteKeyPair(crt, key, kp, false)
	if !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), crt) {
		t.Errorf("writing over %s without overwrite: %v, want ErrExists naming the file", crt, err)
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	kp2, _ := ca.Issue(testPeer("m1"), nil, day)
	reader, err := os.Open(key) // a process reading the old key meanwhile
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	if err := WriteKeyPair(crt, key, kp2, true); err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(reader); !bytes.Equal(b, kp.KeyPEM) {
		t.Error("overwrite changed the key file under a reader: it was not replaced whole")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "sub", ".*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	if b, _ := os.ReadFile(key); !bytes.Equal(b, kp2.KeyPEM) {
		t.Error("overwrite kept the old key")
	}
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Errorf("overwritten key: mode %v, want 0600", st.Mode().Perm())
	}
}

// Every load error names the file it is about and wraps its sentinel.
func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "gavel CA")
	f := writeIdentity(t, dir, ca, "n1")
	other := writeIdentity(t, t.TempDir(), ca, "n2")
	foreign := writeIdentity(t, t.TempDir(), newCA(t, "foreign CA"), "n1")
	garbage := filepath.Join(dir, "garbage")
	if err := os.WriteFile(garbage, []byte("hello\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.crt")
	for _, tc := range []struct {
		name           string
		ca, cert, key  string
		want           error
		mention, quote string
	}{
		{"missing CA", missing, f.cert, f.key, fs.ErrNotExist, missing, "CA certificate"},
		{"missing cert", f.ca, missing, f.key, fs.ErrNotExist, missing, "certificate"},
		{"missing key", f.ca, f.cert, missing, fs.ErrNotExist, missing, "private key"},
		{"CA not PEM", garbage, f.cert, f.key, ErrNotPEM, garbage, "BEGIN CERTIFICATE"},
		{"cert not PEM", f.ca, garbage, f.key, ErrNotPEM, garbage, "BEGIN CERTIFICATE"},
		{"key not PEM", f.ca, f.cert, garbage, ErrNotPEM, garbage, "BEGIN PRIVATE KEY"},
		{"key is a certificate", f.ca, f.cert, f.cert, ErrNotPEM, f.cert, "private key"},
		{"key of another cert", f.ca, f.cert, other.key, ErrKeyMismatch, other.key, f.cert},
		{"cert of a foreign CA", f.ca, foreign.cert, foreign.key, ErrUntrusted, foreign.cert, "signed by unknown authority"},
	} {
		_, err := Load(tc.ca, tc.cert, tc.key)
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.mention) || !strings.Contains(err.Error(), tc.quote) {
			t.Errorf("%s: %v\nwant %v, naming %s and saying %q", tc.name, err, tc.want, tc.mention, tc.quote)
		}
	}
	if _, err := LoadPool(garbage); !errors.Is(err, ErrNotPEM) {
		t.Errorf("LoadPool(garbage): %v", err)
	}
}

// logBuffer is a slog text handler's output, safe for concurrent use.
type logBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// handshake runs a TLS server with srv's ServerCredentials on loopback
// and dials it with conf; it returns the server's log and the client's
// error.
func handshake(t *testing.T, srv *Identity, conf *tls.Config, plain bool) (string, error) {
	t.Helper()
	var logs logBuffer
	creds := srv.ServerCredentials(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		conn, _, err := creds.ServerHandshake(c)
		if err == nil {
			_, err = conn.Write([]byte("ok"))
		}
		done <- err
	}()
	raw, err := net.DialTimeout("tcp", lis.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(5 * time.Second))
	var cerr error
	if plain {
		_, cerr = raw.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"))
		buf := make([]byte, 16)
		_, _ = raw.Read(buf)
	} else {
		tc := tls.Client(raw, conf)
		if cerr = tc.Handshake(); cerr == nil {
			// With TLS 1.3 the server checks the client's certificate
			// after the client's handshake has returned: read to see.
			buf := make([]byte, 2)
			_, cerr = tc.Read(buf)
		}
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("server handshake did not end")
	}
	return logs.String(), cerr
}

// withServerName sets what grpc-go's client credentials set: the server's
// address and the h2 protocol.
func withServerName(c *tls.Config) *tls.Config {
	c.ServerName, c.NextProtos = "127.0.0.1", []string{"h2"}
	return c
}

func TestHandshakes(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "gavel CA")
	server := load(t, writeIdentity(t, dir, ca, "m1"))
	client := load(t, writeIdentity(t, dir, ca, "client"))
	foreignCA := newCA(t, "foreign CA")
	fkp, err := foreignCA.Issue(testPeer("n9"), nil, day)
	if err != nil {
		t.Fatal(err)
	}
	// A certificate of another CA, from a process that trusts this one.
	misissued, err := Parse(ca.PEM().CertPEM, fkp.CertPEM, fkp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("mutual", func(t *testing.T) {
		if logs, err := handshake(t, server, withServerName(client.ClientConfig()), false); err != nil || logs != "" {
			t.Fatalf("handshake: %v; server log: %s", err, logs)
		}
		if logs, err := handshake(t, server, withServerName(client.PeerConfig()), false); err != nil || logs != "" {
			t.Fatalf("handshake with PeerConfig: %v; server log: %s", err, logs)
		}
	})
	for _, tc := range []struct {
		name   string
		conf   *tls.Config
		plain  bool
		reason string
		err    string
	}{
		{"foreign CA", withServerName(misissued.ClientConfig()), false,
			"the peer's certificate is not signed by this cluster's CA", "certificate signed by unknown authority"},
		{"no client certificate", withServerName(&tls.Config{RootCAs: client.Pool()}), false,
			"the peer presented no certificate", "client didn't provide a certificate"},
		{"plaintext", nil, true, "the peer does not speak TLS", "does not look like a TLS handshake"},
		{"client refuses the server", withServerName(&tls.Config{RootCAs: misissued.Pool(),
			VerifyPeerCertificate: func([][]byte, [][]*x509.Certificate) error { return errors.New("no") }}), false,
			"the peer refused this process's certificate", "remote error"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			logs, err := handshake(t, server, tc.conf, tc.plain)
			if !tc.plain && err == nil {
				t.Error("the client got through")
			}
			for _, want := range []string{"level=WARN", `msg="` + RefusedMsg + `"`, "remote=127.0.0.1:", tc.reason, tc.err} {
				if !strings.Contains(logs, want) {
					t.Errorf("server log lacks %q:\n%s", want, logs)
				}
			}
		})
	}
	t.Run("foreign CA names the certificate", func(t *testing.T) {
		logs, _ := handshake(t, server, withServerName(misissued.ClientConfig()), false)
		if !strings.Contains(logs, "peer_cert=n9") || !strings.Contains(logs, `peer_issuer="foreign CA"`) {
			t.Errorf("refusal does not name the presented certificate:\n%s", logs)
		}
	})
	t.Run("the client does not trust a foreign server", func(t *testing.T) {
		foreignServer, err := Parse(foreignCA.PEM().CertPEM, fkp.CertPEM, fkp.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		_, cerr := handshake(t, foreignServer, withServerName(client.ClientConfig()), false)
		var unknown x509.UnknownAuthorityError
		if !errors.As(cerr, &unknown) {
			t.Errorf("client handshake with a foreign server: %v, want unknown authority", cerr)
		}
	})
	t.Run("a port probe is not a warning", func(t *testing.T) {
		var logs logBuffer
		creds := server.ServerCredentials(slog.New(slog.NewTextHandler(&logs, nil)))
		a, b := net.Pipe()
		b.Close()
		if _, _, err := creds.ServerHandshake(a); err == nil {
			t.Fatal("handshake on a closed pipe succeeded")
		}
		if logs.String() != "" {
			t.Errorf("probe logged at info or above: %s", logs.String())
		}
	})
}

func TestHTTPSConfigAsksNoCertificate(t *testing.T) {
	ca := newCA(t, "gavel CA")
	id := load(t, writeIdentity(t, t.TempDir(), ca, "g1"))
	if c := id.HTTPSConfig(); c.ClientAuth != tls.NoClientCert || c.MinVersion < tls.VersionTLS12 || len(c.Certificates) != 1 {
		t.Errorf("HTTPSConfig: client auth %v, min version %x, %d certificates", c.ClientAuth, c.MinVersion, len(c.Certificates))
	}
	if c := id.ServerConfig(); c.ClientAuth != tls.RequireAndVerifyClientCert || c.ClientCAs == nil {
		t.Errorf("ServerConfig: client auth %v", c.ClientAuth)
	}
}

// A CA file may hold several CAs (during a change of CA): certificates of
// either verify.
func TestCABundle(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := newCA(t, "old CA"), newCA(t, "new CA")
	f := writeIdentity(t, dir, oldCA, "n1")
	bundle := append(slices.Clone(oldCA.PEM().CertPEM), newCA.PEM().CertPEM...)
	if err := os.WriteFile(f.ca, bundle, 0o644); err != nil {
		t.Fatal(err)
	}
	id := load(t, f)
	kp, _ := newCA.Issue(testPeer("n2"), nil, day)
	n2, err := Parse(bundle, kp.CertPEM, kp.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if logs, err := handshake(t, id, withServerName(n2.ClientConfig()), false); err != nil {
		t.Fatalf("old-CA server, new-CA client: %v\n%s", err, logs)
	}
}
