package chain

// The chain harness: replicas on a deterministic in-memory network, driven
// by a simulated clock, with a simulated master and simulated clients whose
// operations are recorded for the linearizability checker.
//
// Everything happens on one goroutine, in the order of a single event queue
// keyed by (simulated time, insertion order); all randomness comes from one
// seeded math/rand/v2 source. The same seed therefore replays the same run,
// event for event.
//
// Time is in simulated microseconds (c.now); replicas see unix milliseconds
// (nowMs: baseMs + now/1000).

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/checker"
)

const (
	ms        = int64(1000) // one simulated millisecond, in µs
	tickEvery = 10 * ms     // every live replica ticks this often
	// baseMs is the simulated wall clock at c.now == 0 (2026-01-01 UTC).
	baseMs = int64(1_767_225_600_000)
	// settleLimit bounds how long a run may take to quiesce once faults
	// stop; a run that does not is a liveness failure.
	settleLimit = 20_000 * ms
)

// simOptions parameterise a cluster. Durations are simulated µs; a
// [2]int64 is a uniform [min, max] range.
type simOptions struct {
	Seed        uint64
	Nodes       int      // initial chain length
	NetDelay    [2]int64 // one chain message
	ClientDelay [2]int64 // a client request or reply, one way
	ConfigDelay [2]int64 // master push of a configuration to one node
	// DetectDelay is how long the master takes to notice a crash.
	DetectDelay [2]int64
	// PeerDownDelay is how long both ends of a broken stream take to
	// notice it (PeerDown); the link works again from then on.
	PeerDownDelay int64
	// ClientTimeout is how long a client waits for one attempt.
	ClientTimeout int64
	// GiveUpAfter is how long a client retries one request before it gives
	// up (records an unknown outcome); 0 means never.
	GiveUpAfter int64
	// DropRate is the probability that a chain message breaks its stream;
	// ClientLoss that a client request or reply is lost. Both apply only
	// while faults are on.
	DropRate   float64
	ClientLoss float64
	// MaxBatch and HelloRetryTicks go to the replicas' Options.
	MaxBatch        int
	HelloRetryTicks int
	// ClockSkew is the range of each node's clock offset, in ms: the head
	// decides closes by its own clock.
	ClockSkew [2]int64
	// CompactEvery makes every node compact its log as the edge does
	// after each snapshot: every CompactEvery updates, to the previous
	// snapshot's seq (0: never).
	CompactEvery int
	// WaitCloses makes finish wait until every auction has closed.
	WaitCloses bool
	// Policy replaces the scripted master by the master's own policy
	// (master.Leader, master.Decide, master.Apply) on simulated
	// heartbeats, with leases (simmaster_test.go): it removes silent
	// nodes, partitioned and paused ones included, adds joiners and
	// grants leases, and can fail over.
	Policy bool
	// With Policy: the heartbeat period, the master's failure timeout and
	// lease, how long a master failover leaves the group without a leader,
	// and the most a node's clock rate may differ from real time (0.01:
	// 1%).
	HeartbeatEvery, FailureTimeout, Lease int64
	ElectionDelay                         [2]int64
	ClockDrift                            float64
	// LeaseOverrunMs is a deliberate bug: every tail serves reads that
	// long past its lease (the simulation's own test).
	LeaseOverrunMs int64
	// FsyncDelay, when set, makes every replica durable asynchronously
	// (Options.AsyncDurable), as the edge with a data dir is: what a Ready
	// applied is reported Persisted this long after it, in order.
	FsyncDelay [2]int64
	// Limits go to the replicas' Options (a head trims the state to them);
	// Archive gives every node an archive of retired auctions that
	// survives its restarts; ChunkBytes is the replicas' snapshot chunk
	// size (0: the default).
	Limits     auction.Limits
	Archive    bool
	ChunkBytes int
	// Log writes replica and harness logs to stderr (-simlog); Trace adds
	// every chain message (-simtrace).
	Log, Trace bool
}

func defaultOptions() simOptions {
	return simOptions{
		Seed:          1,
		Nodes:         3,
		NetDelay:      [2]int64{100, 2 * ms},
		ClientDelay:   [2]int64{100, 1500},
		ConfigDelay:   [2]int64{0, 5 * ms},
		DetectDelay:   [2]int64{30 * ms, 60 * ms},
		PeerDownDelay: 2 * ms,
		ClientTimeout: 40 * ms,
		GiveUpAfter:   0,
		CompactEvery:  16,
		// The defaults of config.yaml.
		HeartbeatEvery: 50 * ms,
		FailureTimeout: 500 * ms,
		Lease:          200 * ms,
		ElectionDelay:  [2]int64{300 * ms, 800 * ms},
		Log:            *flagSimLog || *flagSimTrace,
		Trace:          *flagSimTrace,
	}
}

// ---------------------------------------------------------------------------
// Events.

type simEvent struct {
	at, seq int64
	counted bool // counts as pending work for quiescence (ticks do not)
	fn      func()
}

type simEventHeap []*simEvent

