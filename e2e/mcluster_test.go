package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/api"
)

// Timing of the clusters made by newMasterCluster: the LAN defaults of
// config.yaml, so that the tests exercise what operators run.
const (
	failureTimeout = 500 * time.Millisecond
	leaseDuration  = 200 * time.Millisecond
)

// newMasterCluster starts 3 `gavel master` and n `gavel node` processes on
// loopback, the nodes one at a time so that the chain is n1 -> ... -> nN,
// and waits until every node is a chain member. Every process is
// SIGKILLed when the test ends. extraYAML is appended to the generated
// config.yaml (whole top-level sections, e.g. gateways:) before anything
// starts.
func newMasterCluster(t *testing.T, n int, extraYAML ...string) *cluster {
	t.Helper()
	return newMasterClusterWith(t, masterClusterOptions{Nodes: n, ExtraYAML: strings.Join(extraYAML, "")})
}

// masterClusterOptions configure newMasterClusterWith.
type masterClusterOptions struct {
	// Nodes are started (n1..nNodes); Spare more are in config.yaml
	// (after them) but not started, for a test to start later.
	Nodes, Spare int
	// Sections replaces the chain and log sections (default: a 5 ms tick,
	// a 20 ms hello retry, debug logs); ExtraYAML is appended (whole
	// top-level sections other than cluster, masters, nodes and master).
	Sections, ExtraYAML string
}

// newMasterClusterWith is newMasterCluster with options.
func newMasterClusterWith(t *testing.T, o masterClusterOptions) *cluster {
	t.Helper()
	c := newEmptyCluster(t)
	var b strings.Builder
	b.WriteString("insecure: true\n")
	b.WriteString(c.masterClusterYAMLWith(o))
	b.WriteString(o.ExtraYAML)
	c.cfgPath = filepath.Join(c.dir, "config.yaml")
	if err := os.WriteFile(c.cfgPath, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.shutdown)
	c.startMasterCluster()
	return c
}

// newEmptyCluster returns a cluster of no process yet, in a directory of
// the test's.
func newEmptyCluster(t *testing.T) *cluster {
	return &cluster{t: t, dir: t.TempDir(), addrs: map[string]string{}, httpAddrs: map[string]string{},
		procs: map[string]*proc{}, conns: map[string]*grpc.ClientConn{}}
}

// masterClusterYAML returns the sections of config.yaml that
// newMasterCluster writes for 3 masters and n nodes on free loopback
// ports (cluster, masters, nodes, master, chain, log), and records their
// ids and addresses in c.
func (c *cluster) masterClusterYAML(n int) string {
	return c.masterClusterYAMLWith(masterClusterOptions{Nodes: n})
}

// masterClusterYAMLWith is masterClusterYAML with options (Spare nodes are
// recorded in c.spare, not started by startMasterCluster).
func (c *cluster) masterClusterYAMLWith(o masterClusterOptions) string {
	var b strings.Builder
	b.WriteString("cluster:\n  name: e2e\nmasters:\n")
	t := c.t
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("m%d", i)
		c.masterIDs = append(c.masterIDs, id)
		c.addrs[id] = freePort(t)
		c.httpAddrs[id] = freePort(t)
		fmt.Fprintf(&b, "  - id: %s\n    addr: %s\n    raft_addr: %s\n    data_dir: %s\n    http_addr: %s\n", id, c.addrs[id],
			freePort(t), filepath.Join(c.dir, "data", id), c.httpAddrs[id])
	}
	b.WriteString("nodes:\n")
	for i := 1; i <= o.Nodes+o.Spare; i++ {
		id := fmt.Sprintf("n%d", i)
		c.ids = append(c.ids, id)
		if i > o.Nodes {
			c.spare = append(c.spare, id)
		}
		c.addrs[id] = freePort(t)
		c.httpAddrs[id] = freePort(t)
		fmt.Fprintf(&b, "  - id: %s\n    addr: %s\n    http_addr: %s\n", id, c.addrs[id], c.httpAddrs[id])
	}
	fmt.Fprintf(&b, "master:\n  heartbeat: 50ms\n  failure_timeout: %v\n  lease: %v\n", failureTimeout, leaseDuration)
	if o.Sections == "" {
		o.Sections = "chain:\n  tick: 5ms\n  hello_retry: 20ms\nlog:\n  level: debug\n"
	}
	b.WriteString(o.Sections)
	return b.String()
}

