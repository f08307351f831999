package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/api"
)

// Timing of the clusters made by newMasterCluster: the LAN defaults of
// config.yaml, so that the tests exercise what operators run.
const (
	failureTimeout = 400 * time.Millisecond
	leaseDuration  = 200 * time.Millisecond
)

// newMasterCluster starts 3 `gavel master` and n `gavel node` processes on
// loopback, the nodes one at a time so that the chain is n1 -> ... -> nN,
// and waits until every node is a chain member. Every process is
// SIGKILLed when the test ends.
func newMasterCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, dir: t.TempDir(), addrs: map[string]string{}, procs: map[string]*proc{}, conns: map[string]*grpc.ClientConn{}}
	var b strings.Builder
	b.WriteString("cluster:\n  name: e2e\nmasters:\n")
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("m%d", i)
		c.masterIDs = append(c.masterIDs, id)
		c.addrs[id] = freePort(t)
		fmt.Fprintf(&b, "  - id: %s\n    addr: %s\n    raft_addr: %s\n    data_dir: %s\n", id, c.addrs[id], freePort(t),
			filepath.Join(c.dir, "data", id))
	}
	b.WriteString("nodes:\n")
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		c.ids = append(c.ids, id)
		c.addrs[id] = freePort(t)
		fmt.Fprintf(&b, "  - id: %s\n    addr: %s\n", id, c.addrs[id])
	}
	fmt.Fprintf(&b, "master:\n  heartbeat: 50ms\n  failure_timeout: %v\n  lease: %v\n", failureTimeout, leaseDuration)
	b.WriteString("chain:\n  tick: 5ms\n  hello_retry: 20ms\nlog:\n  level: debug\n")
	c.cfgPath = filepath.Join(c.dir, "config.yaml")
	if err := os.WriteFile(c.cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.shutdown)
	for _, id := range c.masterIDs {
		c.start(id)
	}
	c.leader(15 * time.Second)
	for i, id := range c.ids {
		c.start(id)
		want := c.ids[:i+1]
		c.waitConfig(fmt.Sprintf("chain %v", want), 15*time.Second, func(cfg *api.ChainConfig) bool {
			return slices.Equal(chainIDs(cfg), want) && len(cfg.Joining) == 0
		})
	}
	return c
}

// isMaster reports whether id is one of the cluster's masters.
func (c *cluster) isMaster(id string) bool { return slices.Contains(c.masterIDs, id) }

func (c *cluster) master(id string) api.MasterClient { return api.NewMasterClient(c.conn(id)) }

// masterStatus asks one master for its status.
func (c *cluster) masterStatus(id string) (*api.MasterStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	return c.master(id).Status(ctx, &api.MasterStatusRequest{})
}

// leader waits until one running master says it is the Raft leader and
// returns its id.
func (c *cluster) leader(timeout time.Duration) string {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, id := range c.masterIDs {
			if !c.running(id) {
				continue
			}
			if st, err := c.masterStatus(id); err == nil && st.RaftState == "Leader" {
				return id
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("no master leader after %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// running reports whether the test has a live process for id.
func (c *cluster) running(id string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	_, ok := c.procs[id]
	return ok || c.inProcess
}

// config returns the chain configuration as the master leader has it.
func (c *cluster) config() *api.ChainConfig {
	c.t.Helper()
	st, err := c.masterStatus(c.leader(15 * time.Second))
	if err != nil {
		return nil
	}
	return st.Config
}

// waitConfig waits until the master leader's configuration satisfies ok.
func (c *cluster) waitConfig(what string, timeout time.Duration, ok func(*api.ChainConfig) bool) *api.ChainConfig {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		cfg := c.config()
		if cfg != nil && ok(cfg) {
			return cfg
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("waiting for %s: configuration is %v after %v", what, describeConfig(cfg), timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pause SIGSTOPs a process; resume SIGCONTs it.
func (c *cluster) pause(id string)  { c.signal(id, syscall.SIGSTOP) }
func (c *cluster) resume(id string) { c.signal(id, syscall.SIGCONT) }

func (c *cluster) signal(id string, sig syscall.Signal) {
	c.t.Helper()
	c.mu.Lock()
	p := c.procs[id]
	c.mu.Unlock()
	if p == nil {
		c.t.Fatalf("%s is not running", id)
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil {
		c.t.Fatalf("signal %v to %s: %v", sig, id, err)
	}
}

// chainIDs lists the chain's member ids, head first.
func chainIDs(cfg *api.ChainConfig) []string {
	var ids []string
	for _, m := range cfg.GetChain() {
		ids = append(ids, m.Id)
	}
	return ids
}

// joiningIDs lists the joining nodes' ids.
func joiningIDs(cfg *api.ChainConfig) []string {
	var ids []string
	for _, m := range cfg.GetJoining() {
		ids = append(ids, m.Id)
	}
	return ids
}

func describeConfig(cfg *api.ChainConfig) string {
	if cfg == nil {
		return "unknown"
	}
	return fmt.Sprintf("epoch %d chain %v joining %v", cfg.Epoch, chainIDs(cfg), joiningIDs(cfg))
}
