package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/gavel-auction/gavel/api"
)

// The multi-host tests run `scripts/launch` for real: a config.yaml names
// three test hosts (network namespaces with their own addresses and sshd,
// netns_test.go), the launcher copies the binary and the configuration to
// each over ssh and starts the masters, nodes and gateway there. They
// check what an operator relies on: bids through the gateway, a SIGKILLed
// head spliced out, the restarted node back at the tail, mutual TLS that
// refuses a foreign certificate, a rolling restart of every process under
// load, and nothing left running after `scripts/launch down`.

// launchCluster is a cluster that scripts/launch runs on test hosts.
type launchCluster struct {
	*cluster
	h       *testHosts
	tls     bool
	certDir string
	gateway string // g1's host:port
	// placement maps each process id to its host.
	placement map[string]string
}

// Ports of every process on its host; each host has its own address, so
// processes of the same kind use the same port everywhere.
const (
	nsNodePort    = 7101
	nsNodeHTTP    = 7111
	nsMasterPort  = 7201
	nsRaftPort    = 7301
	nsMasterHTTP  = 7211
	nsGatewayPort = 7401
)

// newLaunchCluster writes a config.yaml that puts master mI and node nI on
// host hI (I = 1..3) and gateway g1 on h3, with TLS when tlsOn (`gavel
// certs init` makes the CA and certificates first), and runs
// `scripts/launch up`. `scripts/launch down` runs when the test ends,
// before the hosts are removed.
func newLaunchCluster(t *testing.T, h *testHosts, tlsOn bool) *launchCluster {
	t.Helper()
	lc := writeLaunchCluster(t, h, tlsOn)
	out, err := lc.launch(3*time.Minute, "up")
	if err != nil {
		lc.showLogs()
		t.Fatalf("scripts/launch up: %v\n%s", err, out)
	}
	t.Logf("scripts/launch up:\n%s", out)
	return lc
}

