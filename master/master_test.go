package master

// Integration tests: three Masters with real Raft (hashicorp/raft over TCP,
// raft-boltdb in t.TempDir()) on loopback, driven through the gRPC Master
// service by fake nodes that heartbeat like chain nodes do. Timings are
// short (heartbeat 20 ms, failure timeout 300 ms) so the whole file runs in
// seconds; every master, node, watch and connection is stopped in
// t.Cleanup within a bound, whatever happens.
//
// The unit tests at the end drive masterServer.Watch and Heartbeat without
// Raft.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/internal/conns"
)

// Timings of the integration tests.
const (
	hbPeriod    = 20 * time.Millisecond  // the fake nodes' heartbeat period
	failTimeout = 300 * time.Millisecond // Options.FailureTimeout
	leaseTime   = 100 * time.Millisecond // Options.Lease
	// stopBound is how long one Master.Stop may take before the test fails.
	stopBound = 10 * time.Second
	// settle bounds every wait for the group to reach a state.
	settle = 5 * time.Second
)

// testLog is an io.Writer that forwards lines to t.Log until closed, so
// that goroutines outliving a test cannot log into it.
type testLog struct {
	mu     sync.Mutex // guards closed
	t      *testing.T
	closed bool
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.closed {
		l.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (l *testLog) close() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// cluster is a group of Masters on loopback. masters[i] is nil while
// master i is stopped; only the test goroutine touches masters.
type cluster struct {
	t       *testing.T
	log     *testLog
	peers   []Peer
	dirs    []string
	masters []*Master
	conns   []*grpc.ClientConn // to each master's gRPC address, across restarts
	// raftLis holds each master's Raft listener from the moment its port
	// is chosen until the master takes it, so no other test's socket can
	// take the port in between.
	raftLis []net.Listener
}

// newCluster starts n masters and registers their shutdown.
func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	c := &cluster{t: t, log: &testLog{t: t}, masters: make([]*Master, n)}
	t.Cleanup(c.log.close) // runs last
	listeners := make([]net.Listener, n)
	c.raftLis = make([]net.Listener, n)
	for i := range n {
		c.raftLis[i] = listen(t, "127.0.0.1:0")
		listeners[i] = listen(t, "127.0.0.1:0")
		c.peers = append(c.peers, Peer{ID: fmt.Sprintf("m%d", i+1), Addr: listeners[i].Addr().String(),
			RaftAddr: c.raftLis[i].Addr().String()})
		c.dirs = append(c.dirs, t.TempDir())
		conn, err := grpc.NewClient(c.peers[i].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Reconnect fast after a master restarts, as a node must to
			// be heard by a new leader within the failure timeout (the
			// default backoff starts at one second).
			grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 100 * time.Millisecond,
				Backoff: backoff.Config{BaseDelay: 10 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 50 * time.Millisecond}}))
		if err != nil {
			t.Fatal(err)
		}
		c.conns = append(c.conns, conn)
	}
	t.Cleanup(func() {
		for _, conn := range c.conns {
			conn.Close()
		}
	})
	t.Cleanup(c.stopAll) // runs before the connections close
	for i := range n {
		c.start(i, listeners[i])
	}
	return c
}

// freeAddr returns a loopback address that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l := listen(t, "127.0.0.1:0")
	defer l.Close()
	return l.Addr().String()
}

// listen listens on addr, retrying for a while: a port just closed by a
// stopped master may take a moment to be free again.
func listen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var err error
	for deadline := time.Now().Add(settle); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var l net.Listener
		if l, err = net.Listen("tcp", addr); err == nil {
			return l
		}
	}
	t.Fatalf("listen %s: %v", addr, err)
	return nil
}

// options are master i's Options with the tests' short timings.
func (c *cluster) options(i int) Options {
	return Options{
		ID: c.peers[i].ID, Peers: c.peers, DataDir: c.dirs[i],
		Heartbeat: hbPeriod, FailureTimeout: failTimeout, Lease: leaseTime,
		Raft: RaftTiming{HeartbeatTimeout: 200 * time.Millisecond, ElectionTimeout: 200 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond},
		Logger:  slog.New(slog.NewTextHandler(c.log, &slog.HandlerOptions{Level: slog.LevelInfo})),
		RaftLog: c.log,
	}
}

// start creates master i from its data dir and serves it on lis.
func (c *cluster) start(i int, lis net.Listener) {
	c.t.Helper()
	opts := c.options(i)
	if c.raftLis != nil {
		opts.RaftListener, c.raftLis[i] = c.raftLis[i], nil
	}
	m, err := New(opts)
	if err != nil {
		lis.Close()
		c.t.Fatalf("New(%s): %v", c.peers[i].ID, err)
	}
	m.Start(lis)
	c.masters[i] = m
}

// restart starts stopped master i again, from its data dir, at its
// addresses.
func (c *cluster) restart(i int) {
	c.t.Helper()
	if c.masters[i] != nil {
		c.t.Fatalf("restart of running master %s", c.peers[i].ID)
	}
	c.raftLis[i] = listen(c.t, c.peers[i].RaftAddr)
	c.start(i, listen(c.t, c.peers[i].Addr))
}

