package chain

import (
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/checker"
)

var (
	flagSeed       = flag.Uint64("seed", 0, "TestSim: replay only this seed")
	flagSeeds      = flag.Int("seeds", defaultSeeds(), "TestSim: run seeds 1..N (default $SIM_SEEDS, else 1000)")
	flagSimLog     = flag.Bool("simlog", false, "log every replica and harness event of simulated runs to stderr")
	flagSimTrace   = flag.Bool("simtrace", false, "like -simlog, and log every chain message too")
	flagLeaseSeeds = flag.Int("leaseseeds", defaultLeaseSeeds(),
		"TestSimLeases: run seeds 1..N (default $SIM_LEASE_SEEDS, else 2000)")
)

// TestSim runs random schedules — bids, reads, retries, message drops and
// delays, partitions, crashes and joins — on the simulated chain, and ends
// every run with CheckInvariants. `go test ./chain -run TestSim -seed 42`
// replays one seed; -seeds K runs seeds 1..K (default 1000).
func TestSim(t *testing.T) {
	if *flagSeed != 0 {
		runSim(t, *flagSeed)
		return
	}
	for seed := uint64(1); seed <= uint64(*flagSeeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			runSim(t, seed)
		})
	}
}

// TestSimLeases runs random schedules with the master's own policy in the
// simulation (simOptions.Policy): heartbeats, leases, removals of silent
// nodes, joins, and the faults that leases exist for — partitions from the
// master, pauses past the failure timeout, clock-rate drift — besides
// crashes, restarts with durable state, master failovers, drops, delays
// and partitions between nodes. Every run ends with CheckInvariants,
// porcupine included, and the minimum-progress guard. `go test ./chain
// -run TestSimLeases -seed 42` replays one seed; -leaseseeds K runs 1..K.
func TestSimLeases(t *testing.T) {
	if *flagSeed != 0 {
		runSimWith(t, *flagSeed, simKind{policy: true})
		return
	}
	for seed := uint64(1); seed <= uint64(*flagLeaseSeeds); seed++ {
		t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) {
			t.Parallel()
			runSimWith(t, seed, simKind{policy: true})
		})
	}
}

// TestSimDeterministic runs seeds twice and compares the digests of the
// runs: the same seed must give the same history, event for event.
func TestSimDeterministic(t *testing.T) {
	for _, kind := range []simKind{{}, {policy: true}} {
		for _, seed := range []uint64{3, 42, 977} {
			var d [2][32]byte
			for i := range d {
				t.Run(fmt.Sprintf("policy=%v/seed=%d/run=%d", kind.policy, seed, i), func(t *testing.T) {
					d[i] = runSimWith(t, seed, kind)
				})
			}
			if d[0] != d[1] {
				t.Errorf("policy %v, seed %d: two runs differ: %x vs %x", kind.policy, seed, d[0][:8], d[1][:8])
			}
		}
	}
}

// runSim runs one random schedule with the scripted master and returns
// the digest of the run.
func runSim(t *testing.T, seed uint64) [32]byte {
	t.Helper()
	return runSimWith(t, seed, simKind{})
}

// simKind picks the master of a run and its extra faults.
type simKind struct {
	// policy runs the master's own policy with leases (simOptions.Policy),
	// with its faults: partitions from the master, pauses past the
	// failure timeout, clock drift, restarts, master failovers.
	policy bool
	// leaseOverrunMs breaks the lease on purpose: tails serve reads that
	// long past it (simOptions.LeaseOverrunMs).
	leaseOverrunMs int64
	// bounds runs the chain with limits: closed auctions retire into the
	// nodes' archives, request ids are forgotten past a small limit, logs
	// are compacted often, and snapshots go in many small chunks.
	bounds bool
}