func (h simEventHeap) Len() int { return len(h) }
func (h simEventHeap) Less(i, j int) bool {
	return h[i].at < h[j].at || (h[i].at == h[j].at && h[i].seq < h[j].seq)
}
func (h simEventHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *simEventHeap) Push(x any)   { *h = append(*h, x.(*simEvent)) }
func (h *simEventHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// ---------------------------------------------------------------------------
// The cluster.

// simNode is one replica and what the harness knows about it.
type simNode struct {
	id      string
	r       *Replica
	crashed bool
	skewMs  int64   // this node's clock offset
	rate    float64 // this node's clock rate (1: real time)
	// incarnation is this run's number (Policy); run counts the node's
	// runs, so that a crashed run's ticks and heartbeats stop for good.
	incarnation uint64
	run         int
	// pausedUntil: until then the node runs nothing (a stop-the-world
	// pause); what reaches it waits, in order.
	pausedUntil int64
	// fsyncAt is when the node's last simulated fsync ends (FsyncDelay):
	// they end in order.
	fsyncAt int64
	// caughtUpAt is when the node last became caught up (-1: it is not).
	caughtUpAt int64
	rec        nodeRecord
	snapAt     uint64 // applied at the last simulated snapshot (CompactEvery)
	archive    *memArchive
}

// nodeRecord is the sequence of updates a node applied, from Ready().Applied.
// A node that installed a snapshot starts its record at the snapshot.
type nodeRecord struct {
	base      uint64 // sequence number of the state the record starts from
	ups       []Applied
	snapshots int
}

func (r *nodeRecord) last() uint64 { return r.base + uint64(len(r.ups)) }

func (r *nodeRecord) at(seq uint64) (Applied, bool) {
	if seq <= r.base || seq > r.last() {
		return Applied{}, false
	}
	return r.ups[seq-r.base-1], true
}

// netLink is one directed link between two chain nodes.
type netLink struct {
	from, to    string
	gen         uint64 // bumped when the stream breaks: in-flight messages are lost
	lastAt      int64  // arrival time of the last message sent (FIFO)
	brokenUntil int64  // a broken stream loses everything until both ends notice
	held        bool   // scenario control: queue instead of sending
	queue       []*api.ChainMessage
}

// ackRecord is an outcome a client received for a sequenced request.
type ackRecord struct {
	client string
	cmd    *api.Command
	res    auction.Result
}

type handleRef struct {
	op      *clientOp
	attempt int
	node    string
}

type simCluster struct {
	t    testing.TB
	opts simOptions
	rng  *rand.Rand
	log  *slog.Logger

	now     int64
	seq     int64
	events  simEventHeap
	pending int // counted events not yet run
	steps   int // events run

	nodes map[string]*simNode
	order []*simNode // creation order: every iteration over nodes uses it

	links  map[[2]string]*netLink
	cuts   map[[2]string]int64 // partitioned pair (sorted) -> heal time
	faults bool                // random drops and client losses are on

	master     simMaster
	pm         policyMaster // with Policy
	clients    []*simClient
	rec        *checker.Recorder
	handles    map[Handle]handleRef
	nextHandle Handle
	acks       []ackRecord
	auctions   []string // ids opened by clients, in order

	// beyondFaultModel is set by a test that crashes every caught-up chain
	// member on purpose: acknowledged updates may then be gone, and the
	// chain must fail safe (refuse service) rather than stay live. The
	// invariants that need a surviving copy, (b) and liveness, are skipped;
	// the others, and porcupine, still hold.
	beyondFaultModel bool

	// maxCommitted is the highest sequence number any node (crashed ones
	// included) has ever considered committed, and which node did.
	maxCommitted   uint64
	maxCommittedAt string
	// committedAt is when each seq was first committed at some node.
	committedAt map[uint64]int64

	violations int
	finished   bool
	quiesced   bool
}

// simMaster is the simulated master: the latest configuration, pushed to
// live nodes with a delay. It removes only crashed nodes, and only once
// every partition has healed (leases come later); it promotes a joining
// node once the node has applied as much as the tail.
type simMaster struct {
	cfg      *api.ChainConfig
	nextNode int
	changes  int
	// noPromote stops automatic promotion of joiners (scenario control).
	noPromote bool
	// heldPush queues configuration pushes to a node (scenario control):
	// the node gets them, in order, when released.
	heldPush map[string][]*api.ChainConfig
}

// newCluster builds a cluster with opts.Nodes replicas and the first
// configuration pushed, and registers CheckInvariants to run when t ends.
func newCluster(t testing.TB, opts simOptions) *simCluster {
	t.Helper()
	c := &simCluster{
		t:       t,
		opts:    opts,
		rng:     rand.New(rand.NewPCG(opts.Seed, 0x9e3779b97f4a7c15)),
		nodes:   map[string]*simNode{},
		links:   map[[2]string]*netLink{},
		cuts:    map[[2]string]int64{},
		faults:  true,
		rec:     checker.NewRecorder(),
		handles: map[Handle]handleRef{},

		committedAt: map[uint64]int64{},
	}
	if opts.Log {
		c.log = slog.New(&simHandler{c: c, inner: slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{
			Level: slog.LevelDebug,
			ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
				if a.Key == slog.TimeKey && len(groups) == 0 {
					return slog.Attr{}
				}
				return a
			},
		})})
	} else {
		c.log = slog.New(slog.DiscardHandler)
	}
	var chain []string
	for range opts.Nodes {
		chain = append(chain, c.addNode())
	}
	if opts.Policy {
		c.bootstrapPolicy(chain)
	} else {
		c.setConfig(chain, nil, "bootstrap")
	}
	t.Cleanup(func() { CheckInvariants(t, c) })
	return c
}

// simHandler stamps log records with the simulated time.
type simHandler struct {
	c     *simCluster
	inner slog.Handler
}

func (h *simHandler) Enabled(ctx context.Context, l slog.Level) bool { return h.inner.Enabled(ctx, l) }
func (h *simHandler) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(slog.String("sim", fmt.Sprintf("%.3fms", float64(h.c.now)/1000)))
	return h.inner.Handle(ctx, r)
}
func (h *simHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &simHandler{c: h.c, inner: h.inner.WithAttrs(as)}
}
func (h *simHandler) WithGroup(g string) slog.Handler {
	return &simHandler{c: h.c, inner: h.inner.WithGroup(g)}
}

// tracef logs a chain message event (-simtrace).
func (c *simCluster) tracef(what string, m *api.ChainMessage) {
	if c.opts.Trace {
		c.log.Debug(fmt.Sprintf("%s %s->%s e%d %s", what, m.From, m.To, m.Epoch, describeMessage(m)), "node", "net")
	}
}

func describeMessage(m *api.ChainMessage) string {
	switch b := m.GetBody().(type) {
	case *api.ChainMessage_Forward:
		f := b.Forward
		s := "forward"
		if f.Handshake {
			s = fmt.Sprintf("handshake(pred_committed %d)", f.PredCommitted)
		}
		if c := f.Chunk; c != nil {
			s += fmt.Sprintf(" snapshot@%d chunk %d", c.Seq, c.Index)
		}
		if n := len(f.Updates); n > 0 {
			s += fmt.Sprintf(" [%d..%d]", f.Updates[0].Seq, f.Updates[n-1].Seq)
		}
		return s
	case *api.ChainMessage_Ack:
		return fmt.Sprintf("ack %d", b.Ack.Seq)
	case *api.ChainMessage_Hello:
		return fmt.Sprintf("hello(last %d, committed %d)", b.Hello.LastSeq, b.Hello.Committed)
	case *api.ChainMessage_SnapshotAck:
		return fmt.Sprintf("snapshot ack %d@%d", b.SnapshotAck.Index, b.SnapshotAck.Seq)
	}
	return "?"
}

func (c *simCluster) logf(format string, args ...any) {
	c.log.Info(fmt.Sprintf(format, args...), "node", "sim")
}

// violation reports a broken invariant or contract, with the seed.
func (c *simCluster) violation(format string, args ...any) {
	c.t.Helper()
	c.violations++
	if c.violations <= 20 {
		c.t.Errorf("seed %d at %.3fms: %s", c.opts.Seed, float64(c.now)/1000, fmt.Sprintf(format, args...))
	}
	c.logf("VIOLATION: "+format, args...)
}

func (c *simCluster) nowMs() int64 { return baseMs + c.now/1000 }

// clockOf is a node's clock, in unix ms: offset by its skew, and running
// at its rate.
func (c *simCluster) clockOf(n *simNode) int64 {
	if n.rate == 1 {
		return c.nowMs() + n.skewMs
	}
	return baseMs + n.skewMs + int64(float64(c.now)*n.rate)/1000
}