// stop stops master i, failing the test if that takes over stopBound.
func (c *cluster) stop(i int) {
	c.t.Helper()
	m := c.masters[i]
	c.masters[i] = nil
	stopBounded(c.t, c.peers[i].ID, m)
}

// stopAll stops every running master, all at once, each within stopBound.
func (c *cluster) stopAll() {
	var wg sync.WaitGroup
	for i, m := range c.masters {
		if m != nil {
			wg.Go(func() { stopBounded(c.t, c.peers[i].ID, m) })
		}
		c.masters[i] = nil
	}
	wg.Wait()
}

func stopBounded(t *testing.T, id string, m *Master) {
	done := make(chan struct{})
	go func() { m.Stop(); close(done) }()
	select {
	case <-done:
	case <-time.After(stopBound):
		t.Errorf("master %s did not stop within %v", id, stopBound)
	}
}

// client is a Master client of master i.
func (c *cluster) client(i int) api.MasterClient { return api.NewMasterClient(c.conns[i]) }

// currentLeader returns the index of the one running master that acts as
// leader, or an error if there is none or more than one.
func (c *cluster) currentLeader() (int, error) {
	leader := -1
	for i, m := range c.masters {
		if m != nil && m.IsLeader() {
			if leader >= 0 {
				return -1, fmt.Errorf("%s and %s both lead", c.peers[leader].ID, c.peers[i].ID)
			}
			leader = i
		}
	}
	if leader < 0 {
		return -1, errors.New("no leader")
	}
	return leader, nil
}

// waitLeader waits until exactly one running master acts as leader and
// returns its index.
func (c *cluster) waitLeader() int {
	c.t.Helper()
	leader := -1
	eventually(c.t, "exactly one leader", func() (err error) {
		leader, err = c.currentLeader()
		return err
	})
	return leader
}

// follower returns a running master other than the leader.
func (c *cluster) follower(leader int) int {
	for i, m := range c.masters {
		if m != nil && i != leader {
			return i
		}
	}
	c.t.Fatal("no follower running")
	return -1
}

// waitConfig waits until every running master has applied the
// configuration want (as Config.String shows it) and returns when that
// was first seen at master i.
func (c *cluster) waitConfig(i int, want string) time.Time {
	c.t.Helper()
	seen := waitFor(c.t, settle, fmt.Sprintf("%s at %s", want, c.peers[i].ID), func() bool {
		return c.masters[i].Config().String() == want
	})
	for j, m := range c.masters {
		if m != nil {
			waitFor(c.t, settle, fmt.Sprintf("%s at %s", want, c.peers[j].ID), func() bool {
				return m.Config().String() == want
			})
		}
	}
	return seen
}

// leaderSince is when master m took office, as its failure detector counts.
func leaderSince(m *Master) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leader.Since()
}

// waitFor polls cond every millisecond until it holds and returns when it
// was seen to; it fails the test after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(time.Millisecond)
	}
}

// eventually retries check every millisecond until it returns nil, and
// returns when it did; it fails the test with check's last error after
// settle. Checks that a change of leader can upset for a moment use it.
func eventually(t testing.TB, what string, check func() error) time.Time {
	t.Helper()
	var err error
	deadline := time.Now().Add(settle)
	for {
		if err = check(); err == nil {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", settle, what, err)
		}
		time.Sleep(time.Millisecond)
	}
}

// callCtx is a context for one RPC in a test.
func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fakeNode heartbeats to the masters every hbPeriod, like a chain node:
// it reports the highest epoch it has seen in a reply and, once told, that
// it is linked to its predecessor. A heartbeat goes to the master that
// answered the last one; on an error the next goes to the next master.
type fakeNode struct {
	id  string
	inc uint64
	c   *cluster

	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex // guards the fields below
	epoch  uint64
	linked bool
	lastOK time.Time           // when the latest answered heartbeat was sent
	reply  *api.HeartbeatReply // the latest answer
}

// startNode starts heartbeating as node id, first to master first.
func (c *cluster) startNode(id string, inc uint64, first int) *fakeNode {
	ctx, cancel := context.WithCancel(context.Background())
	n := &fakeNode{id: id, inc: inc, c: c, cancel: cancel, done: make(chan struct{})}
	c.t.Cleanup(func() { n.stop() })
	go n.run(ctx, first)
	return n
}

func (n *fakeNode) request() *api.HeartbeatRequest {
	n.mu.Lock()
	defer n.mu.Unlock()
	return &api.HeartbeatRequest{Id: n.id, Addr: n.id + ".test:7000", Incarnation: n.inc,
		Epoch: n.epoch, Linked: n.linked, Role: api.Role_MIDDLE}
}

