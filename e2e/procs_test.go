package e2e

import (
	"context"
	"crypto/x509"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gavel-auction/gavel/api"
)

// gavelBin is the binary built once for the whole package by TestMain.
var gavelBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "gavel-e2e-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	gavelBin = filepath.Join(dir, "gavel")
	build := exec.Command("go", "build", "-o", gavelBin, "../cmd/gavel")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building gavel:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one gavel process started by a test.
type proc struct {
	id, addr, log string
	cmd           *exec.Cmd
	exited        chan struct{}
}

// cluster is a set of `gavel node` processes on loopback sharing one
// config.yaml. Every process is SIGKILLed when the test ends, pass or fail.
type cluster struct {
	t       *testing.T
	dir     string
	cfgPath string
	ids     []string // node ids
	addrs   map[string]string
	// httpAddrs are the masters' and nodes' http_addr (/metrics, /healthz,
	// /readyz) in clusters made by newMasterCluster.
	httpAddrs map[string]string
	// masterIDs are the masters of a cluster made by newMasterCluster.
	masterIDs []string
	// spare are nodes of config.yaml that newMasterClusterWith does not
	// start (masterClusterOptions.Spare).
	spare []string
	// gatewayIDs are the gateways of a cluster made by newGatewayCluster.
	gatewayIDs []string
	// inProcess: masters and nodes run in the test process (procs is empty).
	inProcess bool
	// external: the processes were started by scripts/launch, on test
	// hosts (procs is empty); the test assumes they run.
	external bool
	// dialOpts are added to every gRPC connection the test opens (TLS).
	dialOpts []grpc.DialOption
	// caPool is the cluster's CA when it runs TLS: the gateways serve
	// https and wss with certificates it signed.
	caPool *x509.CertPool

	mu    sync.Mutex // guards procs
	procs map[string]*proc

	connMu sync.Mutex // guards conns
	conns  map[string]*grpc.ClientConn
}

// nextPort is the next port freePort tries. Ports come from below the
// kernel's ephemeral range (32768-60999 on Linux), from a random start, so
// the source port of some outgoing connection never takes a port a test
// handed out before its process binds it.
var (
	portMu   sync.Mutex // guards nextPort
	nextPort = 20000 + rand.IntN(10000)
)

// freePort returns a loopback address that was free a moment ago, and
// never one it returned before in this test binary.
func freePort(t *testing.T) string {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for range 2000 {
		port := nextPort
		nextPort++
		if nextPort >= 32000 {
			nextPort = 20000
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue // taken: try the next
		}
		l.Close()
		return l.Addr().String()
	}
	t.Fatal("no free loopback port in 20000-32000")
	return ""
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), addrs: map[string]string{}, procs: map[string]*proc{},
		conns: map[string]*grpc.ClientConn{}}
	var b strings.Builder
	b.WriteString("cluster:\n  name: e2e\ninsecure: true\nnodes:\n")
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		c.ids = append(c.ids, id)
		c.addrs[id] = freePort(t)
		fmt.Fprintf(&b, "  - id: %s\n    addr: %s\n", id, c.addrs[id])
	}
	b.WriteString("chain:\n  tick: 5ms\n  hello_retry: 20ms\nlog:\n  level: debug\n")
	c.cfgPath = filepath.Join(c.dir, "config.yaml")
	if err := os.WriteFile(c.cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.shutdown)
	for _, id := range c.ids {
		c.start(id)
	}
	for _, id := range c.ids {
		c.waitUp(id)
	}
	return c
}

