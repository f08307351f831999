package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gavel-auction/gavel/chain"
	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/gateway"
	"github.com/gavel-auction/gavel/master"
	"github.com/gavel-auction/gavel/pki"
)

// tlsConfigYAML is a configuration of one master, two nodes and a gateway
// on the given listeners, with TLS on and every file under dir.
func tlsConfigYAML(dir string, m, raft, n1, n2, g net.Listener) string {
	return fmt.Sprintf(`masters:
  - {id: m1, addr: "%s", raft_addr: "%s", data_dir: "%s"}
nodes:
  - {id: n1, addr: "%s"}
  - {id: n2, addr: "%s"}
gateways:
  - {id: g1, addr: "%s"}
chain: {tick: 5ms, hello_retry: 20ms}
client: {timeout: 10s}
tls:
  ca: %s
  cert: %s
  key: %s
`, m.Addr(), raft.Addr(), filepath.Join(dir, "m1"), n1.Addr(), n2.Addr(), g.Addr(),
		filepath.Join(dir, "certs", "ca.crt"), filepath.Join(dir, "certs", "{id}.crt"), filepath.Join(dir, "certs", "{id}.key"))
}

func TestCertsInitErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config.yaml")
	noID := filepath.Join(dir, "noid.yaml")
	clientNode := filepath.Join(dir, "client.yaml")
	for path, body := range map[string]string{
		cfg:        "nodes:\n  - {id: n1, addr: \"127.0.0.1:1\"}\ntls:\n  cert: " + dir + "/c/{id}.crt\n  key: " + dir + "/c/{id}.key\n",
		noID:       "nodes:\n  - {id: n1, addr: \"127.0.0.1:1\"}\ntls:\n  ca: x.crt\n  cert: one.crt\n",
		clientNode: "nodes:\n  - {id: client, addr: \"127.0.0.1:1\"}\n",
	} {
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		args   []string
		code   int
		stderr string
	}{
		{[]string{"certs", "--config", cfg}, exitUsage, "missing subcommand: want init"},
		{[]string{"certs", "add", "--config", cfg}, exitUsage, `unknown subcommand "add": want init`},
		{[]string{"certs", "init", "--config", cfg, "--days", "0"}, exitUsage, "--days must be positive"},
		{[]string{"certs", "init", "--config", noID}, exitUsage, `tls.cert is "one.crt": it needs {id}`},
		{[]string{"certs", "init", "--config", clientNode}, exitUsage, `a process is called "client"`},
	} {
		code, _, errb := runCLI(t, tc.args...)
		if code != tc.code || !strings.Contains(errb, tc.stderr) {
			t.Errorf("gavel %v: exit %d, stderr %q; want %d and %q", tc.args, code, errb, tc.code, tc.stderr)
		}
	}
	// tls.ca unset: the CA goes to certs/ca.crt of the current directory.
	t.Chdir(dir)
	code, out, errb := runCLI(t, "certs", "init", "--config", cfg, "--days", "30")
	if code != exitOK || !strings.Contains(out, "tls.ca is not set in "+cfg+": set it to certs/ca.crt") {
		t.Fatalf("certs init without tls.ca: exit %d\n%s%s", code, out, errb)
	}
	if _, err := pki.Load("certs/ca.crt", filepath.Join(dir, "c", "n1.crt"), filepath.Join(dir, "c", "n1.key")); err != nil {
		t.Errorf("n1's certificate does not load: %v", err)
	}
	if st, err := os.Stat("certs/ca.key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("CA key: %v %v", st, err)
	}
}