func (n *fakeNode) run(ctx context.Context, target int) {
	defer close(n.done)
	tick := time.NewTicker(hbPeriod)
	defer tick.Stop()
	for {
		// One heartbeat: to the master that answered last, else to the
		// next ones in turn, each given 100 ms.
		for range n.c.conns {
			req, sent := n.request(), time.Now()
			cctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			rep, err := n.c.client(target).Heartbeat(cctx, req)
			cancel()
			n.mu.Lock()
			if err == nil {
				n.reply, n.lastOK = rep, sent
				n.epoch = max(n.epoch, rep.GetConfig().GetEpoch())
			} else {
				target = (target + 1) % len(n.c.conns)
			}
			n.mu.Unlock()
			if err == nil || ctx.Err() != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// setLinked makes the node report it is linked (or not).
func (n *fakeNode) setLinked(linked bool) {
	n.mu.Lock()
	n.linked = linked
	n.mu.Unlock()
}

// lastReply returns the latest answer, nil before the first.
func (n *fakeNode) lastReply() *api.HeartbeatReply {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.reply
}

// stop ends the heartbeats and returns when the last answered one was
// sent: the leader recorded it, or a later one, no earlier. held says
// whether that answer granted a lease, that is whether the leader still
// counted the node as alive (not already being removed).
func (n *fakeNode) stop() (last time.Time, held bool) {
	n.cancel()
	select {
	case <-n.done:
	case <-time.After(stopBound):
		n.c.t.Errorf("node %s did not stop heartbeating within %v", n.id, stopBound)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lastOK, n.reply.GetLeaseMs() > 0
}

// watch follows a master's Watch stream and records the epochs it
// delivers.
type watch struct {
	t      *testing.T
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex // guards epochs and err
	epochs []uint64
	err    error
}

// watch opens a Watch on master i.
func (c *cluster) watch(i int, after uint64) *watch {
	c.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watch{t: c.t, cancel: cancel, done: make(chan struct{})}
	stream, err := c.client(i).Watch(ctx, &api.WatchRequest{AfterEpoch: after, Watcher: "test"})
	if err != nil {
		cancel()
		c.t.Fatalf("Watch: %v", err)
	}
	c.t.Cleanup(func() {
		cancel()
		select {
		case <-w.done:
		case <-time.After(stopBound):
			c.t.Errorf("watch did not end within %v", stopBound)
		}
	})
	go func() {
		defer close(w.done)
		for {
			cfg, err := stream.Recv()
			w.mu.Lock()
			if err != nil {
				w.err = err
				w.mu.Unlock()
				return
			}
			w.epochs = append(w.epochs, cfg.GetEpoch())
			w.mu.Unlock()
		}
	}()
	return w
}

// got returns the epochs delivered so far.
func (w *watch) got() []uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.epochs)
}

// waitEpoch waits until the stream has delivered epoch e.
func (w *watch) waitEpoch(e uint64) {
	w.t.Helper()
	waitFor(w.t, settle, fmt.Sprintf("watch to deliver epoch %d", e), func() bool {
		return slices.Contains(w.got(), e)
	})
}

// heartbeatOnce sends a heartbeat of node id to master i, again until one
// is answered (an election may be under way).
func (c *cluster) heartbeatOnce(i int, id string, inc uint64) *api.HeartbeatReply {
	c.t.Helper()
	var rep *api.HeartbeatReply
	eventually(c.t, "an answer to a heartbeat", func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		rep, err = c.client(i).Heartbeat(ctx, &api.HeartbeatRequest{Id: id, Addr: id + ".test:7000", Incarnation: inc})
		return err
	})
	return rep
}

// checkLeaderReply checks that a heartbeat reply names a master as the
// leader that answered.
func (c *cluster) checkLeaderReply(rep *api.HeartbeatReply) error {
	for _, p := range c.peers {
		if rep.LeaderId == p.ID && rep.LeaderAddr == p.Addr {
			return nil
		}
	}
	return fmt.Errorf("reply names leader %q at %q, not a master", rep.LeaderId, rep.LeaderAddr)
}

// TestMasterJoinAppendRemove follows a chain's life under one leader: the
// first node's heartbeat starts the chain and earns it a lease; a second
// node joins, and is appended only once it reports a link in the current
// epoch; a node whose heartbeats stop is removed after the failure timeout
// and not before; the last member is never removed; a removed node that
// comes back rejoins; a watch delivers every epoch in order; and Status
// shows each master's Raft state and, at the leader, each node's health.
func TestMasterJoinAppendRemove(t *testing.T) {
	c := newCluster(t, 3)
	l := c.waitLeader()
	f := c.follower(l)
	w := c.watch(f, 0)

	// A non-member's heartbeat: answered, no lease yet, and it asks to join.
	rep := c.heartbeatOnce(l, "n1", 1)
	if rep.Member || rep.LeaseMs != 0 {
		t.Errorf("reply to a non-member = %v; want no membership or lease", rep)
	}
	if err := c.checkLeaderReply(rep); err != nil {
		t.Error(err)
	}
	n1 := c.startNode("n1", 1, l)
	c.waitConfig(l, "e1 [n1]")
	waitFor(t, settle, "n1's lease", func() bool {
		r := n1.lastReply()
		return r != nil && r.Member && r.Config.GetEpoch() == 1
	})
	if r := n1.lastReply(); r.LeaseMs != leaseTime.Milliseconds() {
		t.Errorf("chain member's lease = %d ms, want %d", r.LeaseMs, leaseTime.Milliseconds())
	}
	w.waitEpoch(1)

	// A second node joins at the tail, unlinked: it stays joining.
	n2 := c.startNode("n2", 7, l)
	c.waitConfig(l, "e2 [n1] +[n2]")
	w.waitEpoch(2)
	waitFor(t, settle, "n2 to see epoch 2", func() bool {
		r := n2.lastReply()
		return r != nil && r.Member && r.Config.GetEpoch() == 2
	})
	time.Sleep(5 * hbPeriod)
	if got := c.masters[l].Config().String(); got != "e2 [n1] +[n2]" {
		t.Fatalf("unlinked joiner changed the config to %s", got)
	}

	// Linked in the current epoch: appended as the new tail.
	n2.setLinked(true)
	c.waitConfig(l, "e3 [n1 n2]")
	w.waitEpoch(3)
	if got := c.masters[l].Config().Chain[1]; got.Incarnation != 7 || got.Addr != "n2.test:7000" {
		t.Errorf("appended member = %+v, want incarnation 7 at n2.test:7000", got)
	}
	eventually(t, "Status of every master", func() error { return c.statusProblems("n1", "n2") })

	// n1 goes silent: removed after the failure timeout, not before.
	last, held := n1.stop()
	removed := c.waitConfig(l, "e4 [n2]")
	switch d := removed.Sub(last); {
	case !held:
		t.Logf("n1's heartbeats were already lost before it stopped (slow machine?): not timing its removal")
	case d < failTimeout:
		t.Errorf("n1 removed %v after its last heartbeat, before the failure timeout %v", d, failTimeout)
	default:
		t.Logf("n1 removed %v after its last heartbeat", d)
	}
	w.waitEpoch(4)

	// n2, now the last member, goes silent: it is never removed.
	n2.stop()
	time.Sleep(2 * failTimeout)
	if got := c.masters[l].Config().String(); got != "e4 [n2]" {
		t.Fatalf("config with the last member silent = %s, want e4 [n2]", got)
	}

	// n1 comes back (same run): it is not a member, and rejoins.
	rep = c.heartbeatOnce(l, "n1", 1)
	if rep.Member || rep.LeaseMs != 0 {
		t.Errorf("reply to a removed node = %v; want no membership or lease", rep)
	}
	c.waitConfig(l, "e5 [n2] +[n1]")
	w.waitEpoch(5)

	if got, want := w.got(), []uint64{1, 2, 3, 4, 5}; !slices.Equal(got, want) {
		t.Errorf("watch delivered epochs %v, want %v", got, want)
	}
}

// statusProblems checks every master's Status: its Raft state and the
// leader; and the leader's view of the health of the nodes, which must be
// the members, heartbeating and leased.
func (c *cluster) statusProblems(nodes ...string) error {
	leader, err := c.currentLeader()
	if err != nil {
		return err
	}
	for i, m := range c.masters {
		if m == nil {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.client(i).Status(ctx, &api.MasterStatusRequest{})
		cancel()
		if err != nil {
			return fmt.Errorf("Status of %s: %w", c.peers[i].ID, err)
		}
		wantState := "Follower"
		if i == leader {
			wantState = "Leader"
		}
		if st.RaftState != wantState || st.Id != c.peers[i].ID || st.LeaderId != c.peers[leader].ID ||
			st.LeaderAddr != c.peers[leader].Addr || st.Term == 0 || st.AppliedIndex == 0 || st.UptimeMs <= 0 {
			return fmt.Errorf("Status of %s = %v; want raft_state %s, leader %s", c.peers[i].ID, st, wantState, c.peers[leader].ID)
		}
		if st.Config.GetEpoch() != m.Config().Epoch {
			return fmt.Errorf("Status of %s shows epoch %d, config has %d", c.peers[i].ID, st.Config.GetEpoch(), m.Config().Epoch)
		}
		if i != leader {
			if len(st.Nodes) != 0 {
				return fmt.Errorf("follower %s reports node health %v; only the leader knows it", c.peers[i].ID, st.Nodes)
			}
			continue
		}
		var ids []string
		for _, h := range st.Nodes {
			ids = append(ids, h.Id)
			if h.LastHeartbeatMs < 0 || h.LastHeartbeatMs >= leaseTime.Milliseconds() || !h.Leased || h.Role != api.Role_MIDDLE {
				return fmt.Errorf("leader's health of %s = %v; want a recent heartbeat and a lease", h.Id, h)
			}
		}
		if !slices.Equal(ids, nodes) {
			return fmt.Errorf("leader reports health of %v, want %v", ids, nodes)
		}
	}
	return nil
}

// TestMasterHeartbeatForwarding checks that any master answers: a
// follower forwards a heartbeat to the leader and relays its answer, but
// does not bounce one that was already forwarded; and that a heartbeat
// without an id or address is refused.
func TestMasterHeartbeatForwarding(t *testing.T) {
	c := newCluster(t, 3)
	l := c.waitLeader()

	// A follower forwards and relays; the leader that answered says so.
	eventually(t, "a heartbeat answered through a follower", func() error {
		l, err := c.currentLeader()
		if err != nil {
			return err
		}
		f := c.follower(l)
		rep, err := c.client(f).Heartbeat(callCtx(t), &api.HeartbeatRequest{Id: "n1", Addr: "n1.test:7000", Incarnation: 1})
		if err != nil {
			return fmt.Errorf("heartbeat to follower %s: %w", c.peers[f].ID, err)
		}
		if rep.LeaderId != c.peers[l].ID || rep.LeaderAddr != c.peers[l].Addr {
			return fmt.Errorf("forwarded heartbeat answered by %s at %s, want the leader %s", rep.LeaderId, rep.LeaderAddr, c.peers[l].ID)
		}
		return nil
	})
	c.waitConfig(l, "e1 [n1]")
	eventually(t, "a member's forwarded heartbeat to earn a lease", func() error {
		l, err := c.currentLeader()
		if err != nil {
			return err
		}
		rep, err := c.client(c.follower(l)).Heartbeat(callCtx(t), &api.HeartbeatRequest{Id: "n1", Addr: "n1.test:7000", Incarnation: 1})
		if err != nil || !rep.Member || rep.LeaseMs != leaseTime.Milliseconds() || rep.Config.GetEpoch() != 1 {
			return fmt.Errorf("forwarded heartbeat of a member = %v, %v; want membership, a lease and epoch 1", rep, err)
		}
		return nil
	})

	// An already forwarded heartbeat that reaches a follower is refused,
	// not bounced on; the leader answers it.
	forwarded := func() context.Context {
		return metadata.AppendToOutgoingContext(callCtx(t), forwardedKey, "m-elsewhere")
	}
	req := &api.HeartbeatRequest{Id: "n1", Addr: "n1.test:7000", Incarnation: 1}
	eventually(t, "a forwarded heartbeat refused by a follower, answered by the leader", func() error {
		l, err := c.currentLeader()
		if err != nil {
			return err
		}
		f := c.follower(l)
		if _, err := c.client(f).Heartbeat(forwarded(), req); status.Code(err) != codes.Unavailable {
			return fmt.Errorf("forwarded heartbeat at follower %s: %v, want Unavailable", c.peers[f].ID, err)
		}
		if _, err := c.client(l).Heartbeat(forwarded(), req); err != nil {
			return fmt.Errorf("forwarded heartbeat at the leader %s: %w", c.peers[l].ID, err)
		}
		return nil
	})

	for _, req := range []*api.HeartbeatRequest{{Addr: "x:1", Incarnation: 1}, {Id: "n9", Incarnation: 1}} {
		for i := range c.masters {
			if _, err := c.client(i).Heartbeat(callCtx(t), req); status.Code(err) != codes.InvalidArgument {
				t.Errorf("heartbeat %v at %s: %v, want InvalidArgument", req, c.peers[i].ID, err)
			}
		}
	}
}

// TestMasterLeaderFailover checks that when the leader stops, one of the
// other two is elected with the configuration intact; that the new leader
// removes a silent node only once it has led for the failure timeout,
// while a node that keeps heartbeating (through whichever master answers)
// stays; and that the stopped master, restarted from its data dir, rejoins
// with the same configuration.
func TestMasterLeaderFailover(t *testing.T) {
	c := newCluster(t, 3)
	l := c.waitLeader()
	n1 := c.startNode("n1", 1, c.follower(l)) // through a follower: forwarded
	c.waitConfig(l, "e1 [n1]")
	n2 := c.startNode("n2", 1, l)
	n2.setLinked(true)
	c.waitConfig(l, "e3 [n1 n2]")
	w := c.watch(c.follower(l), 0)
	w.waitEpoch(3)

	// n2 goes silent as the leader stops.
	n2.stop()
	c.stop(l)
	nl := c.waitLeader()
	since := leaderSince(c.masters[nl])
	cfg := c.masters[nl].Config()
	if time.Since(since) < failTimeout && cfg.String() != "e3 [n1 n2]" {
		t.Errorf("new leader %s took office with %v, want e3 [n1 n2]", c.peers[nl].ID, cfg)
	}
	t.Logf("new leader %s after %s", c.peers[nl].ID, c.peers[l].ID)

	removed := c.waitConfig(nl, "e4 [n1]")
	if d := removed.Sub(since); d < failTimeout {
		t.Errorf("new leader removed n2 %v after taking office, before the failure timeout %v", d, failTimeout)
	} else {
		t.Logf("n2 removed %v after the new leader took office", d)
	}
	w.waitEpoch(4)
	if got := w.got(); !slices.Equal(got, []uint64{3, 4}) {
		t.Errorf("watch across the failover delivered %v, want [3 4]", got)
	}

	// The old leader comes back from its data dir and catches up.
	c.restart(l)
	waitFor(t, settle, "restarted master to apply e4", func() bool {
		return c.masters[l].Config().String() == "e4 [n1]"
	})
	if got := c.waitLeader(); got != nl {
		t.Logf("leadership moved to %s after the restart", c.peers[got].ID)
		nl = got
	}
	// The connection to the restarted master may be backing off: wait.
	st, err := c.client(l).Status(callCtx(t), &api.MasterStatusRequest{}, grpc.WaitForReady(true))
	if err != nil || st.Config.GetEpoch() != 4 || st.RaftState == "Shutdown" {
		t.Errorf("Status of the restarted master = %v, %v", st, err)
	}

	// n1 heartbeated throughout and is still the chain.
	if got := c.masters[nl].Config().String(); got != "e4 [n1]" {
		t.Errorf("config after failover = %s, want e4 [n1]", got)
	}
	n1.stop()
}

// TestMasterFullRestart checks that the configuration survives a restart
// of every master, from a Raft snapshot or the log, and that the group
// carries on from it: nobody is removed for the time it was down, and a
// joining node is still appended once linked.
func TestMasterFullRestart(t *testing.T) {
	c := newCluster(t, 3)
	l := c.waitLeader()
	c.startNode("n1", 1, l)
	c.waitConfig(l, "e1 [n1]")
	n2 := c.startNode("n2", 1, l)
	c.waitConfig(l, "e2 [n1] +[n2]")

	// Master 0 restarts from a snapshot, the others from the log.
	if err := c.masters[0].raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	c.stopAll()
	for i := range c.masters {
		c.restart(i)
	}
	l = c.waitLeader()
	since := leaderSince(c.masters[l])
	c.waitConfig(l, "e2 [n1] +[n2]")
	// The nodes heartbeat on through the restart: a full failure timeout
	// under the new leader takes nobody out.
	time.Sleep(time.Until(since.Add(failTimeout + 5*hbPeriod)))
	if got := c.masters[l].Config().String(); got != "e2 [n1] +[n2]" {
		t.Fatalf("config after the restart = %s, want e2 [n1] +[n2]", got)
	}
	n2.setLinked(true)
	c.waitConfig(l, "e3 [n1 n2]")
}

// TestMasterReplacedWithEmptyDataDir checks the replacement of a lost
// master machine: a master that comes back at its old addresses with an
// empty data dir (a new machine) bootstraps with the same peers, which is
// the same first log entry the group started from, so the leader brings it
// up to date (from a snapshot here) and it serves the current
// configuration; the group goes on deciding with it.
func TestMasterReplacedWithEmptyDataDir(t *testing.T) {
	c := newCluster(t, 3)
	l := c.waitLeader()
	c.startNode("n1", 1, l)
	c.waitConfig(l, "e1 [n1]")
	n2 := c.startNode("n2", 1, l)
	c.waitConfig(l, "e2 [n1] +[n2]")
	if err := c.masters[l].raft.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}

	lost := c.follower(l)
	c.stop(lost)
	if err := os.RemoveAll(c.dirs[lost]); err != nil {
		t.Fatal(err)
	}
	c.restart(lost)
	waitFor(t, settle, "the replaced master to apply e2", func() bool {
		return c.masters[lost].Config().String() == "e2 [n1] +[n2]"
	})
	n2.setLinked(true)
	c.waitConfig(c.waitLeader(), "e3 [n1 n2]")
	// It can lead: stop the leader, so that the replaced master and the
	// third one elect one of them with the configuration intact.
	l = c.waitLeader()
	if l != lost {
		c.stop(l)
		nl := c.waitLeader()
		if got := c.masters[nl].Config().String(); got != "e3 [n1 n2]" {
			t.Errorf("after the leader stopped, %s has %s, want e3 [n1 n2]", c.peers[nl].ID, got)
		}
	}
}

// TestNewRejectsBadOptions checks that New refuses an id that is not
// among the peers and Raft timings that hashicorp/raft refuses.
func TestNewRejectsBadOptions(t *testing.T) {
	peers := []Peer{{ID: "m1", Addr: "127.0.0.1:1", RaftAddr: freeAddr(t)}}
	if m, err := New(Options{ID: "m9", Peers: peers, DataDir: t.TempDir()}); err == nil {
		m.Stop()
		t.Error("New accepted an id not among the peers")
	}
	if m, err := New(Options{ID: "m1", Peers: peers, DataDir: t.TempDir()}); err == nil {
		m.Stop()
		t.Error("New accepted zero Raft timings")
	}
}

// TestMasterStopWithoutStart checks that a master that was created but
// never started stops promptly and frees its data dir for the next run.
func TestMasterStopWithoutStart(t *testing.T) {
	c := &cluster{t: t, log: &testLog{t: t}, masters: make([]*Master, 1)}
	t.Cleanup(c.log.close)
	c.peers = []Peer{{ID: "m1", Addr: freeAddr(t), RaftAddr: freeAddr(t)}}
	c.dirs = []string{t.TempDir()}
	for range 2 {
		m, err := New(c.options(0))
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		stopBounded(t, "m1", m)
	}
}

// fakeWatchStream is the server side of a Watch stream: Send blocks until
// the test takes the configuration from sent.
type fakeWatchStream struct {
	grpc.ServerStream // nil: Watch uses only Send and Context
	ctx               context.Context
	sent              chan *api.ChainConfig
}

func (s *fakeWatchStream) Send(c *api.ChainConfig) error {
	select {
	case s.sent <- c:
		return nil
	case <-s.ctx.Done():
		return s.ctx.Err()
	}
}

func (s *fakeWatchStream) Context() context.Context { return s.ctx }

// startWatch runs masterServer.Watch on a Master that has only an FSM.
func startWatch(t *testing.T, m *Master, after uint64) (*fakeWatchStream, <-chan error) {
	ctx, cancel := context.WithCancel(context.Background())
	s := &fakeWatchStream{ctx: ctx, sent: make(chan *api.ChainConfig)}
	errc, done := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(done)
		errc <- (&masterServer{m: m}).Watch(&api.WatchRequest{AfterEpoch: after}, s)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(stopBound):
			t.Error("Watch did not return after its stream ended")
		}
	})
	return s, errc
}