// runSimWith runs one random schedule of the given kind and returns the
// digest of the run.
func runSimWith(t testing.TB, seed uint64, kind simKind) [32]byte {
	t.Helper()
	plan := rand.New(rand.NewPCG(seed, 0x5eed))
	opts := defaultOptions()
	opts.Seed = seed
	opts.Policy, opts.LeaseOverrunMs = kind.policy, kind.leaseOverrunMs
	if kind.policy {
		opts.ClockDrift = []float64{0, 0.001, 0.01}[plan.IntN(3)]
		opts.GiveUpAfter = 3000 * ms // a failover costs a second of service
	}
	opts.Nodes = []int{1, 2, 3, 3, 3, 4}[plan.IntN(6)]
	opts.DropRate = []float64{0, 0, 0.002, 0.01, 0.03}[plan.IntN(5)]
	opts.ClientLoss = []float64{0, 0, 0.01, 0.05}[plan.IntN(4)]
	opts.MaxBatch = []int{1, 3, 0}[plan.IntN(3)]
	if !kind.policy {
		opts.GiveUpAfter = 1500 * ms
	}
	if plan.IntN(2) == 0 {
		// Durable asynchronously, as with a data dir: forwards leave at
		// once, acks and replies wait for the simulated fsync.
		opts.FsyncDelay = [2]int64{50, 2 * ms}
	}
	opts.ClockSkew = [2]int64{-30, 30}
	opts.WaitCloses = true
	if kind.bounds {
		opts.Limits = auction.Limits{RetentionMs: 50 + plan.Int64N(300), MaxRequestIDs: 5 + plan.IntN(40)}
		opts.Archive, opts.CompactEvery = true, 2+plan.IntN(8)
		opts.ChunkBytes = []int{16, 64, 300, 0}[plan.IntN(4)]
	}
	c := newCluster(t, opts)

	// What the bidders think the highest bid is, to bid mostly upwards.
	hint := map[string]int64{}
	learn := func(op *clientOp) {
		id := op.in.Auction
		switch {
		case op.in.Kind == checker.KindBid && op.out.Outcome == checker.OutcomeSuccess:
			hint[id] = max(hint[id], op.in.Amount)
		case op.in.Kind == checker.KindResult && op.info != nil:
			hint[id] = max(hint[id], op.info.Highest)
		}
	}

	// Bidders: a budget of operations each, started once every auction is
	// open, gap apart at most.
	nBidders := 3 + plan.IntN(3)
	gap := 8 * ms
	if kind.bounds {
		gap = 60 * ms // the load outlasts closes, retirements and faults
	}
	type bidder struct {
		cl      *simClient
		left    int
		retired bool
	}
	var bidders []*bidder
	startBidders := func() {
		for i := range nBidders {
			b := &bidder{cl: c.newClient(fmt.Sprintf("b%d", i+1)), left: 8 + plan.IntN(18)}
			bidders = append(bidders, b)
			var next func()
			after := func(op *clientOp) {
				learn(op)
				if op.gaveUp {
					b.retired = true // keep the client sequential in the history
					return
				}
				next()
			}
			next = func() {
				if b.left == 0 {
					return
				}
				b.left--
				c.after(plan.Int64N(gap), func() {
					id := c.auctions[plan.IntN(len(c.auctions))]
					switch r := plan.Float64(); {
					case r < 0.15:
						b.cl.read(id, after)
					case r < 0.17:
						b.cl.bid("ghost", 10, after) // never opened
					case r < 0.27:
						b.cl.bid(id, max(1, hint[id]-plan.Int64N(10)), after) // likely too low
					default:
						b.cl.bid(id, hint[id]+1+plan.Int64N(12), after)
					}
				})
			}
			next()
		}
	}

	// Opens first, one after the other; auctions close 200-800ms after
	// (long enough to outlive a crash, detection and reconfiguration).
	nAuctions := 2 + plan.IntN(2)
	if kind.bounds {
		nAuctions += plan.IntN(4) // some to retire early
	}
	admin := c.newClient("admin")
	var openNext func(i int)
	openNext = func(i int) {
		if i == nAuctions {
			startBidders()
			return
		}
		id := fmt.Sprintf("a%d", i+1)
		start := plan.Int64N(50)
		hint[id] = start
		soft := []int64{0, 0, 20 + plan.Int64N(80)}[plan.IntN(3)] // some anti-sniping
		dur := 200 + plan.Int64N(600)
		if kind.policy {
			// Outlives a crashed head's detection, a master failover and
			// the leases they cost, so that bids have an open auction.
			dur = 1500 + plan.Int64N(1500)
		}
		switch {
		case kind.bounds && i == 0:
			dur += 3000 // outlives the faults: bids succeed even after a long outage
		case kind.bounds && plan.IntN(2) == 0:
			dur = 30 + plan.Int64N(300) // closed and retired while faults go on
		}
		admin.open(id, dur, 1+plan.Int64N(5), start, soft, func(*clientOp) { openNext(i + 1) })
	}
	c.after(ms, func() { openNext(0) })

	// Faults at random moments of the first 500ms.
	faultWindow := 500 * ms
	if kind.bounds {
		faultWindow = 1500 * ms // snapshots that carry retired auctions too
	}
	fault := func(fn func()) {
		c.at(20*ms+plan.Int64N(faultWindow), false, func() {
			if c.faults {
				fn()
			}
		})
	}
	join := func() {
		if c.faults && len(c.order) < 8 {
			c.join()
		}
	}
	for range plan.IntN(4) {
		fault(func() {
			// Any live member, as long as another live chain node holds
			// every committed update: a chain of n caught-up members
			// tolerates n-1 crashes, and a node that has just been
			// appended counts only once it has caught up.
			var cand []*simNode
			for _, n := range c.liveNodes() {
				if !isChainMember(c, n.id) || otherCaughtUp(c, n.id) {
					cand = append(cand, n)
				}
			}
			if len(cand) == 0 {
				return
			}
			victim := cand[plan.IntN(len(cand))].id
			c.crash(victim)
			switch {
			case kind.policy && plan.IntN(2) == 0:
				// The process comes back with its disk: it rejoins.
				c.at(c.now+100*ms+plan.Int64N(900*ms), false, func() {
					if c.faults {
						c.restart(victim)
					}
				})
			case plan.IntN(3) > 0:
				c.at(c.now+60*ms+plan.Int64N(140*ms), false, join) // an operator replaces it
			}
		})
	}
	if kind.policy {
		// A node cut off from the master, or paused, past the failure
		// timeout is removed like a crashed one: the same rule picks it.
		// Shorter ones cost it only its lease.
		removable := func() *simNode {
			var cand []*simNode
			for _, n := range c.liveNodes() {
				if !c.isCut(n.id, masterID) && c.now >= n.pausedUntil &&
					(!isChainMember(c, n.id) || otherCaughtUp(c, n.id)) {
					cand = append(cand, n)
				}
			}
			if len(cand) == 0 {
				return nil
			}
			return cand[plan.IntN(len(cand))]
		}
		outage := func() int64 {
			if plan.IntN(2) == 0 {
				return 50*ms + plan.Int64N(300*ms) // within the lease's reach
			}
			return opts.FailureTimeout + plan.Int64N(600*ms) // past the failure timeout
		}
		for range plan.IntN(3) {
			fault(func() {
				if n := removable(); n != nil {
					c.partition(n.id, masterID, outage())
				}
			})
		}
		for range plan.IntN(3) {
			fault(func() {
				if n := removable(); n != nil {
					c.pause(n.id, outage())
				}
			})
		}
		if plan.IntN(4) == 0 {
			fault(c.failMaster)
		}
	}
	for range plan.IntN(4) {
		fault(join)
	}
	for range plan.IntN(3) {
		fault(func() {
			live := c.liveNodes()
			if len(live) < 2 {
				return
			}
			i := plan.IntN(len(live))
			j := (i + 1 + plan.IntN(len(live)-1)) % len(live)
			c.partition(live[i].id, live[j].id, 5*ms+plan.Int64N(75*ms))
		})
	}

	loadDone := func() bool {
		if len(bidders) < nBidders {
			return false
		}
		for _, b := range bidders {
			if !b.retired && (b.left > 0 || b.cl.op != nil) {
				return false
			}
		}
		return true
	}
	if !c.runUntil(loadDone, 10_000*ms) {
		c.violation("the load did not finish within 10s of simulated time (liveness)\n%s", c.status())
	}
	c.finish()

	// Minimum progress: a run where little completed proves little.
	ops := c.rec.Operations()
	completed, successes := 0, 0
	for _, op := range ops {
		if op.Return != math.MaxInt64 {
			completed++
		}
		in, out := op.Input.(checker.Input), op.Output.(checker.Output)
		if in.Kind == checker.KindBid && out.Outcome == checker.OutcomeSuccess {
			successes++
		}
	}
	if len(ops) == 0 || completed*10 < len(ops)*3 || successes == 0 {
		c.violation("too little progress: %d of %d operations completed, %d successful bids\n%s",
			completed, len(ops), successes, c.status())
	}
	d := c.digest()
	if *flagSimLog || *flagSeed != 0 {
		t.Logf("seed %d: %d nodes, drop %.3f, loss %.2f: %d operations, %d completed, %d successful bids, "+
			"%d configurations, %.0fms simulated, %d events, digest %x", seed, opts.Nodes, opts.DropRate,
			opts.ClientLoss, len(ops), completed, successes, c.master.changes, float64(c.now)/1000, c.steps, d[:8])
	}
	return d
}

func isChainMember(c *simCluster, id string) bool {
	for _, m := range c.master.cfg.Chain {
		if m.Id == id {
			return true
		}
	}
	return false
}

// otherCaughtUp reports whether a live chain member other than id holds
// every committed update.
func otherCaughtUp(c *simCluster, id string) bool {
	for _, n := range c.liveChain() {
		if n.id != id && n.r.CaughtUp() && !c.isCut(n.id, masterID) && c.now >= n.pausedUntil {
			return true
		}
	}
	return false
}

// defaultLeaseSeeds is $SIM_LEASE_SEEDS when set, else 2000.
func defaultLeaseSeeds() int {
	if n, err := strconv.Atoi(os.Getenv("SIM_LEASE_SEEDS")); err == nil && n > 0 {
		return n
	}
	return 2000
}

// defaultSeeds is $SIM_SEEDS when set (scripts/test passes it on), else 1000.
func defaultSeeds() int {
	if n, err := strconv.Atoi(os.Getenv("SIM_SEEDS")); err == nil && n > 0 {
		return n
	}
	return 1000
}