// start launches `gavel node --id id` (or master, or gateway, after the
// kind of id) with its log in the test's directory.
func (c *cluster) start(id string, args ...string) *proc {
	c.t.Helper()
	logPath := filepath.Join(c.dir, id+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		c.t.Fatal(err)
	}
	kind := "node"
	if c.isMaster(id) {
		kind = "master"
	} else if c.isGateway(id) {
		kind = "gateway"
	}
	cmd := exec.Command(gavelBin, append([]string{kind, "--id", id, "--config", c.cfgPath}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	// Relative paths of the config (the nodes' data dirs) are under the
	// test's own directory, as they are under a host's dir in a launch.
	cmd.Dir = c.dir
	cmd.SysProcAttr = groupLeaderAttr()
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	p := &proc{id: id, addr: c.addrs[id], log: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() { cmd.Wait(); f.Close(); close(p.exited) }()
	c.mu.Lock()
	c.procs[id] = p
	c.mu.Unlock()
	return p
}

// kill SIGKILLs a process and waits for it to be gone.
func (c *cluster) kill(id string) {
	c.t.Helper()
	c.mu.Lock()
	p := c.procs[id]
	delete(c.procs, id)
	c.mu.Unlock()
	if p == nil {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.exited:
	case <-time.After(5 * time.Second):
		c.t.Errorf("process %s did not exit after SIGKILL", id)
	}
}

// shutdown kills every process, bounded in time, and shows the logs of a
// failed test.
func (c *cluster) shutdown() {
	c.mu.Lock()
	ids := make([]string, 0, len(c.procs))
	for id := range c.procs {
		ids = append(ids, id)
	}
	c.mu.Unlock()
	for _, id := range ids {
		c.kill(id)
	}
	c.connMu.Lock()
	for _, conn := range c.conns {
		conn.Close()
	}
	c.connMu.Unlock()
	if c.t.Failed() {
		for _, id := range append(append(append([]string{}, c.masterIDs...), c.ids...), c.gatewayIDs...) {
			if b, err := os.ReadFile(filepath.Join(c.dir, id+".log")); err == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				if len(lines) > 40 {
					lines = lines[len(lines)-40:]
				}
				c.t.Logf("---- last lines of %s.log ----\n%s", id, strings.Join(lines, "\n"))
			}
		}
	}
}

func (c *cluster) conn(id string) *grpc.ClientConn {
	c.connMu.Lock()
	defer c.connMu.Unlock()
	if conn, ok := c.conns[id]; ok {
		return conn
	}
	// A node the test restarts is back within a few hundred ms: keep the
	// reconnect backoff short so calls do not fail fast for a second after.
	fastReconnect := grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 20 * time.Millisecond, Multiplier: 1.6, MaxDelay: 200 * time.Millisecond},
		MinConnectTimeout: time.Second})
	conn, err := grpc.NewClient(c.addrs[id], append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		fastReconnect}, c.dialOpts...)...)
	if err != nil {
		c.t.Fatal(err)
	}
	c.conns[id] = conn
	return conn
}

func (c *cluster) auctions(id string) api.AuctionsClient { return api.NewAuctionsClient(c.conn(id)) }
func (c *cluster) admin(id string) api.AdminClient       { return api.NewAdminClient(c.conn(id)) }

// waitUp waits until the node answers Status.
func (c *cluster) waitUp(id string) {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		_, err := c.admin(id).Status(ctx, &api.StatusRequest{})
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("node %s not up after 15s: %v", id, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// members returns the chain members for ids, in order.
func (c *cluster) members(ids ...string) []*api.Member {
	var ms []*api.Member
	for _, id := range ids {
		ms = append(ms, &api.Member{Id: id, Addr: c.addrs[id]})
	}
	return ms
}

// reconfigure pushes a configuration to the given nodes through the admin
// call, as the master does.
func (c *cluster) reconfigure(cfg *api.ChainConfig, to ...string) {
	c.t.Helper()
	for _, id := range to {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := c.admin(id).SetConfig(ctx, cfg)
		cancel()
		if err != nil {
			c.t.Fatalf("SetConfig epoch %d on %s: %v", cfg.Epoch, id, err)
		}
	}
}

// statuses returns the Status of each node.
func (c *cluster) statuses(ids ...string) map[string]*api.NodeStatus {
	c.t.Helper()
	out := map[string]*api.NodeStatus{}
	for _, id := range ids {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		st, err := c.admin(id).Status(ctx, &api.StatusRequest{}, grpc.WaitForReady(true))
		cancel()
		if err != nil {
			c.t.Fatalf("status of %s: %v", id, err)
		}
		out[id] = st
	}
	return out
}