// startMasterCluster starts c's masters, waits for a leader, then starts
// its nodes (but the spare ones) one at a time, each until it is a chain
// member.
func (c *cluster) startMasterCluster() {
	c.t.Helper()
	for _, id := range c.masterIDs {
		c.start(id)
	}
	c.leader(15 * time.Second)
	nodes := c.ids[:len(c.ids)-len(c.spare)]
	for i, id := range nodes {
		c.start(id)
		want := nodes[:i+1]
		c.waitConfig(fmt.Sprintf("chain %v", want), 15*time.Second, func(cfg *api.ChainConfig) bool {
			return slices.Equal(chainIDs(cfg), want) && len(cfg.Joining) == 0
		})
	}
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
	return ok || c.inProcess || c.external
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

// chainRole names id's place in cfg: "head", "middle", "tail", "single",
// "joining", or "" when id is not in the configuration.
func chainRole(cfg *api.ChainConfig, id string) string {
	ids := chainIDs(cfg)
	switch i := slices.Index(ids, id); {
	case i < 0:
		if slices.Contains(joiningIDs(cfg), id) {
			return "joining"
		}
		return ""
	case len(ids) == 1:
		return "single"
	case i == 0:
		return "head"
	case i == len(ids)-1:
		return "tail"
	default:
		return "middle"
	}
}

// memberIncarnation is the incarnation under which cfg lists id (chain or
// joining), or 0 when it does not list it.
func memberIncarnation(cfg *api.ChainConfig, id string) uint64 {
	for _, m := range append(append([]*api.Member{}, cfg.GetChain()...), cfg.GetJoining()...) {
		if m.Id == id {
			return m.Incarnation
		}
	}
	return 0
}

// waitMasterRejoined waits until master id, restarted from its data dir,
// is a Raft follower of the current leader holding the leader's
// configuration epoch, and returns its status.
func (c *cluster) waitMasterRejoined(id string, timeout time.Duration) *api.MasterStatus {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for {
		lead := c.leader(timeout)
		st, err := c.masterStatus(id)
		lst, lerr := c.masterStatus(lead)
		switch {
		case err != nil:
			last = fmt.Sprintf("status: %v", err)
		case lerr != nil:
			last = fmt.Sprintf("leader %s status: %v", lead, lerr)
		default:
			last = fmt.Sprintf("raft %s leader %q config %s; leader %s has %s", st.RaftState, st.LeaderId,
				describeConfig(st.Config), lead, describeConfig(lst.Config))
			if st.RaftState == "Follower" && st.LeaderId == lead && st.Config.GetEpoch() == lst.Config.GetEpoch() {
				return st
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("master %s did not rejoin within %v: %s", id, timeout, last)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stopOnCleanup makes sure the workload's clients are stopped when the
// test ends, also when it fails before calling finish. Register it after
// the cluster, so that it runs while the processes are still up.
func stopOnCleanup(t *testing.T, w *workload) {
	t.Cleanup(func() {
		select {
		case <-w.stop:
		default:
			close(w.stop)
		}
		w.wg.Wait()
	})
}

// successSampler polls a workload's count of successful bids and records
// when it rose, giving wall-clock times of successful bids (to the
// sampling period) for measuring write gaps around a fault.
type successSampler struct {
	w     *workload
	quit  chan struct{}
	done  chan struct{}
	mu    sync.Mutex // guards times
	times []time.Time
}

func sampleSuccesses(t *testing.T, w *workload, every time.Duration) *successSampler {
	s := &successSampler{w: w, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		last := w.successes()
		for {
			select {
			case <-s.quit:
				return
			case now := <-tick.C:
				if n := w.successes(); n > last {
					last = n
					s.mu.Lock()
					s.times = append(s.times, now)
					s.mu.Unlock()
				}
			}
		}
	}()
	t.Cleanup(s.stop)
	return s
}

// stop ends the sampling; it may be called more than once.
func (s *successSampler) stop() {
	select {
	case <-s.quit:
	default:
		close(s.quit)
	}
	<-s.done
}

// longestStall is the longest stretch without a successful bid within
// [from, to]: a stretch that spans from starts at the last success before
// it, and one still open at to ends there.
func (s *successSampler) longestStall(from, to time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	prev := from
	i, _ := slices.BinarySearchFunc(s.times, from, func(a, b time.Time) int { return a.Compare(b) })
	if i > 0 {
		prev = s.times[i-1]
	}
	var longest time.Duration
	for ; i < len(s.times) && !s.times[i].After(to); i++ {
		longest = max(longest, s.times[i].Sub(prev))
		prev = s.times[i]
	}
	return max(longest, to.Sub(prev))
}

// firstAfter is the time from t0 to the first successful bid seen after
// it, or -1 if there was none.
func (s *successSampler) firstAfter(t0 time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, found := slices.BinarySearchFunc(s.times, t0, func(a, b time.Time) int { return a.Compare(b) })
	if found {
		i++
	}
	if i == len(s.times) {
		return -1
	}
	return s.times[i].Sub(t0)
}

// nodeStatus asks one node for its status, without failing the test.
func (c *cluster) nodeStatus(id string) (*api.NodeStatus, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	return c.admin(id).Status(ctx, &api.StatusRequest{})
}