// writeLaunchCluster is newLaunchCluster without the up. Without tlsOn the
// configuration says insecure: true.
func writeLaunchCluster(t *testing.T, h *testHosts, tlsOn bool) *launchCluster {
	t.Helper()
	lc := &launchCluster{h: h, tls: tlsOn, placement: map[string]string{},
		cluster: &cluster{t: t, dir: h.dir, addrs: map[string]string{}, httpAddrs: map[string]string{},
			procs: map[string]*proc{}, conns: map[string]*grpc.ClientConn{}, external: true}}
	var b strings.Builder
	b.WriteString("cluster:\n  name: netns\nhosts:\n")
	for _, host := range h.hosts {
		fmt.Fprintf(&b, "  - name: %s\n    ssh: %s\n    user: root\n    key: %s\n    known_hosts: %s\n    dir: %s\n",
			host.name, host.ip, h.key, h.knownHosts, host.dir)
	}
	b.WriteString("masters:\n")
	for i, host := range h.hosts {
		id := fmt.Sprintf("m%d", i+1)
		lc.masterIDs = append(lc.masterIDs, id)
		lc.placement[id] = host.name
		lc.addrs[id] = h.addr(host.name, nsMasterPort)
		lc.httpAddrs[id] = h.addr(host.name, nsMasterHTTP)
		fmt.Fprintf(&b, "  - id: %s\n    host: %s\n    addr: %s\n    raft_addr: %s\n    http_addr: %s\n    data_dir: data/%s\n",
			id, host.name, lc.addrs[id], h.addr(host.name, nsRaftPort), lc.httpAddrs[id], id)
	}
	b.WriteString("nodes:\n")
	for i, host := range h.hosts {
		id := fmt.Sprintf("n%d", i+1)
		lc.ids = append(lc.ids, id)
		lc.placement[id] = host.name
		lc.addrs[id] = h.addr(host.name, nsNodePort)
		lc.httpAddrs[id] = h.addr(host.name, nsNodeHTTP)
		fmt.Fprintf(&b, "  - id: %s\n    host: %s\n    addr: %s\n    http_addr: %s\n", id, host.name, lc.addrs[id], lc.httpAddrs[id])
	}
	last := h.hosts[len(h.hosts)-1]
	lc.gateway = h.addr(last.name, nsGatewayPort)
	lc.gatewayIDs = []string{"g1"}
	lc.placement["g1"] = last.name
	lc.addrs["g1"] = lc.gateway
	fmt.Fprintf(&b, "gateways:\n  - id: g1\n    host: %s\n    addr: %s\n", last.name, lc.gateway)
	fmt.Fprintf(&b, "master:\n  heartbeat: 50ms\n  failure_timeout: %v\n  lease: %v\n", failureTimeout, leaseDuration)
	b.WriteString("chain:\n  tick: 5ms\n  hello_retry: 20ms\nlog:\n  level: debug\n")
	if tlsOn {
		lc.certDir = filepath.Join(h.dir, "certs")
		fmt.Fprintf(&b, "tls:\n  ca: %[1]s/ca.crt\n  cert: %[1]s/{id}.crt\n  key: %[1]s/{id}.key\n", lc.certDir)
	} else {
		b.WriteString("insecure: true\n")
	}
	lc.cfgPath = filepath.Join(h.dir, "config.yaml")
	if err := os.WriteFile(lc.cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if tlsOn {
		out, err := exec.Command(gavelBin, "certs", "init", "--config", lc.cfgPath).CombinedOutput()
		if err != nil {
			t.Fatalf("gavel certs init: %v\n%s", err, out)
		}
		lc.dialOpts = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(lc.clientTLS()))}
	}
	t.Cleanup(func() {
		for _, conn := range lc.conns {
			conn.Close()
		}
		out, err := lc.launch(2*time.Minute, "down")
		if err != nil {
			t.Errorf("scripts/launch down: %v\n%s", err, out)
		}
		for _, host := range h.hosts {
			if left := h.processes(host); len(left) > 0 {
				t.Errorf("scripts/launch down left processes running on %s:\n%s", host.name, strings.Join(left, "\n"))
			}
		}
	})
	return lc
}

// launch runs scripts/launch with args and --config, bounded by timeout,
// and returns what it printed.
func (lc *launchCluster) launch(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "../scripts/launch", append(args, "--config", lc.cfgPath)...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after %v: %w", timeout, err)
	}
	return string(out), err
}