// next returns the next configuration the watch sends, or nil if it sends
// none within d.
func (s *fakeWatchStream) next(d time.Duration) *api.ChainConfig {
	select {
	case c := <-s.sent:
		return c
	case <-time.After(d):
		return nil
	}
}

// fsmOnlyMaster is a Master with just the parts Watch uses.
func fsmOnlyMaster(t *testing.T, cfg Config) *Master {
	m := &Master{fsm: testFSM(t), stop: make(chan struct{}), guard: auth.NewGuard(auth.GuardOptions{})}
	m.fsm.set(cfg)
	return m
}

// TestWatchSendsNewerConfigsInOrder checks the Watch contract the chain
// relies on: the current configuration first if it is newer than
// after_epoch, then newer ones in increasing order, ending at the latest;
// and the stream ends when the master stops.
func TestWatchSendsNewerConfigsInOrder(t *testing.T) {
	m := fsmOnlyMaster(t, conf(3, ms(mem("a", 1)), nil))
	early, _ := startWatch(t, m, 1)
	if c := early.next(settle); c.GetEpoch() != 3 || len(c.GetChain()) != 1 || c.GetChain()[0].GetId() != "a" {
		t.Fatalf("watch after epoch 1 first sent %v, want e3 [a]", c)
	}
	current, errc := startWatch(t, m, 3)
	if c := current.next(50 * time.Millisecond); c != nil {
		t.Fatalf("watch after the current epoch sent %v", c)
	}
	for e := uint64(4); e <= 8; e++ {
		m.fsm.set(conf(e, ms(mem("a", 1)), nil))
	}
	for _, s := range []*fakeWatchStream{early, current} {
		var got []uint64
		for c := s.next(settle); c != nil; c = s.next(50 * time.Millisecond) {
			got = append(got, c.Epoch)
		}
		if len(got) == 0 || got[len(got)-1] != 8 || !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Errorf("watch sent epochs %v; want increasing, ending at 8", got)
		}
	}
	close(m.stop)
	select {
	case err := <-errc:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("Watch on a stopping master returned %v, want Unavailable", err)
		}
	case <-time.After(settle):
		t.Fatal("Watch did not end when the master stopped")
	}
}