func (c *simCluster) between(r [2]int64) int64 {
	if r[1] <= r[0] {
		return r[0]
	}
	return r[0] + c.rng.Int64N(r[1]-r[0]+1)
}

// at schedules fn at time at; counted events are pending work.
func (c *simCluster) at(at int64, counted bool, fn func()) {
	c.seq++
	if counted {
		c.pending++
	}
	heap.Push(&c.events, &simEvent{at: max(at, c.now), seq: c.seq, counted: counted, fn: fn})
}

// after schedules counted work d µs from now.
func (c *simCluster) after(d int64, fn func()) { c.at(c.now+d, true, fn) }

// step runs the next event.
func (c *simCluster) step() {
	e := heap.Pop(&c.events).(*simEvent)
	c.now = e.at
	if e.counted {
		c.pending--
	}
	c.steps++
	e.fn()
}

// runFor runs events for d µs of simulated time.
func (c *simCluster) runFor(d int64) {
	end := c.now + d
	for len(c.events) > 0 && c.events[0].at <= end {
		c.step()
	}
	c.now = end
}

// runUntil runs until cond holds (checked after every event) or limit µs
// pass; it reports whether cond held.
func (c *simCluster) runUntil(cond func() bool, limit int64) bool {
	end := c.now + limit
	for !cond() {
		if len(c.events) == 0 || c.events[0].at > end {
			c.now = max(c.now, end)
			return cond()
		}
		c.step()
	}
	return true
}

// ---------------------------------------------------------------------------
// Nodes.

// addNode creates a fresh replica (a new id) with its own tick schedule.
func (c *simCluster) addNode() string {
	c.master.nextNode++
	id := fmt.Sprintf("n%d", c.master.nextNode)
	n := &simNode{id: id, skewMs: c.between(c.opts.ClockSkew), rate: 1, caughtUpAt: -1}
	if d := c.opts.ClockDrift; d > 0 {
		n.rate = 1 - d + 2*d*c.rng.Float64()
	}
	n.r = c.newReplica(id)
	if c.opts.Archive {
		n.archive = newMemArchive()
		n.r.opts.Archive = n.archive
	}
	c.nodes[id] = n
	c.order = append(c.order, n)
	c.startRun(n)
	if len(c.order) == 1 {
		var masterTick func()
		masterTick = func() {
			if c.opts.Policy {
				c.policyTick()
			} else {
				c.masterTick()
			}
			c.checkChainOrder()
			c.at(c.now+tickEvery, false, masterTick)
		}
		c.at(c.now+tickEvery/2, false, masterTick)
	}
	return id
}

func (c *simCluster) newReplica(id string) *Replica {
	r := NewReplica(Options{ID: id, MaxBatch: c.opts.MaxBatch, HelloRetryTicks: c.opts.HelloRetryTicks,
		Leased: c.opts.Policy, AsyncDurable: c.opts.FsyncDelay[1] > 0, Logger: c.log, Limits: c.opts.Limits,
		SnapshotChunkBytes: c.opts.ChunkBytes})
	r.readLeaseOverrunMs = c.opts.LeaseOverrunMs
	return r
}

// startRun starts a run of n's process: its ticks and, with Policy, its
// heartbeats, until it crashes.
func (c *simCluster) startRun(n *simNode) {
	n.run++
	run := n.run
	alive := func() bool { return !n.crashed && n.run == run }
	var tick func()
	tick = func() {
		if !alive() {
			return
		}
		if c.now >= n.pausedUntil {
			n.r.Tick(c.clockOf(n))
			c.drain(n)
		}
		c.at(c.now+tickEvery, false, tick)
	}
	c.at(c.now+c.rng.Int64N(tickEvery), false, tick)
	if c.opts.Policy {
		n.incarnation = c.rng.Uint64() | 1
		var beat func()
		beat = func() {
			if !alive() {
				return
			}
			if c.now >= n.pausedUntil {
				c.heartbeat(n)
			}
			c.at(c.now+c.opts.HeartbeatEvery, false, beat)
		}
		c.at(c.now+c.rng.Int64N(c.opts.HeartbeatEvery), false, beat)
	}
}

// onNode runs fn at node n as soon as n runs: at once, later when n is
// paused, never when it has crashed.
func (c *simCluster) onNode(n *simNode, fn func()) {
	switch {
	case n == nil || n.crashed:
	case c.now < n.pausedUntil:
		c.at(n.pausedUntil, true, func() { c.onNode(n, fn) })
	default:
		fn()
	}
}

func (c *simCluster) node(id string) *simNode {
	n := c.nodes[id]
	if n == nil {
		c.t.Fatalf("no node %q", id)
	}
	return n
}

// drain hands everything the replica produced to the network, the clients
// and the node's record. The harness calls it after every input.
func (c *simCluster) drain(n *simNode) {
	has := n.r.HasReady()
	rd := n.r.Ready()
	if n.archive != nil {
		n.archive.apply(rd)
	}
	if !has && (len(rd.Messages) > 0 || len(rd.Replies) > 0 || len(rd.Applied) > 0) {
		c.violation("%s: HasReady() was false but Ready() returned %d messages, %d replies, %d applied",
			n.id, len(rd.Messages), len(rd.Replies), len(rd.Applied))
	}
	if n.r.HasReady() {
		c.violation("%s: HasReady() still true right after Ready()", n.id)
	}
	if rd.StateReplaced {
		// A snapshot replaced the state: the record starts over at it.
		base := n.r.Applied()
		if len(rd.Applied) > 0 {
			base = rd.Applied[0].Update.GetSeq() - 1
		}
		n.rec = nodeRecord{base: base, snapshots: n.rec.snapshots + 1}
	}
	for _, a := range rd.Applied {
		seq := a.Update.GetSeq()
		if seq != n.rec.last()+1 {
			if seq <= n.rec.last() {
				c.violation("%s applied seq %d again (its record ends at %d)", n.id, seq, n.rec.last())
			}
			// A snapshot was installed (or the state was reset): the
			// record starts over just before this update.
			n.rec = nodeRecord{base: seq - 1, snapshots: n.rec.snapshots + 1}
		}
		n.rec.ups = append(n.rec.ups, a)
	}
	if n.r.Applied() != n.rec.last() {
		// A snapshot with no update after it.
		n.rec = nodeRecord{base: n.r.Applied(), snapshots: n.rec.snapshots + 1}
	}
	if n.r.Committed() > n.r.Applied() {
		c.violation("%s: committed %d > applied %d", n.id, n.r.Committed(), n.r.Applied())
	}
	// Compaction as the edge does it: after every CompactEvery updates a
	// "snapshot" is taken and the log is kept from the previous one on.
	if every := uint64(c.opts.CompactEvery); every > 0 && n.r.Applied() >= n.snapAt+every {
		n.r.Compact(n.snapAt)
		n.snapAt = n.r.Applied()
	}
	if n.r.Committed() > c.maxCommitted {
		for seq := c.maxCommitted + 1; seq <= n.r.Committed(); seq++ {
			c.committedAt[seq] = c.now
		}
		c.maxCommitted, c.maxCommittedAt = n.r.Committed(), n.id
	}
	switch caught := n.r.CaughtUp(); {
	case caught && n.caughtUpAt < 0:
		n.caughtUpAt = c.now
	case !caught:
		n.caughtUpAt = -1
	}
	if c.opts.FsyncDelay[1] > 0 && (len(rd.Applied) > 0 || rd.StateReplaced) {
		// The edge's syncer: the updates reach the disk a little later,
		// in order; the process's run must still be the same.
		gen, seq, run := n.r.StateGen(), n.r.Applied(), n.run
		n.fsyncAt = max(c.now+c.between(c.opts.FsyncDelay), n.fsyncAt)
		c.at(n.fsyncAt, true, func() {
			c.onNode(n, func() {
				if n.run == run {
					n.r.Persisted(gen, seq)
					c.drain(n)
				}
			})
		})
	}
	for _, m := range rd.Messages {
		if m.From != n.id {
			c.violation("%s sent a message from %q", n.id, m.From)
		}
		c.sendChain(m)
	}
	for _, rp := range rd.Replies {
		c.checkDurableEverywhere(n, rp)
		c.routeReply(n, rp)
	}
}

