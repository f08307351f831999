package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/checker"
)

// TestPausedTailIsZombie SIGSTOPs the tail for longer than the failure
// timeout under load, so that the master removes it, then SIGCONTs it: the
// woken tail still believes it is the tail of its old epoch, but it must
// not serve a single read from it. See testPausedNodeIsZombie.
func TestPausedTailIsZombie(t *testing.T) { testPausedNodeIsZombie(t, "n3") }

// TestPausedHeadIsZombie does the same with the head: the woken head must
// not acknowledge a single bid in its old position.
func TestPausedHeadIsZombie(t *testing.T) { testPausedNodeIsZombie(t, "n1") }

// zombiePause is how long the victim stays SIGSTOPped: well past the
// failure timeout, and past the workload's 1 s call timeout, so that
// clients that tried it have given up on it and moved on.
const zombiePause = 1500 * time.Millisecond

// testPausedNodeIsZombie runs 3 masters and 3 nodes with bidders and
// readers going through every node, SIGSTOPs victim (a chain member) for
// zombiePause while clients keep trying it, waits until the master has
// removed it, and SIGCONTs it. Around the SIGCONT it fires bursts of
// direct Result and Bid calls at the zombie, some already queued on its
// socket when it wakes: none may be answered by the zombie itself until it
// is a member again (it lost its lease while stopped; once it learns of
// its removal it forwards). The zombie must then rejoin as a new member,
// appended as the tail with its state rebuilt, and the whole history —
// workload and bursts — must be linearizable with no acknowledged bid lost.
func testPausedNodeIsZombie(t *testing.T, victim string) {
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1", "a2")
	stopOnCleanup(t, w)
	s := sampleSuccesses(t, w, 2*time.Millisecond)
	w.start(6, 2)
	time.Sleep(time.Second)

	before := c.config()
	inc := memberIncarnation(before, victim)
	if inc == 0 || !slices.Contains(chainIDs(before), victim) {
		t.Fatalf("%s is not a chain member before the pause: %s", victim, describeConfig(before))
	}
	var survivors []string
	for _, id := range chainIDs(before) {
		if id != victim {
			survivors = append(survivors, id)
		}
	}

	paused := time.Now()
	c.pause(victim)
	removed := c.waitConfig(victim+" removed", 10*time.Second, func(cfg *api.ChainConfig) bool {
		return memberIncarnation(cfg, victim) == 0
	})
	removedAfter := time.Since(paused)
	t.Logf("SIGSTOPped %s (%s); removed after %v: %s", victim, describeConfig(before),
		removedAfter.Round(time.Millisecond), describeConfig(removed))
	if !slices.Equal(chainIDs(removed), survivors) {
		t.Errorf("after removing %s the chain is %v, want %v", victim, chainIDs(removed), survivors)
	}
	time.Sleep(time.Until(paused.Add(zombiePause)))

	// Bursts at the zombie: the first one lands on its socket while it is
	// still stopped, the others come right after it wakes.
	p := newProber(w, victim)
	t.Cleanup(p.wait) // before the processes go, should the test fail early
	p.wave()
	time.Sleep(30 * time.Millisecond)
	resumed := time.Now()
	c.resume(victim)
	t.Logf("SIGCONTed %s after %v", victim, resumed.Sub(paused).Round(time.Millisecond))
	for i := 0; i < 10; i++ {
		p.wave()
		time.Sleep(10 * time.Millisecond)
	}

	// The zombie rejoins as a new member: appended as the tail, no joining
	// left, the same process (same incarnation).
	want := append(slices.Clone(survivors), victim)
	rejoined := c.waitConfig(victim+" rejoined as tail", 15*time.Second, func(cfg *api.ChainConfig) bool {
		return slices.Equal(chainIDs(cfg), want) && len(cfg.Joining) == 0 && memberIncarnation(cfg, victim) == inc
	})
	t.Logf("%s rejoined %v after SIGCONT: %s", victim, time.Since(resumed).Round(time.Millisecond), describeConfig(rejoined))
	if rejoined.Epoch < removed.Epoch+2 {
		t.Errorf("rejoin in epoch %d, removal in epoch %d: it cannot have gone through joining", rejoined.Epoch, removed.Epoch)
	}
	if chainIDs(before)[len(chainIDs(before))-1] != victim && chainIDs(rejoined)[0] == victim {
		t.Errorf("%s is back at the head: %s", victim, describeConfig(rejoined))
	}
	p.wait()
	p.check(t, rejoined.Epoch)
	// It rejoined keeping its history: it installed the joining epoch
	// holding what it had applied, and the tail's handshake decided what
	// it lacked (a resend after its last update, or a snapshot when that
	// update is not the chain's); the digests checked below agree.
	var joined, kept bool
	for _, l := range c.logLines(victim) {
		if e := fmt.Sprint(removed.Epoch + 1); l.has("epoch", e) && l.msg == "configuration installed" && l.has("role", "JOINING") {
			joined, kept = true, !l.has("applied", "0")
		}
	}
	if !joined || !kept {
		t.Errorf("%s's log shows no rejoin with its own history in epoch %d (joined %v, kept %v)", victim, removed.Epoch+1, joined, kept)
	}

	// The rejoined tail catches up and serves reads under the workload.
	c.waitStatus(victim, 10*time.Second, "a readable tail in epoch "+fmt.Sprint(rejoined.Epoch), func(st *api.NodeStatus) bool {
		return st.Role == api.Role_TAIL && st.Readable && st.Config.GetEpoch() == rejoined.Epoch
	})
	time.Sleep(time.Second)
	w.finish()
	s.stop()
	t.Logf("write gap around the pause: %v (first success after SIGSTOP after %v); longest gap over the run (w.maxGap) %v",
		s.longestStall(paused, time.Now()).Round(time.Millisecond), s.firstAfter(paused).Round(time.Millisecond),
		w.maxGap.Round(time.Millisecond))
	w.verify(t, c.ids...)
}