// TestHeartbeatNeedsIDAndAddr checks that a heartbeat without the node's
// id or address is refused before anything else is looked at.
func TestHeartbeatNeedsIDAndAddr(t *testing.T) {
	s := &masterServer{m: &Master{guard: auth.NewGuard(auth.GuardOptions{})}}
	for _, req := range []*api.HeartbeatRequest{{}, {Id: "n1"}, {Addr: "n1:1"}} {
		if _, err := s.Heartbeat(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("Heartbeat(%v) = %v, want InvalidArgument", req, err)
		}
	}
}

var (
	_ io.Writer                                   = (*testLog)(nil)
	_ grpc.ServerStreamingServer[api.ChainConfig] = (*fakeWatchStream)(nil)
)

// soloLeader is a Master with a one-voter in-memory Raft group, acting as
// leader, with no gRPC server and no leader loop: the test calls heartbeat
// and step itself.
func soloLeader(t testing.TB) *Master {
	t.Helper()
	m := &Master{
		opts: Options{ID: "m1", Heartbeat: hbPeriod, FailureTimeout: failTimeout, Lease: leaseTime},
		log:  slog.New(slog.DiscardHandler), self: Peer{ID: "m1", Addr: "m1.test:1"},
		stop: make(chan struct{}), done: make(chan struct{}), kick: make(chan struct{}, 1),
		silent: map[string]uint64{},
		conns:  conns.New(grpc.WithTransportCredentials(insecure.NewCredentials())),
		guard:  auth.NewGuard(auth.GuardOptions{}),
	}
	m.fsm = newFSM(m.log, nil)
	rc := raft.DefaultConfig()
	rc.LocalID = "m1"
	rc.Logger = hclog.NewNullLogger()
	rc.HeartbeatTimeout, rc.ElectionTimeout = 50*time.Millisecond, 50*time.Millisecond
	rc.LeaderLeaseTimeout, rc.CommitTimeout = 50*time.Millisecond, time.Millisecond
	store := raft.NewInmemStore()
	addr, trans := raft.NewInmemTransport("m1")
	servers := raft.Configuration{Servers: []raft.Server{{ID: "m1", Address: addr}}}
	if err := raft.BootstrapCluster(rc, store, store, raft.NewInmemSnapshotStore(), trans, servers); err != nil {
		t.Fatal(err)
	}
	r, err := raft.NewRaft(rc, m.fsm, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatal(err)
	}
	m.raft = r
	t.Cleanup(func() { _ = r.Shutdown().Error() })
	if _, err := m.heartbeat(&api.HeartbeatRequest{Id: "x", Addr: "x:1"}); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("heartbeat before taking office: %v, want ErrNotLeader", err)
	}
	eventually(t, "the solo master to lead", func() error {
		if !m.checkLeadership() {
			return errors.New("not leading")
		}
		return nil
	})
	return m
}