// checkDurableEverywhere checks the durability rule at a reply: a client
// hears of a sequenced update only once every member of the head's chain
// (in its epoch) that was caught up when the update committed counts it
// durable.
func (c *simCluster) checkDurableEverywhere(head *simNode, rp Reply) {
	seq := rp.Result.Seq
	if rp.Err != nil || seq == 0 || head.r.Config() == nil {
		return
	}
	for _, m := range head.r.Config().Chain {
		o := c.nodes[m.Id]
		if o == nil || o.crashed || o.r.Epoch() != head.r.Epoch() || o.caughtUpAt < 0 || o.caughtUpAt > c.committedAt[seq] {
			// A member that caught up after seq committed (one just
			// appended) was not among those that had to hold it: the
			// members before it hold it on disk, and it gets it from them.
			continue
		}
		if o.r.Durable() < seq {
			c.violation("%s answered a client for seq %d, which %s has not on disk (durable %d)",
				head.id, seq, o.id, o.r.Durable())
		}
	}
}

// ---------------------------------------------------------------------------
// The network.

func (c *simCluster) link(from, to string) *netLink {
	k := [2]string{from, to}
	l := c.links[k]
	if l == nil {
		l = &netLink{from: from, to: to}
		c.links[k] = l
	}
	return l
}

func pairKey(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

func (c *simCluster) isCut(a, b string) bool {
	heal, ok := c.cuts[pairKey(a, b)]
	return ok && heal > c.now
}

func (c *simCluster) anyCut() bool {
	for _, heal := range c.cuts {
		if heal > c.now {
			return true
		}
	}
	return false
}

// sendChain sends one replication message: FIFO per directed link, with a
// random delay; lost on a cut or broken link; with probability DropRate it
// breaks the link (see breakLink).
func (c *simCluster) sendChain(m *api.ChainMessage) {
	m = proto.Clone(m).(*api.ChainMessage) // the wire: no sharing between nodes
	l := c.link(m.From, m.To)
	switch {
	case c.isCut(m.From, m.To), c.now < l.brokenUntil:
		c.tracef("lost", m)
		return
	case l.held:
		c.tracef("held", m)
		l.queue = append(l.queue, m)
		return
	case c.faults && c.opts.DropRate > 0 && c.rng.Float64() < c.opts.DropRate:
		c.tracef("dropped", m)
		c.breakLink(l, "drop")
		return
	}
	c.deliver(l, m)
}

func (c *simCluster) deliver(l *netLink, m *api.ChainMessage) {
	at := max(c.now+c.between(c.opts.NetDelay), l.lastAt)
	l.lastAt = at
	gen := l.gen
	c.at(at, true, func() {
		if l.gen != gen {
			c.tracef("lost in flight", m)
			return // the stream broke while this was in flight
		}
		n := c.nodes[m.To]
		c.onNode(n, func() {
			if l.gen != gen {
				c.tracef("lost in flight", m)
				return
			}
			c.tracef("deliver", m)
			n.r.Step(m)
			c.drain(n)
		})
	})
}

// breakLink models a broken TCP stream: what is in flight on the link is
// lost, as is everything sent until both ends notice (PeerDownDelay
// later), when each end gets PeerDown for the other and the link works
// again.
func (c *simCluster) breakLink(l *netLink, why string) {
	c.logf("link %s->%s broken (%s)", l.from, l.to, why)
	l.gen++
	l.brokenUntil = c.now + c.opts.PeerDownDelay
	c.after(c.opts.PeerDownDelay, func() {
		c.peerDown(l.from, l.to)
		c.peerDown(l.to, l.from)
	})
}

func (c *simCluster) peerDown(at, peer string) {
	if n := c.nodes[at]; n != nil {
		c.onNode(n, func() {
			n.r.PeerDown(peer)
			c.drain(n)
		})
	}
}

// partition cuts a and b apart for d µs: messages between them are lost,
// in flight or not, and both notice (PeerDown) shortly after the cut.
func (c *simCluster) partition(a, b string, d int64) {
	d = max(d, 2*c.opts.PeerDownDelay)
	k := pairKey(a, b)
	c.cuts[k] = max(c.cuts[k], c.now+d)
	c.logf("partition %s|%s for %.1fms", a, b, float64(d)/1000)
	c.link(a, b).gen++
	c.link(b, a).gen++
	c.after(c.opts.PeerDownDelay, func() {
		c.peerDown(a, b)
		c.peerDown(b, a)
	})
	c.after(d, func() {
		if c.cuts[k] <= c.now {
			delete(c.cuts, k)
			c.logf("partition %s|%s healed", a, b)
		}
	})
}

// hold queues the messages on from->to instead of sending them (scenario
// control); release sends what was queued, in order.
func (c *simCluster) hold(from, to string) { c.link(from, to).held = true }

func (c *simCluster) release(from, to string) {
	l := c.link(from, to)
	l.held = false
	q := l.queue
	l.queue = nil
	for _, m := range q {
		c.deliver(l, m)
	}
}

// crash stops a node forever. Its neighbours' streams break; the master
// notices after DetectDelay and removes it.
func (c *simCluster) crash(id string) {
	n := c.node(id)
	if n.crashed {
		return
	}
	n.crashed = true
	c.logf("CRASH %s (role %v, applied %d)", id, n.r.Role(), n.r.Applied())
	for _, l := range c.links {
		if l.from == id || l.to == id {
			l.queue = nil // a dead process sends nothing more
		}
	}
	c.after(c.opts.PeerDownDelay, func() {
		for _, o := range c.order {
			if o.id != id {
				c.peerDown(o.id, id)
			}
		}
	})
	if c.opts.Policy {
		return // the master notices the silence
	}
	var detect func()
	detect = func() {
		if c.anyCut() {
			// IMPORTANT: without leases, the master must not reconfigure
			// while nodes are partitioned; the partition heals first.
			c.after(tickEvery, detect)
			return
		}
		c.masterRemove(id)
	}
	c.after(c.between(c.opts.DetectDelay), detect)
}

// ---------------------------------------------------------------------------
// The master.

func toMembers(ids []string) []*api.Member {
	var ms []*api.Member
	for _, id := range ids {
		ms = append(ms, &api.Member{Id: id, Addr: id + ":7000"})
	}
	return ms
}

func memberIDs(ms []*api.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Id)
	}
	return out
}