// mustLaunch is launch that fails the test on an error.
func (lc *launchCluster) mustLaunch(args ...string) string {
	lc.t.Helper()
	out, err := lc.launch(2*time.Minute, args...)
	if err != nil {
		lc.showLogs()
		lc.t.Fatalf("scripts/launch %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	lc.t.Logf("scripts/launch %s:\n%s", strings.Join(args, " "), out)
	return out
}

// logPath is where process id logs on its host.
func (lc *launchCluster) logPath(id string) string {
	return filepath.Join(lc.h.host(lc.placement[id]).dir, ".run", id+".log")
}

// showLogs logs the end of every process's log.
func (lc *launchCluster) showLogs() {
	for _, id := range slices.Sorted(func(yield func(string) bool) {
		for id := range lc.placement {
			if !yield(id) {
				return
			}
		}
	}) {
		lc.t.Logf("---- last lines of %s (%s) ----\n%s", id, lc.logPath(id), tail(lc.logPath(id), 25))
	}
}

// clientTLS is the TLS configuration of a tool: the client certificate,
// and the cluster's CA.
func (lc *launchCluster) clientTLS() *tls.Config {
	lc.t.Helper()
	cert, err := tls.LoadX509KeyPair(filepath.Join(lc.certDir, "client.crt"), filepath.Join(lc.certDir, "client.key"))
	if err != nil {
		lc.t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: lc.caPool(), MinVersion: tls.VersionTLS12}
}

// caPool holds the cluster's CA.
func (lc *launchCluster) caPool() *x509.CertPool {
	lc.t.Helper()
	pem, err := os.ReadFile(filepath.Join(lc.certDir, "ca.crt"))
	if err != nil {
		lc.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		lc.t.Fatal("ca.crt holds no certificate")
	}
	return pool
}

// dialGateway opens a WebSocket to g1 as bidder (ws://, or wss:// trusting
// the cluster's CA).
func (lc *launchCluster) dialGateway(bidder string) *wsClient {
	lc.t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	scheme := "ws"
	if lc.tls {
		scheme = "wss"
		d.TLSClientConfig = &tls.Config{RootCAs: lc.caPool(), MinVersion: tls.VersionTLS12}
	}
	w, err := dialWSWith(lc.t, &d, fmt.Sprintf("%s://%s/ws?bidder=%s", scheme, lc.gateway, bidder), nil)
	if err != nil {
		lc.t.Fatal(err)
	}
	return w
}

// bidVia places a bid through a gateway connection and returns the outcome.
func bidVia(t *testing.T, w *wsClient, auction string, amount int64) string {
	t.Helper()
	rep, err := w.call(fmt.Sprintf("bid %s %d", auction, amount), "bid", 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return rep.Outcome
}

// running checks that every process of the config runs on its own host:
// its command line is in that host's namespace.
func (lc *launchCluster) checkPlacement() {
	lc.t.Helper()
	for id, hostName := range lc.placement {
		procs := lc.h.processes(lc.h.host(hostName))
		if !slices.ContainsFunc(procs, func(p string) bool { return strings.Contains(p, "--id "+id+" ") }) {
			lc.t.Errorf("%s does not run on %s; processes there:\n%s", id, hostName, strings.Join(procs, "\n"))
		}
	}
}

// TestLaunchAcrossHosts runs a cluster on three test hosts over ssh:
// masters and nodes spread over the hosts, the gateway on h3. In plaintext
// `scripts/launch up` refuses to start anything there, insecure: true or
// not; with TLS it starts them. Bids through the gateway succeed;
// `scripts/launch kill` of the head's node makes the master splice it
// out, and bids go on; `scripts/launch restart` brings it back at the
// tail; `scripts/launch down` leaves no process behind.
func TestLaunchAcrossHosts(t *testing.T) {
	h := newTestHosts(t, 3)
	plain := writeLaunchCluster(t, h, false)
	out, err := plain.launch(time.Minute, "up")
	if err == nil || !strings.Contains(out, "TLS needed beyond loopback") || !strings.Contains(out, "runs on") {
		t.Fatalf("scripts/launch up of a plaintext cluster across hosts: %v\n%s", err, out)
	}
	t.Logf("plaintext refused: %s", strings.TrimSpace(out))
	for _, host := range h.hosts {
		if left := h.processes(host); len(slices.DeleteFunc(left, func(p string) bool { return !strings.Contains(p, "gavel ") })) > 0 {
			t.Fatalf("a refused up started processes on %s: %v", host.name, left)
		}
	}
	lc := newLaunchCluster(t, h, true)
	lc.checkPlacement()

	ws := lc.dialGateway("alice")
	if rep, err := ws.call("open a1 30m a lamp on three hosts", "open", 15*time.Second); err != nil || rep.Outcome != "success" {
		t.Fatalf("open through the gateway: %+v %v", rep, err)
	}
	if out := bidVia(t, ws, "a1", 100); out != "success" {
		t.Fatalf("bid 100 through the gateway: %s", out)
	}

	before := lc.waitConfig("all three nodes in the chain", 15*time.Second, func(cfg *api.ChainConfig) bool {
		return len(cfg.Chain) == 3
	})
	head := chainIDs(before)[0]
	t.Logf("chain before: %s; killing the head %s on %s", describeConfig(before), head, lc.placement[head])
	lc.mustLaunch("kill", head)
	after := lc.waitConfig("the head spliced out", 15*time.Second, func(cfg *api.ChainConfig) bool {
		return cfg.Epoch > before.Epoch && !slices.Contains(chainIDs(cfg), head) && len(cfg.Chain) == 2
	})
	t.Logf("chain after the kill: %s", describeConfig(after))
	if out := bidVia(t, ws, "a1", 200); out != "success" {
		t.Fatalf("bid 200 after the head's kill: %s", out)
	}

	lc.mustLaunch("restart", head)
	back := lc.waitConfig(head+" back at the tail", 15*time.Second, func(cfg *api.ChainConfig) bool {
		ids := chainIDs(cfg)
		return len(ids) == 3 && ids[2] == head
	})
	t.Logf("chain after the restart: %s", describeConfig(back))
	if out := bidVia(t, ws, "a1", 300); out != "success" {
		t.Fatalf("bid 300 after the restart: %s", out)
	}
	res, err := ws.call("result a1", "result", 15*time.Second)
	if err != nil || res.Highest != 300 || res.Bidder != "alice" {
		t.Fatalf("result a1 = %+v, %v; want alice 300", res, err)
	}

	status := lc.mustLaunch("status")
	for id, hostName := range lc.placement {
		if !strings.Contains(status, id) || !strings.Contains(status, hostName) {
			t.Errorf("scripts/launch status does not show %s on %s", id, hostName)
		}
	}
	// Idempotent: a second up starts nothing new.
	out = lc.mustLaunch("up")
	if !strings.Contains(out, "already running") {
		t.Errorf("a second scripts/launch up does not say the processes already run:\n%s", out)
	}
	for _, host := range h.hosts {
		if n := len(slices.DeleteFunc(h.processes(host), func(p string) bool { return !strings.Contains(p, "gavel ") })); n > 3 {
			t.Errorf("%d gavel processes on %s after a second up: %v", n, host.name, h.processes(host))
		}
	}
	lc.mustLaunch("down")
	for _, host := range h.hosts {
		if left := h.processes(host); len(left) > 0 {
			t.Errorf("scripts/launch down left processes on %s:\n%s", host.name, strings.Join(left, "\n"))
		}
	}
}

// TestLaunchAcrossHostsTLS runs the same three-host cluster with mutual
// TLS on every gRPC link and wss at the gateway. A node whose certificate
// comes from another CA is refused by the masters, with a log line that
// says so, and never joins; the cluster goes on taking bids. Then every
// process is restarted, one at a time, under bid load (`scripts/launch
// restart`, masters, nodes, gateway): porcupine finds the history
// linearizable and no acknowledged bid is lost.
func TestLaunchAcrossHostsTLS(t *testing.T) {
	h := newTestHosts(t, 3)
	lc := newLaunchCluster(t, h, true)
	lc.checkPlacement()

	ws := lc.dialGateway("alice")
	if rep, err := ws.call("open a1 30m a lamp over TLS", "open", 15*time.Second); err != nil || rep.Outcome != "success" {
		t.Fatalf("open through the gateway over wss: %+v %v", rep, err)
	}
	if out := bidVia(t, ws, "a1", 100); out != "success" {
		t.Fatalf("bid 100 over wss: %s", out)
	}

	lc.checkForeignNodeRefused()
	if out := bidVia(t, ws, "a1", 200); out != "success" {
		t.Fatalf("bid 200 after the foreign node's attempts: %s", out)
	}

	// Rolling restart under load.
	w := newWorkload(lc.cluster, "r1", "r2")
	stopOnCleanup(t, w)
	w.start(4, 2)
	time.Sleep(time.Second)
	order := append(append(append([]string{}, lc.masterIDs...), lc.ids...), lc.gatewayIDs...)
	for _, id := range order {
		start := time.Now()
		lc.mustLaunch("restart", id)
		t.Logf("restarted %s on %s in %v", id, lc.placement[id], time.Since(start).Round(time.Millisecond))
		time.Sleep(500 * time.Millisecond)
	}
	time.Sleep(time.Second)
	w.finish()
	w.verify(t, lc.ids...)
	final := lc.waitConfig("all three nodes in the chain", 15*time.Second, func(cfg *api.ChainConfig) bool {
		return len(cfg.Chain) == 3 && len(cfg.Joining) == 0
	})
	t.Logf("chain after the rolling restart: %s", describeConfig(final))
	// The gateway came back too, over wss.
	ws2 := lc.dialGateway("bob")
	if out := bidVia(t, ws2, "a1", 300); out != "success" {
		t.Fatalf("bid 300 through the restarted gateway: %s", out)
	}
}

// checkForeignNodeRefused starts node n4 on h2 with a certificate from a
// CA of its own (trusting both CAs, so that it does present its
// certificate) and checks that the masters refuse it with a clear log line
// and that it never joins the chain.
func (lc *launchCluster) checkForeignNodeRefused() {
	t := lc.t
	t.Helper()
	host := lc.h.host("h2")
	foreignDir := filepath.Join(lc.h.dir, "foreign")
	if err := os.MkdirAll(foreignDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(lc.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	n4Addr := lc.h.addr("h2", nsNodePort+3)
	foreign := strings.ReplaceAll(string(cfg), lc.certDir, foreignDir)
	foreign = strings.Replace(foreign, "nodes:\n", fmt.Sprintf("nodes:\n  - id: n4\n    host: h2\n    addr: %s\n", n4Addr), 1)
	foreignCfg := filepath.Join(foreignDir, "config.yaml")
	if err := os.WriteFile(foreignCfg, []byte(foreign), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(gavelBin, "certs", "init", "--config", foreignCfg).CombinedOutput(); err != nil {
		t.Fatalf("gavel certs init (foreign CA): %v\n%s", err, out)
	}
	// n4 trusts the cluster's CA as well as its own, so the handshake gets
	// as far as the masters checking n4's certificate.
	ours, err1 := os.ReadFile(filepath.Join(lc.certDir, "ca.crt"))
	theirs, err2 := os.ReadFile(filepath.Join(foreignDir, "ca.crt"))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if err := os.WriteFile(filepath.Join(foreignDir, "ca.crt"), append(theirs, ours...), 0o644); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(foreignDir, "n4.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	n4 := exec.Command("ip", "netns", "exec", host.ns, gavelBin, "node", "--id", "n4", "--config", foreignCfg)
	n4.Dir = foreignDir // its data dir (chain.data_dir/n4) stays in the test dir
	n4.Stdout, n4.Stderr = logf, logf
	n4.SysProcAttr = groupLeaderAttr()
	if err := n4.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { n4.Wait(); close(exited) }()
	stop := func() {
		n4.Process.Kill()
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Errorf("the foreign node n4 did not exit within 5s of SIGKILL")
		}
	}
	defer stop()

	// Every master refuses n4's heartbeats; wait for the refusal in a
	// master's log, then check that n4 never became a member.
	deadline := time.Now().Add(10 * time.Second)
	var refusal string
	for refusal == "" {
		for _, m := range lc.masterIDs {
			for _, line := range strings.Split(tail(lc.logPath(m), 400), "\n") {
				if strings.Contains(line, "refused connection") && strings.Contains(line, host.ip) {
					refusal = m + ": " + line
				}
			}
		}
		if refusal != "" {
			break
		}
		if time.Now().After(deadline) {
			lc.showLogs()
			t.Fatalf("no master logged a refused connection from n4 (%s) within 10s; n4's log:\n%s", host.ip, tail(logPath, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("refusal: %s", refusal)
	if !strings.Contains(refusal, "certificate") {
		t.Errorf("the refusal does not say what was wrong with the certificate: %s", refusal)
	}
	for range 10 {
		cfg := lc.config()
		if cfg != nil && (slices.Contains(chainIDs(cfg), "n4") || slices.Contains(joiningIDs(cfg), "n4")) {
			t.Fatalf("the node with a foreign certificate is in the configuration: %s", describeConfig(cfg))
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("n4's log ends:\n%s", tail(logPath, 5))
}