// beat sends node id's heartbeat to m's heartbeat handler.
func beat(t *testing.T, m *Master, id string, inc uint64) *api.HeartbeatReply {
	t.Helper()
	rep, err := m.heartbeat(&api.HeartbeatRequest{Id: id, Addr: id + ".test:7000", Incarnation: inc})
	if err != nil {
		t.Fatalf("heartbeat of %s: %v", id, err)
	}
	return rep
}

// TestLeaderLeases checks the leader's lease rules: only a member of the
// configuration, in the incarnation named there, gets a lease; a
// non-member's heartbeat wakes the leader loop; a member the leader has
// decided to remove gets no lease whatever it sends, and its heartbeats
// no longer count; once the removal commits the decision is forgotten.
func TestLeaderLeases(t *testing.T) {
	m := soloLeader(t)
	lease := leaseTime.Milliseconds()

	if rep := beat(t, m, "a", 1); rep.Member || rep.LeaseMs != 0 || rep.LeaderId != "m1" {
		t.Errorf("non-member's reply = %v, want no membership or lease, leader m1", rep)
	}
	select {
	case <-m.kick:
	default:
		t.Error("a non-member's heartbeat did not wake the leader loop")
	}
	m.step()
	if got := m.Config().String(); got != "e1 [a]" {
		t.Fatalf("after a's heartbeat and a step: %s, want e1 [a]", got)
	}
	if rep := beat(t, m, "a", 1); !rep.Member || rep.LeaseMs != lease || rep.Config.GetEpoch() != 1 {
		t.Errorf("member's reply = %v, want membership and a %d ms lease", rep, lease)
	}
	if rep := beat(t, m, "a", 2); rep.Member || rep.LeaseMs != 0 {
		t.Errorf("reply to another incarnation of a member = %v, want no membership or lease", rep)
	}
	beat(t, m, "a", 1)
	beat(t, m, "b", 1)
	m.step()
	if got := m.Config().String(); got != "e2 [a] +[b]" {
		t.Fatalf("after b's heartbeat and a step: %s, want e2 [a] +[b]", got)
	}

	// b falls silent (its report is backdated) and the leader has led for
	// long: the next step removes it. Until the removal commits b is
	// doomed: its heartbeats earn no lease and are not recorded.
	m.mu.Lock()
	r, _ := m.leader.Report("b")
	r.At = time.Now().Add(-2 * failTimeout)
	m.leader.reports["b"] = r
	m.leader.since = r.At
	m.leader.removing["b"] = 1 // as Leader.Decide does before step proposes the removal
	m.mu.Unlock()
	if rep := beat(t, m, "b", 1); !rep.Member || rep.LeaseMs != 0 {
		t.Errorf("doomed member's reply = %v, want membership but no lease", rep)
	}
	m.mu.Lock()
	recorded := m.leader.reports["b"].At != r.At
	m.mu.Unlock()
	if recorded {
		t.Error("a doomed member's heartbeat was recorded")
	}
	for _, h := range m.nodeHealth() {
		if h.Id == "b" && h.Leased {
			t.Errorf("health of doomed b = %v, want no lease", h)
		}
	}
	beat(t, m, "a", 1)
	m.step()
	if got := m.Config().String(); got != "e3 [a]" {
		t.Fatalf("after b's silence and a step: %s, want e3 [a]", got)
	}
	m.mu.Lock()
	still := m.leader.Doomed("b")
	m.mu.Unlock()
	if still {
		t.Error("b still marked for removal after its removal committed")
	}
	// Back after removal: not a member, no lease, and asks to join again.
	if rep := beat(t, m, "b", 1); rep.Member || rep.LeaseMs != 0 {
		t.Errorf("removed node's reply = %v, want no membership or lease", rep)
	}
	m.step()
	if got := m.Config().String(); got != "e4 [a] +[b]" {
		t.Errorf("after the removed node's heartbeat and a step: %s, want e4 [a] +[b]", got)
	}
}