// setConfig makes a new epoch and pushes it to every live member.
func (c *simCluster) setConfig(chain, joining []string, why string) {
	cfg := &api.ChainConfig{Epoch: c.master.cfg.GetEpoch() + 1, Chain: toMembers(chain), Joining: toMembers(joining)}
	if err := ValidateConfig(cfg); err != nil {
		c.violation("harness built a bad configuration: %v", err)
		return
	}
	c.master.cfg = cfg
	c.master.changes++
	c.logf("master: epoch %d chain=%v joining=%v (%s)", cfg.Epoch, chain, joining, why)
	for _, id := range append(slices.Clone(chain), joining...) {
		c.push(id, cfg)
	}
}

// push delivers a configuration to one node after ConfigDelay.
func (c *simCluster) push(id string, cfg *api.ChainConfig) {
	if q, held := c.master.heldPush[id]; held {
		c.master.heldPush[id] = append(q, cfg)
		return
	}
	if c.opts.Policy {
		c.pushPolicy(id, cfg)
		return
	}
	c.after(c.between(c.opts.ConfigDelay), func() {
		n := c.nodes[id]
		if n == nil || n.crashed {
			return
		}
		err := n.r.Reconfigure(proto.Clone(cfg).(*api.ChainConfig))
		if err != nil && !errors.Is(err, ErrStaleEpoch) {
			c.violation("%s: Reconfigure(epoch %d): %v", id, cfg.Epoch, err)
		}
		c.drain(n)
	})
}

// holdConfig delays every configuration pushed to id until releaseConfig.
func (c *simCluster) holdConfig(id string) {
	if c.master.heldPush == nil {
		c.master.heldPush = map[string][]*api.ChainConfig{}
	}
	if _, ok := c.master.heldPush[id]; !ok {
		c.master.heldPush[id] = nil
	}
}

func (c *simCluster) releaseConfig(id string) {
	q := c.master.heldPush[id]
	delete(c.master.heldPush, id)
	for _, cfg := range q {
		c.push(id, cfg)
	}
}

// masterRemove splices a crashed node out of the chain (or the joiners).
func (c *simCluster) masterRemove(id string) {
	chain, joining := memberIDs(c.master.cfg.Chain), memberIDs(c.master.cfg.Joining)
	nc := slices.DeleteFunc(slices.Clone(chain), func(s string) bool { return s == id })
	nj := slices.DeleteFunc(slices.Clone(joining), func(s string) bool { return s == id })
	if len(nc) == len(chain) && len(nj) == len(joining) {
		return
	}
	if len(nc) == 0 {
		c.violation("harness crashed the last chain node %s", id)
		return
	}
	c.setConfig(nc, nj, "remove crashed "+id)
}

// join adds a fresh node as a joiner; the master promotes it later.
func (c *simCluster) join() string {
	id := c.addNode()
	if c.opts.Policy {
		return id // its heartbeats ask the master to join
	}
	c.setConfig(memberIDs(c.master.cfg.Chain), append(memberIDs(c.master.cfg.Joining), id), "join "+id)
	return id
}

// masterTick promotes a joining node that has caught up with the tail:
// it is in the latest epoch and has applied exactly as much as the tail.
// (Not "at least": with two joiners, the second can be ahead of the first
// right after the first is promoted; appending it then would put a node
// ahead of its predecessor.)
func (c *simCluster) masterTick() {
	cfg := c.master.cfg
	if c.master.noPromote {
		return
	}
	tail := c.nodes[cfg.Chain[len(cfg.Chain)-1].Id]
	if tail.crashed || tail.r.Epoch() != cfg.Epoch {
		return
	}
	for _, m := range cfg.Joining {
		j := c.nodes[m.Id]
		if !j.crashed && j.r.Epoch() == cfg.Epoch && j.r.Applied() == tail.r.Applied() {
			chain := append(memberIDs(cfg.Chain), m.Id)
			joining := slices.DeleteFunc(memberIDs(cfg.Joining), func(s string) bool { return s == m.Id })
			c.setConfig(chain, joining, fmt.Sprintf("promote %s (applied %d, tail %d)", m.Id,
				j.r.Applied(), tail.r.Applied()))
			return
		}
	}
}

// liveChain is the live nodes of the master's latest chain, head first.
func (c *simCluster) liveChain() []*simNode {
	var out []*simNode
	for _, m := range c.master.cfg.Chain {
		if n := c.nodes[m.Id]; !n.crashed {
			out = append(out, n)
		}
	}
	return out
}

// liveNodes is every live node in the latest configuration.
func (c *simCluster) liveNodes() []*simNode {
	var out []*simNode
	for _, m := range append(slices.Clone(c.master.cfg.Chain), c.master.cfg.Joining...) {
		if n := c.nodes[m.Id]; !n.crashed {
			out = append(out, n)
		}
	}
	return out
}

// checkChainOrder checks invariant (a), first half, at any moment: along
// the live chain each node has applied no more than its predecessor.
func (c *simCluster) checkChainOrder() {
	chain := c.liveChain()
	for i := 1; i < len(chain); i++ {
		if chain[i].r.Applied() > chain[i-1].r.Applied() {
			c.violation("chain order: %s applied %d > predecessor %s applied %d",
				chain[i].id, chain[i].r.Applied(), chain[i-1].id, chain[i-1].r.Applied())
		}
	}
}

// ---------------------------------------------------------------------------
// Clients.

// simClient is one sequential client: one request outstanding at a time,
// retried with the same request id until it gets an outcome.
type simClient struct {
	c      *simCluster
	name   string // the bidder name
	rc     *checker.Client
	cfg    *api.ChainConfig // the latest configuration this client knows
	nreq   int
	op     *clientOp
	done   int // operations with an outcome
	gaveUp int
}

type clientOp struct {
	cl      *simClient
	in      checker.Input
	id      checker.OpID
	cmd     *api.Command // nil for a read
	start   int64
	attempt int
	done    bool
	gaveUp  bool
	out     checker.Output
	res     auction.Result   // the reply, for a proposal
	info    *api.AuctionInfo // the reply, for a read
	node    string           // the node that answered
	then    func(*clientOp)
}