// certs init on a configuration, then a master, two nodes and a gateway
// built from it as their commands build them, each on a listener the test
// holds: the tools and the gateway reach the cluster over mutual TLS, a
// WebSocket client that trusts the CA talks wss to the gateway, and tools
// without their certificate get a clear error.
func TestCertsInitAndTLSCluster(t *testing.T) {
	dir := t.TempDir()
	mLis, raftLis, n1Lis, n2Lis, gLis := listenT(t), listenT(t), listenT(t), listenT(t), listenT(t)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfgPath, []byte(tlsConfigYAML(dir, mLis, raftLis, n1Lis, n2Lis, gLis)), 0o644); err != nil {
		t.Fatal(err)
	}

	code, out, errb := runCLI(t, "certs", "init", "--config", cfgPath)
	if code != exitOK {
		t.Fatalf("certs init: exit %d\n%s%s", code, out, errb)
	}
	for _, id := range []string{"ca", "m1", "n1", "n2", "g1", "client", "admin"} {
		if !strings.Contains(out, filepath.Join(dir, "certs", id+".crt")+" and "+filepath.Join(dir, "certs", id+".key")) {
			t.Errorf("certs init does not say it wrote %s's files:\n%s", id, out)
		}
		st, err := os.Stat(filepath.Join(dir, "certs", id+".key"))
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s.key: %v %v", id, st, err)
		}
	}
	// Each certificate names its holder's role and id.
	for id, role := range map[string]pki.Role{"m1": pki.RoleMaster, "n1": pki.RoleNode, "n2": pki.RoleNode,
		"g1": pki.RoleGateway, "client": pki.RoleClient, "admin": pki.RoleAdmin} {
		ident, err := pki.Load(filepath.Join(dir, "certs", "ca.crt"), filepath.Join(dir, "certs", id+".crt"), filepath.Join(dir, "certs", id+".key"))
		if err != nil {
			t.Fatal(err)
		}
		if p, err := ident.Peer(); err != nil || p != (pki.Peer{Role: role, ID: id}) {
			t.Errorf("%s.crt names %v (%v), want %s/%s", id, p, err, role, id)
		}
		if want := fmt.Sprintf("%s %s, for", role, id); !strings.Contains(out, want) {
			t.Errorf("certs init does not say %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "tls.ca is not set") {
		t.Errorf("certs init asks for tls.ca, which is set:\n%s", out)
	}
	code, _, errb = runCLI(t, "certs", "init", "--config", cfgPath)
	if code != exitException || !strings.Contains(errb, "refusing to overwrite "+filepath.Join(dir, "certs", "ca.crt")) ||
		!strings.Contains(errb, "--force") {
		t.Errorf("second certs init: exit %d, stderr %q", code, errb)
	}
	caBefore, _ := os.ReadFile(filepath.Join(dir, "certs", "ca.crt"))
	if code, out, errb := runCLI(t, "certs", "init", "--config", cfgPath, "--force", "--days", "2"); code != exitOK {
		t.Fatalf("certs init --force: exit %d\n%s%s", code, out, errb)
	}
	if caAfter, _ := os.ReadFile(filepath.Join(dir, "certs", "ca.crt")); string(caAfter) == string(caBefore) {
		t.Error("certs init --force kept the old CA")
	}

	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	mopts, err := masterOptions(cfg, "m1")
	if err != nil {
		t.Fatal(err)
	}
	if mopts.TLS == nil || mopts.TLS.Certificate().Subject.CommonName != "m1" {
		t.Fatalf("master options without m1's certificate: %+v", mopts.TLS)
	}
	var startLog bytes.Buffer
	logTLS(cfg.NewLogger(&startLog), cfg, "m1", mopts.TLS)
	for _, want := range []string{`msg="TLS on`, "subject=m1", "cert=" + filepath.Join(dir, "certs", "m1.crt"),
		`level=WARN msg="certificate expires soon`} {
		if !strings.Contains(startLog.String(), want) {
			t.Errorf("start log of a 2-day certificate lacks %q:\n%s", want, startLog.String())
		}
	}
	mopts.RaftListener = raftLis
	mopts.Heartbeat, mopts.FailureTimeout, mopts.Lease = 50*time.Millisecond, 500*time.Millisecond, 200*time.Millisecond
	mopts.Raft = master.RaftTiming{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
		LeaderLeaseTimeout: 250 * time.Millisecond, CommitTimeout: 5 * time.Millisecond}
	logs := &syncWriter{w: &bytes.Buffer{}}
	mopts.Logger = cfg.NewLogger(logs)
	m, err := master.New(mopts)
	if err != nil {
		t.Fatal(err)
	}
	m.Start(mLis)
	t.Cleanup(m.Stop)
	for id, l := range map[string]net.Listener{"n1": n1Lis, "n2": n2Lis} {
		opts, err := nodeOptions(cfg, id, false)
		if err != nil {
			t.Fatal(err)
		}
		if opts.TLS == nil || opts.TLS.Certificate().Subject.CommonName != id {
			t.Fatalf("node options of %s without its certificate", id)
		}
		opts.Logger = cfg.NewLogger(logs)
		opts.DataDir = filepath.Join(t.TempDir(), id)
		node, err := chain.NewNode(opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := node.Start(l); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(node.Stop)
	}
	gopts, addr, err := gatewayOptions(cfg, "g1")
	if err != nil {
		t.Fatal(err)
	}
	if addr != gLis.Addr().String() || gopts.TLS == nil {
		t.Fatalf("gateway options: addr %s, TLS %v", addr, gopts.TLS)
	}
	gopts.Logger = cfg.NewLogger(logs)
	g, err := gateway.New(gopts)
	if err != nil {
		t.Fatal(err)
	}
	g.Start(gLis)
	t.Cleanup(g.Stop)

	// The tools: status through the master, then an auction and a bid.
	twoNodes := regexp.MustCompile(`"chain":\["n[12]","n[12]"\],"joining":\[\]`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, out, _ := runCLI(t, "status", "--config", cfgPath, "--json")
		if code == exitOK && strings.Contains(out, `"state":"leader"`) && twoNodes.MatchString(out) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the cluster did not come up over TLS: %s\n%s", out, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, out, _ := runCLI(t, "status", "--config", cfgPath, "--json"); !strings.Contains(out, `"data_dir":`) {
		t.Errorf("status with the admin certificate shows no data dir: %s", out)
	}
	// A machine with the client certificate only: status works, without
	// the data dirs; opening an auction is refused (no admin, no tokens).
	adminCrt := filepath.Join(dir, "certs", "admin.crt")
	if err := os.Rename(adminCrt, adminCrt+".away"); err != nil {
		t.Fatal(err)
	}
	if code, out, errb := runCLI(t, "status", "--config", cfgPath, "--json"); code != exitOK || strings.Contains(out, `"data_dir":`) {
		t.Errorf("status with the client certificate: exit %d, %s%s", code, out, errb)
	}
	if code, out, errb := runCLI(t, "reconfigure", "--chain", "n1", "--config", cfgPath); code != exitException ||
		!strings.Contains(out, "changing the chain configuration needs an admin certificate") {
		t.Errorf("reconfigure with the client certificate: exit %d, %s%s", code, out, errb)
	}
	if err := os.Rename(adminCrt+".away", adminCrt); err != nil {
		t.Fatal(err)
	}
	expect(t, exitOK, nil, "open", "a1", "--duration", "1m", "--config", cfgPath)
	expect(t, exitOK, []string{"success: alice leads a1 with 5"}, "bid", "--auction", "a1", "--bidder", "alice", "5", "--config", cfgPath)

	// The gateway: https and wss for a client that trusts the CA.
	pool, err := pki.LoadPool(cfg.TLS.CA)
	if err != nil {
		t.Fatal(err)
	}
	httpc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	defer httpc.CloseIdleConnections()
	resp, err := httpc.Get("https://" + addr + "/healthz")
	if err != nil {
		t.Fatalf("https /healthz: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"gateway":"g1"`) {
		t.Errorf("https /healthz: %d %s", resp.StatusCode, body)
	}
	dialer := websocket.Dialer{TLSClientConfig: &tls.Config{RootCAs: pool}, HandshakeTimeout: 5 * time.Second}
	ws, _, err := dialer.Dial("wss://"+addr+"/ws?bidder=bob", nil)
	if err != nil {
		t.Fatalf("wss dial: %v", err)
	}
	defer ws.Close()
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, line := range []string{"help", "bid a1 7"} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(line)); err != nil {
			t.Fatal(err)
		}
		_, reply, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("wss %s: %v", line, err)
		}
		want := map[string]string{"help": `"type":"help"`, "bid a1 7": `"outcome":"success"`}[line]
		if !strings.Contains(string(reply), want) {
			t.Errorf("wss %s: %s, want %s", line, reply, want)
		}
	}
	// Plain ws and a client that does not trust the CA get nowhere.
	if c, _, err := (&websocket.Dialer{HandshakeTimeout: 2 * time.Second}).Dial("ws://"+addr+"/ws", nil); err == nil {
		c.Close()
		t.Error("plain ws accepted by a TLS gateway")
	}
	if c, _, err := (&websocket.Dialer{HandshakeTimeout: 2 * time.Second}).Dial("wss://"+addr+"/ws", nil); err == nil ||
		!strings.Contains(err.Error(), "certificate signed by unknown authority") {
		if c != nil {
			c.Close()
		}
		t.Errorf("wss without the CA: %v, want unknown authority", err)
	}

	// Tools whose certificate is missing: a configuration error naming
	// the file, and the way to make it.
	other := strings.ReplaceAll(tlsConfigYAML(dir, mLis, raftLis, n1Lis, n2Lis, gLis), filepath.Join(dir, "certs", "{id}"),
		filepath.Join(dir, "elsewhere", "{id}"))
	otherPath := filepath.Join(dir, "other.yaml")
	if err := os.WriteFile(otherPath, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errb = runCLI(t, "bid", "--auction", "a1", "--bidder", "carol", "9", "--config", otherPath)
	if code != exitUsage || !strings.Contains(errb, filepath.Join(dir, "elsewhere", "client.crt")) ||
		!strings.Contains(errb, "no such file") || !strings.Contains(errb, "gavel certs init") {
		t.Errorf("bid without the client certificate: exit %d, stderr %q", code, errb)
	}

	// A process whose certificate names someone else (here n2's files as
	// n1's) refuses to start, saying so.
	swapped := filepath.Join(dir, "swapped")
	if err := os.MkdirAll(swapped, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{".crt", ".key"} {
		b, _ := os.ReadFile(filepath.Join(dir, "certs", "n2"+ext))
		if err := os.WriteFile(filepath.Join(swapped, "n1"+ext), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfg.TLS.Cert, cfg.TLS.Key = filepath.Join(swapped, "{id}.crt"), filepath.Join(swapped, "{id}.key")
	if _, err := nodeOptions(cfg, "n1", false); err == nil || !strings.Contains(err.Error(), "names node/n2, not node/n1") {
		t.Errorf("n1 with n2's certificate: %v", err)
	}
	if _, err := processTLS(cfg, pki.RoleGateway, "n1"); err == nil || !strings.Contains(err.Error(), "not gateway/n1") {
		t.Errorf("a node's certificate as a gateway's: %v", err)
	}
}

// listenT opens a loopback listener the test holds until a server takes
// it, closed at the end of the test in any case.
func listenT(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