// prober fires direct calls at one node, one attempt each, and records
// them in the workload's history.
type prober struct {
	w    *workload
	node string
	n    int // calls fired

	wg      sync.WaitGroup
	mu      sync.Mutex // guards replies
	replies []probeReply
}

// probeReply is the outcome of one direct call.
type probeReply struct {
	op    string // "result" or "bid"
	node  string // who answered (successful calls)
	epoch uint64
	err   error
}

func newProber(w *workload, node string) *prober { return &prober{w: w, node: node} }

// wave fires, concurrently, a Result call for each auction and a bid with
// a fresh request id on each auction.
func (p *prober) wave() {
	for _, a := range p.w.auctions {
		p.n++
		p.wg.Add(2)
		go func() { defer p.wg.Done(); p.result(a) }()
		go func(n int) { defer p.wg.Done(); p.bid(a, n) }(p.n)
	}
}

// probeTimeout bounds each direct call: longer than the gap between the
// first wave and the SIGCONT.
const probeTimeout = 2 * time.Second

func (p *prober) result(a string) {
	cl := p.w.rec.NewClient()
	id := cl.Call(checker.ResultInput(a))
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	rep, err := p.w.c.auctions(p.node).Result(ctx, &api.ResultRequest{Auction: a})
	cancel()
	r := probeReply{op: "result", err: err}
	if err != nil {
		cl.Return(id, checker.UnknownOutput())
	} else {
		cl.Return(id, checker.ResultOutput(rep.Info))
		r.node, r.epoch = rep.Node, rep.Epoch
	}
	p.mu.Lock()
	p.replies = append(p.replies, r)
	p.mu.Unlock()
}

func (p *prober) bid(a string, n int) {
	w := p.w
	cl := w.rec.NewClient()
	bidder := "zombie-prober"
	amount := w.next[a].Add(int64(1 + rand.IntN(3)))
	reqID := fmt.Sprintf("probe-%s-%d", p.node, n)
	id := cl.Call(checker.BidInput(a, bidder, amount, reqID))
	ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
	rep, err := w.c.auctions(p.node).Bid(ctx, &api.BidRequest{Auction: a, Bidder: bidder, Amount: amount, RequestId: reqID})
	cancel()
	r := probeReply{op: "bid", err: err}
	w.mu.Lock()
	if err != nil {
		cl.Return(id, checker.UnknownOutput())
		w.unknown[a] = append(w.unknown[a], amount)
	} else {
		out := checker.BidOutput(rep.Outcome, rep.Reason)
		cl.Return(id, out)
		r.node, r.epoch = rep.Node, rep.Epoch
		switch out.Outcome {
		case checker.OutcomeUnknown:
			w.unknown[a] = append(w.unknown[a], amount)
		case checker.OutcomeSuccess:
			w.maxAcked[a] = max(w.maxAcked[a], amount)
		}
		w.outcomes[out.Outcome]++
		w.completed++
	}
	w.mu.Unlock()
	p.mu.Lock()
	p.replies = append(p.replies, r)
	p.mu.Unlock()
}

func (p *prober) wait() { p.wg.Wait() }

// check asserts that no successful direct call was answered by the probed
// node itself before memberEpoch, the epoch that made it a member again:
// whatever it answered from its old position would come from a node that
// is no longer in the chain. A reply it gives as the re-appended tail (an
// epoch of at least memberEpoch) is legitimate, and counted apart.
func (p *prober) check(t *testing.T, memberEpoch uint64) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	count := map[string]int{}
	errs := map[string]int{}
	for _, r := range p.replies {
		switch {
		case r.err != nil:
			count[r.op+" failed"]++
			errs[fmt.Sprint(r.err)]++
		case r.node == p.node && r.epoch < memberEpoch:
			count[r.op+" answered by the zombie"]++
			t.Errorf("%s answered a %s itself in epoch %d, before it was a member again (epoch %d)",
				p.node, r.op, r.epoch, memberEpoch)
		case r.node == p.node:
			count[r.op+" answered by the re-appended tail"]++
		default:
			count[r.op+" answered by "+r.node]++
		}
	}
	t.Logf("direct calls at %s: %d; %v", p.node, len(p.replies), count)
	for e, n := range errs {
		t.Logf("  %dx %s", n, e)
	}
	if len(p.replies) == count["result failed"]+count["bid failed"] {
		t.Errorf("no direct call at %s succeeded: once it knows it was removed it should forward", p.node)
	}
}

// waitStatus waits until id's status satisfies ok.
func (c *cluster) waitStatus(id string, timeout time.Duration, what string, ok func(*api.NodeStatus) bool) *api.NodeStatus {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st, err := c.nodeStatus(id)
		if err == nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			if err != nil {
				c.t.Fatalf("waiting for %s to be %s: %v", id, what, err)
			}
			c.t.Fatalf("waiting for %s to be %s: role %v readable %v epoch %d applied %d", id, what, st.Role, st.Readable,
				st.Config.GetEpoch(), st.Applied)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