func (c *simCluster) newClient(name string) *simClient {
	cl := &simClient{c: c, name: name, rc: c.rec.NewClient(), cfg: c.master.cfg}
	c.clients = append(c.clients, cl)
	return cl
}

// session is the client's session id: a sim client has one request at a
// time, so every request acknowledges all the earlier ones (acked_below =
// client_seq = the request's number).
func (cl *simClient) session() string { return "session-" + cl.name }

func (cl *simClient) nextRequestID() string {
	cl.nreq++
	return fmt.Sprintf("%s-%d", cl.name, cl.nreq)
}

// bid places a bid as this client; then (optional) runs on its outcome.
func (cl *simClient) bid(auctionID string, amount int64, then func(*clientOp)) *clientOp {
	rid := cl.nextRequestID()
	return cl.propose(&api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{
		Auction: auctionID, Bidder: cl.name, Amount: amount, RequestId: rid,
		Client: cl.session(), ClientSeq: uint64(cl.nreq), AckedBelow: uint64(cl.nreq)}}},
		checker.BidInput(auctionID, cl.name, amount, rid), then)
}

// open opens an auction that closes durMs after the head sequences it
// (extended to softMs after any late successful bid, if softMs > 0).
func (cl *simClient) open(auctionID string, durMs, minInc, start, softMs int64, then func(*clientOp)) *clientOp {
	rid := cl.nextRequestID()
	cl.c.auctions = append(cl.c.auctions, auctionID)
	return cl.propose(&api.Command{Op: &api.Command_Open{Open: &api.OpenAuction{
		Auction: auctionID, Item: "item " + auctionID, DurationMs: durMs, MinIncrement: minInc,
		StartingPrice: start, SoftCloseMs: softMs, RequestId: rid,
		Client: cl.session(), ClientSeq: uint64(cl.nreq), AckedBelow: uint64(cl.nreq)}}},
		checker.OpenInput(auctionID, minInc, start, rid), then)
}

// propose sends any command (bad ones included) to the head.
func (cl *simClient) propose(cmd *api.Command, in checker.Input, then func(*clientOp)) *clientOp {
	op := &clientOp{cl: cl, in: in, cmd: cmd, then: then}
	cl.start(op)
	return op
}

// read reads an auction at the tail.
func (cl *simClient) read(auctionID string, then func(*clientOp)) *clientOp {
	op := &clientOp{cl: cl, in: checker.ResultInput(auctionID), then: then}
	cl.start(op)
	return op
}

func (cl *simClient) start(op *clientOp) {
	if cl.op != nil {
		cl.c.t.Fatalf("client %s: a second operation while one is outstanding", cl.name)
	}
	cl.op = op
	op.id = cl.rc.Call(op.in)
	op.start = cl.c.now
	op.attempt = 1
	cl.send(op)
}

// send makes one attempt: bids and opens to the head, reads to the tail,
// of the latest configuration the client knows.
func (cl *simClient) send(op *clientOp) {
	c := cl.c
	if op.done {
		return
	}
	if c.opts.GiveUpAfter > 0 && c.now-op.start >= c.opts.GiveUpAfter {
		cl.giveUp(op)
		return
	}
	a := op.attempt
	chain := cl.cfg.GetChain()
	target := chain[0].Id
	if op.cmd == nil {
		target = chain[len(chain)-1].Id
	}
	c.toNode(target, func(n *simNode) {
		if op.cmd != nil {
			c.nextHandle++
			h := c.nextHandle
			c.handles[h] = handleRef{op: op, attempt: a, node: n.id}
			n.r.Propose(h, proto.Clone(op.cmd).(*api.Command), c.clockOf(n))
			c.drain(n)
			return
		}
		info, err := n.r.Read(op.in.Auction, c.clockOf(n))
		if info != nil {
			info = proto.Clone(info).(*api.AuctionInfo)
		}
		if (err == nil || errors.Is(err, auction.ErrUnknownAuction)) && n.r.Applied() < c.maxCommitted {
			// The tail answers queries from its state (§2): it must hold
			// every update that any node considers committed.
			c.violation("stale read: tail %s serves a read at applied %d while %s has committed %d",
				n.id, n.r.Applied(), c.maxCommittedAt, c.maxCommitted)
		}
		c.toClient(func() { cl.onRead(op, a, n.id, info, err) })
	})
	c.after(c.opts.ClientTimeout, func() {
		if !op.done && op.attempt == a {
			cl.retry(op, "timeout")
		}
	})
}

// retry refreshes the client's configuration and tries again soon, with
// the same request id.
func (cl *simClient) retry(op *clientOp, why string) {
	c := cl.c
	op.attempt++
	a := op.attempt
	cl.cfg = c.master.cfg
	if c.opts.Trace {
		c.logf("client %s retries %v (%s)", cl.name, op.in, why)
	}
	c.after(c.between([2]int64{ms, 5 * ms}), func() {
		if !op.done && op.attempt == a {
			cl.send(op)
		}
	})
}

// retryable are the errors that tell a client to try again elsewhere.
func retryableErr(err error) bool {
	for _, e := range []error{ErrNotHead, ErrNotTail, ErrNotReady, ErrHeadChanged, ErrRemoved, ErrNoConfig, ErrNoLease} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

func (c *simCluster) toNode(id string, fn func(n *simNode)) {
	if c.faults && c.opts.ClientLoss > 0 && c.rng.Float64() < c.opts.ClientLoss {
		return
	}
	c.after(c.between(c.opts.ClientDelay), func() {
		n := c.nodes[id]
		c.onNode(n, func() { fn(n) })
	})
}

func (c *simCluster) toClient(fn func()) {
	if c.faults && c.opts.ClientLoss > 0 && c.rng.Float64() < c.opts.ClientLoss {
		return
	}
	c.after(c.between(c.opts.ClientDelay), fn)
}

// routeReply sends a replica's reply back to the client that asked.
func (c *simCluster) routeReply(n *simNode, rp Reply) {
	ref, ok := c.handles[rp.Handle]
	if !ok {
		c.violation("%s replied to unknown (or already answered) handle %d", n.id, rp.Handle)
		return
	}
	delete(c.handles, rp.Handle)
	if ref.node != n.id {
		c.violation("%s replied to handle %d given to %s", n.id, rp.Handle, ref.node)
	}
	c.toClient(func() { ref.op.cl.onReply(ref.op, ref.attempt, n.id, rp) })
}

func (cl *simClient) onReply(op *clientOp, a int, node string, rp Reply) {
	c := cl.c
	if op.done {
		return // a late answer to a finished (or given-up) request
	}
	if rp.Err != nil {
		if !retryableErr(rp.Err) {
			c.violation("client %s: unexpected error from %s: %v", cl.name, node, rp.Err)
		}
		if a == op.attempt {
			cl.retry(op, rp.Err.Error())
		}
		return
	}
	// Any attempt's result is the request's outcome: retries share the id.
	res := rp.Result
	if res.Auction != op.in.Auction {
		c.violation("client %s: reply for auction %q to a request on %q", cl.name, res.Auction, op.in.Auction)
	}
	if op.in.Kind == checker.KindBid && res.Amount != op.in.Amount {
		c.violation("client %s: reply amount %d to a bid of %d", cl.name, res.Amount, op.in.Amount)
	}
	if res.Seq > 0 {
		c.acks = append(c.acks, ackRecord{client: cl.name, cmd: op.cmd, res: res})
	}
	op.res, op.node = res, node
	cl.finish(op, checker.BidOutput(res.Outcome, res.Reason))
}

func (cl *simClient) onRead(op *clientOp, a int, node string, info *api.AuctionInfo, err error) {
	c := cl.c
	if op.done {
		return
	}
	switch {
	case err == nil:
		op.info, op.node = info, node
		cl.finish(op, checker.ResultOutput(info))
	case errors.Is(err, auction.ErrUnknownAuction):
		op.node = node
		cl.finish(op, checker.Output{Outcome: checker.OutcomeUnknownAuction})
	default:
		if !retryableErr(err) {
			c.violation("client %s: unexpected read error from %s: %v", cl.name, node, err)
		}
		if a == op.attempt {
			cl.retry(op, err.Error())
		}
	}
}

func (cl *simClient) finish(op *clientOp, out checker.Output) {
	op.done, op.out = true, out
	cl.rc.Return(op.id, out)
	cl.op = nil
	cl.done++
	if op.then != nil {
		op.then(op)
	}
}

func (cl *simClient) giveUp(op *clientOp) {
	op.done, op.gaveUp = true, true
	cl.rc.Return(op.id, checker.UnknownOutput())
	cl.op = nil
	cl.gaveUp++
	cl.c.logf("client %s gave up on %v", cl.name, op.in)
	if op.then != nil {
		op.then(op)
	}
}

// await runs the simulation until op has an outcome.
func (c *simCluster) await(op *clientOp, limit int64) {
	c.t.Helper()
	if !c.runUntil(func() bool { return op.done }, limit) {
		c.t.Fatalf("seed %d: %v got no outcome within %.0fms\n%s", c.opts.Seed, op.in,
			float64(limit)/1000, c.status())
	}
}

// ---------------------------------------------------------------------------
// Quiescence and the final checks.

// quiet reports whether the cluster has nothing left to do: no message or
// request in flight, no client busy, the master done (no crashed member,
// no joiner), and every live chain node in the latest epoch with the same
// applied and committed sequence number.
func (c *simCluster) quiet() bool {
	if c.pending > 0 {
		return false
	}
	for _, cl := range c.clients {
		if cl.op != nil {
			return false
		}
	}
	cfg := c.master.cfg
	if len(cfg.Joining) > 0 {
		return false
	}
	head := c.nodes[cfg.Chain[0].Id]
	for _, m := range cfg.Chain {
		n := c.nodes[m.Id]
		if n.crashed || n.r.Epoch() != cfg.Epoch || n.r.Applied() != head.r.Applied() ||
			n.r.Committed() != n.r.Applied() || n.r.HasReady() {
			return false
		}
	}
	return c.nodes[cfg.Chain[len(cfg.Chain)-1].Id].r.Readable()
}

// settle stops every fault (drops, client losses, partitions, held links)
// and runs until the cluster is quiet. It reports whether it got there.
func (c *simCluster) settle() bool {
	c.faults = false
	for k := range c.cuts {
		c.cuts[k] = c.now
	}
	for _, n := range c.order {
		n.pausedUntil = min(n.pausedUntil, c.now)
	}
	if c.opts.Policy && c.pm.leader == nil {
		c.electLeader()
	}
	for _, l := range c.sortedLinks() {
		if l.held {
			c.release(l.from, l.to)
		}
	}
	c.master.noPromote = false
	for _, n := range c.order {
		if _, ok := c.master.heldPush[n.id]; ok {
			c.releaseConfig(n.id)
		}
	}
	return c.runUntil(c.quiet, settleLimit)
}

// finish brings a run to its end once: settle, wait for every auction to
// close (WaitCloses), read every auction once more at the tail (recorded,
// so the linearizability check sees the final state), settle again.
func (c *simCluster) finish() bool {
	if c.finished {
		return c.quiesced
	}
	c.finished = true
	if !c.settle() {
		return false
	}
	if c.opts.WaitCloses {
		allClosed := func() bool {
			head := c.liveChain()[0].r.State()
			for _, id := range c.auctions {
				if a, ok := head.Get(id); ok && !a.Closed {
					return false
				}
			}
			return c.quiet()
		}
		if !c.runUntil(allClosed, settleLimit) {
			return false
		}
	}
	reader := c.newClient("final-reader")
	for _, id := range c.auctions {
		op := reader.read(id, nil)
		if !c.runUntil(func() bool { return op.done }, settleLimit) {
			return false
		}
	}
	c.quiesced = c.runUntil(c.quiet, settleLimit)
	return c.quiesced
}

// status describes every node, the master and busy clients (for failures).
func (c *simCluster) status() string {
	var b strings.Builder
	fmt.Fprintf(&b, "master: epoch %d chain=%v joining=%v; pending events %d\n", c.master.cfg.Epoch,
		memberIDs(c.master.cfg.Chain), memberIDs(c.master.cfg.Joining), c.pending)
	for _, n := range c.order {
		st := n.r.Status()
		fmt.Fprintf(&b, "  %s crashed=%v role=%v epoch=%d applied=%d committed=%d sent=%d readable=%v\n",
			n.id, n.crashed, st.Role, n.r.Epoch(), st.Applied, st.Committed, st.Sent, st.Readable)
	}
	for _, cl := range c.clients {
		if cl.op != nil {
			fmt.Fprintf(&b, "  client %s busy: %+v (attempt %d)\n", cl.name, cl.op.in, cl.op.attempt)
		}
	}
	return b.String()
}

func requestKey(cmd *api.Command) (string, bool) {
	switch op := cmd.GetOp().(type) {
	case *api.Command_Bid:
		if op.Bid.RequestId != "" {
			return op.Bid.Bidder + "\x00" + op.Bid.RequestId, true
		}
	case *api.Command_Open:
		if op.Open.RequestId != "" {
			return "\x00open\x00" + op.Open.RequestId, true
		}
	}
	return "", false
}

// CheckInvariants is the consistency check every chain test ends with (the
// harness registers it with t.Cleanup, as bbolt runs tx.Check after every
// test). It first brings the run to rest (finish), then checks:
//
//	(a) along the live chain each node has applied no more than its
//	    predecessor, and any two live nodes applied the identical update
//	    (and computed the identical outcome) at every sequence number both
//	    applied;
//	(b) no acknowledged update is lost: every update whose outcome a client
//	    received is present, identical, at every live chain node;
//	(c) exactly-once: no (bidder, request id) is sequenced twice in any
//	    live node's applied history;
//	(d) every live chain node has the same auction state Digest(), and the
//	    recorded client history is linearizable (porcupine).
//
// On failure it prints the seed and writes porcupine's visualization of
// the history to a file in os.TempDir().
func CheckInvariants(t testing.TB, c *simCluster) {
	t.Helper()
	quiet := c.finish()
	if !quiet && !c.beyondFaultModel {
		c.violation("the cluster did not quiesce within %.0fms of simulated time after faults stopped "+
			"(liveness)\n%s", float64(settleLimit)/1000, c.status())
	}

	// (a) prefix order and identical updates.
	c.checkChainOrder()
	type firstSeen struct {
		node string
		a    Applied
	}
	bySeq := map[uint64]firstSeen{}
	for _, n := range c.liveNodes() {
		for _, a := range n.rec.ups {
			seq := a.Update.GetSeq()
			f, ok := bySeq[seq]
			if !ok {
				bySeq[seq] = firstSeen{n.id, a}
				continue
			}
			if !proto.Equal(f.a.Update, a.Update) {
				c.violation("(a) seq %d differs: %s applied %v, %s applied %v", seq, f.node, f.a.Update, n.id, a.Update)
			} else if f.a.Result.Outcome != a.Result.Outcome || f.a.Result.Reason != a.Result.Reason ||
				f.a.Result.Seq != a.Result.Seq {
				c.violation("(a) seq %d decided differently: %s %v/%v, %s %v/%v", seq, f.node,
					f.a.Result.Outcome, f.a.Result.Reason, n.id, a.Result.Outcome, a.Result.Reason)
			}
		}
	}

	// (c) exactly-once.
	for _, n := range c.liveNodes() {
		seen := map[string]uint64{}
		for _, a := range n.rec.ups {
			if k, ok := requestKey(a.Update.GetCommand()); ok {
				if prev, dup := seen[k]; dup {
					c.violation("(c) %s sequenced request %q twice: seq %d and %d", n.id,
						strings.ReplaceAll(k, "\x00", "/"), prev, a.Update.Seq)
				}
				seen[k] = a.Update.Seq
			}
		}
	}

	if quiet && !c.beyondFaultModel {
		chain := c.liveChain()
		// (b) no acknowledged update lost.
		for _, ack := range c.acks {
			for _, n := range chain {
				c.checkAck(n, ack)
			}
		}
		// (d) same state everywhere.
		want := chain[0].r.State().Digest()
		for _, n := range chain[1:] {
			if got := n.r.State().Digest(); got != want {
				c.violation("(d) %s state digest %x differs from head %s's %x", n.id, got[:8], chain[0].id, want[:8])
			}
			if n.archive != nil && !maps.EqualFunc(n.archive.results, chain[0].archive.results, func(a, b *api.AuctionInfo) bool { return proto.Equal(a, b) }) {
				c.violation("(d) %s archive (%d results) differs from head %s's (%d)", n.id, n.archive.Len(),
					chain[0].id, chain[0].archive.Len())
			}
		}
	}

	ops := c.rec.Operations()
	rep := checker.Check(ops, 30*time.Second)
	if err := rep.Err(); err != nil {
		c.violation("(d) client history: %v", err)
	}
	if t.Failed() {
		t.Logf("FAILED with seed %d; replay: go test ./chain -run %s -seed %d -simlog", c.opts.Seed,
			strings.SplitN(t.Name(), "/", 2)[0], c.opts.Seed)
		name := strings.NewReplacer("/", "_", "=", "", " ", "_").Replace(t.Name())
		if !strings.Contains(t.Name(), "seed=") {
			name += fmt.Sprintf("-seed%d", c.opts.Seed)
		}
		path, err := rep.WriteVisualizationTemp("gavel-" + name + "-*.html")
		if err != nil {
			t.Logf("writing the porcupine visualization: %v", err)
		} else {
			t.Logf("porcupine visualization (%d operations): %s", len(ops), path)
		}
		t.Logf("final state:\n%s", c.status())
	}
}

// checkAck checks (b) for one acknowledged outcome at one live chain node.
func (c *simCluster) checkAck(n *simNode, ack ackRecord) {
	seq := ack.res.Seq
	if n.r.Applied() < seq {
		c.violation("(b) %s lost acknowledged seq %d (applied only %d): %v", n.id, seq, n.r.Applied(), ack.cmd)
		return
	}
	if a, ok := n.rec.at(seq); ok {
		if !proto.Equal(a.Update.GetCommand(), ack.cmd) {
			c.violation("(b) %s has %v at acknowledged seq %d, client %s was told about %v", n.id,
				a.Update.GetCommand(), seq, ack.client, ack.cmd)
		} else if a.Result.Outcome != ack.res.Outcome || a.Result.Reason != ack.res.Reason {
			c.violation("(b) %s decided seq %d as %v/%v, client %s was told %v/%v", n.id, seq,
				a.Result.Outcome, a.Result.Reason, ack.client, ack.res.Outcome, ack.res.Reason)
		}
		return
	}
	// Before the node's snapshot: its dedup table must still know it.
	client, rid := "", ""
	switch op := ack.cmd.GetOp().(type) {
	case *api.Command_Bid:
		client, rid = op.Bid.Bidder, op.Bid.RequestId
	case *api.Command_Open:
		rid = op.Open.RequestId
	}
	got, ok := n.r.State().Lookup(client, rid)
	if !ok && n.r.State().Limits().MaxRequestIDs > 0 {
		return // forgotten under the limit on request ids
	}
	if !ok || got.Seq != seq || got.Outcome != ack.res.Outcome || got.Reason != ack.res.Reason {
		c.violation("(b) %s (snapshot at %d) does not remember acknowledged seq %d %v: %+v, %v", n.id,
			n.rec.base, seq, ack.cmd, got, ok)
	}
}

// digest summarises a run for the determinism check: the whole recorded
// history, every node's final state and the number of events run.
func (c *simCluster) digest() [32]byte {
	h := sha256.New()
	for _, op := range c.rec.Operations() {
		fmt.Fprintf(h, "%d %d %d %+v %+v\n", op.ClientId, op.Call, op.Return, op.Input, op.Output)
	}
	for _, n := range c.order {
		d := n.r.State().Digest()
		fmt.Fprintf(h, "%s %v %d %d %x\n", n.id, n.crashed, n.r.Applied(), n.r.Epoch(), d)
	}
	fmt.Fprintf(h, "steps %d now %d\n", c.steps, c.now)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// sortedLinks returns the links in a deterministic order.
func (c *simCluster) sortedLinks() []*netLink {
	var out []*netLink
	for _, l := range c.links {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool {
		return out[i].from < out[j].from || (out[i].from == out[j].from && out[i].to < out[j].to)
	})
	return out
}
