package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/checker"
)

// retryBudget is how long a client keeps retrying one request (with the
// same request id) before it gives up and records an unknown outcome.
const retryBudget = 8 * time.Second

// workload runs concurrent bidders and readers against a cluster and
// records every operation for porcupine.
type workload struct {
	c        *cluster
	auctions []string
	rec      *checker.Recorder
	stop     chan struct{}
	wg       sync.WaitGroup
	next     map[string]*atomic.Int64 // next amount per auction

	mu        sync.Mutex // guards the fields below
	maxAcked  map[string]int64
	unknown   map[string][]int64 // amounts of bids whose outcome is unknown
	outcomes  map[checker.Outcome]int
	lastOK    time.Time
	maxGap    time.Duration
	gaveUp    int
	completed int
}

func newWorkload(c *cluster, auctions ...string) *workload {
	w := &workload{c: c, auctions: auctions, rec: checker.NewRecorder(), stop: make(chan struct{}),
		next: map[string]*atomic.Int64{}, maxAcked: map[string]int64{}, unknown: map[string][]int64{},
		outcomes: map[checker.Outcome]int{}}
	for _, a := range auctions {
		w.next[a] = &atomic.Int64{}
		w.openAuction(a)
	}
	return w
}

// retryable reports whether a call's error leaves the outcome undecided.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled, codes.Aborted, codes.Unknown:
		return true
	}
	return false
}

// call runs attempt against nodes, starting at via and moving on when a
// node cannot decide, until it succeeds or the budget is spent.
func (w *workload) call(via int, attempt func(ctx context.Context, node string) error) error {
	deadline := time.Now().Add(retryBudget)
	var err error
	for i := 0; time.Now().Before(deadline); i++ {
		node := w.c.ids[(via+i)%len(w.c.ids)]
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err = attempt(ctx, node)
		cancel()
		if err == nil || !retryable(err) {
			return err
		}
		time.Sleep(time.Duration(10+rand.IntN(30)) * time.Millisecond)
	}
	return err
}

func (w *workload) openAuction(a string) {
	cl := w.rec.NewClient()
	reqID := "open-" + a
	id := cl.Call(checker.OpenInput(a, 1, 0, reqID))
	var rep *api.OpenAuctionReply
	err := w.call(0, func(ctx context.Context, node string) error {
		var err error
		rep, err = w.c.auctions(node).OpenAuction(ctx, &api.OpenAuctionRequest{Open: &api.OpenAuction{
			Auction: a, Item: "e2e " + a, DurationMs: 3_600_000, MinIncrement: 1, RequestId: reqID}})
		return err
	})
	if err != nil || rep.Outcome != api.Outcome_SUCCESS {
		w.c.t.Fatalf("open %s: %v %v", a, rep, err)
	}
	cl.Return(id, checker.BidOutput(rep.Outcome, rep.Reason))
}

// start launches bidders bidding through every node in turn and readers.
func (w *workload) start(bidders, readers int) {
	for i := 0; i < bidders; i++ {
		w.wg.Add(1)
		go w.bidder(i)
	}
	for i := 0; i < readers; i++ {
		w.wg.Add(1)
		go w.reader(i)
	}
}

func (w *workload) bidder(i int) {
	defer w.wg.Done()
	cl := w.rec.NewClient()
	bidder := fmt.Sprintf("bidder%d", i)
	for n := 0; ; n++ {
		select {
		case <-w.stop:
			return
		default:
		}
		a := w.auctions[(i+n)%len(w.auctions)]
		amount := w.next[a].Add(int64(1 + rand.IntN(3)))
		reqID := fmt.Sprintf("%s-%d", bidder, n)
		id := cl.Call(checker.BidInput(a, bidder, amount, reqID))
		var rep *api.BidReply
		err := w.call(i+n, func(ctx context.Context, node string) error {
			var err error
			rep, err = w.c.auctions(node).Bid(ctx, &api.BidRequest{Auction: a, Bidder: bidder, Amount: amount, RequestId: reqID})
			return err
		})
		w.mu.Lock()
		if err != nil {
			cl.Return(id, checker.UnknownOutput())
			w.unknown[a] = append(w.unknown[a], amount)
			w.gaveUp++
		} else {
			out := checker.BidOutput(rep.Outcome, rep.Reason)
			cl.Return(id, out)
			w.outcomes[out.Outcome]++
			w.completed++
			if out.Outcome == checker.OutcomeSuccess {
				w.maxAcked[a] = max(w.maxAcked[a], amount)
				now := time.Now()
				if !w.lastOK.IsZero() && now.Sub(w.lastOK) > w.maxGap {
					w.maxGap = now.Sub(w.lastOK)
				}
				w.lastOK = now
			}
		}
		w.mu.Unlock()
	}
}

func (w *workload) reader(i int) {
	defer w.wg.Done()
	cl := w.rec.NewClient()
	for n := 0; ; n++ {
		select {
		case <-w.stop:
			return
		case <-time.After(5 * time.Millisecond):
		}
		a := w.auctions[(i+n)%len(w.auctions)]
		id := cl.Call(checker.ResultInput(a))
		var rep *api.ResultReply
		err := w.call(i+n, func(ctx context.Context, node string) error {
			var err error
			rep, err = w.c.auctions(node).Result(ctx, &api.ResultRequest{Auction: a})
			return err
		})
		if err != nil {
			cl.Return(id, checker.UnknownOutput())
			continue
		}
		cl.Return(id, checker.ResultOutput(rep.Info))
		w.mu.Lock()
		w.completed++
		w.mu.Unlock()
	}
}

// finish stops the clients and waits for them.
func (w *workload) finish() {
	close(w.stop)
	w.wg.Wait()
}

// verify checks the recorded history with porcupine, that no acknowledged
// bid was lost, and that every live node holds the same state.
func (w *workload) verify(t *testing.T, live ...string) {
	t.Helper()
	w.mu.Lock()
	t.Logf("completed %d operations, %d gave up, outcomes %v, longest gap between successful bids %v",
		w.completed, w.gaveUp, w.outcomes, w.maxGap.Round(time.Millisecond))
	if w.outcomes[checker.OutcomeSuccess] < 50 {
		t.Errorf("only %d successful bids: the run made too little progress to prove anything",
			w.outcomes[checker.OutcomeSuccess])
	}
	w.mu.Unlock()

	rep := checker.Check(w.rec.Operations(), time.Minute)
	if !rep.Ok() {
		path, _ := rep.WriteVisualizationTemp("gavel-e2e-*.html")
		t.Errorf("porcupine: %v; visualization: %s", rep.Err(), path)
	} else {
		t.Logf("porcupine: %v", rep)
	}

	// No acknowledged bid lost: the final highest bid is at least every
	// acknowledged success, and it is an amount some client really bid.
	for _, a := range w.auctions {
		var res *api.ResultReply
		err := w.call(0, func(ctx context.Context, node string) error {
			var err error
			res, err = w.c.auctions(node).Result(ctx, &api.ResultRequest{Auction: a})
			return err
		})
		if err != nil {
			t.Fatalf("final result of %s: %v", a, err)
		}
		hi := res.Info.Highest
		if hi < w.maxAcked[a] {
			t.Errorf("auction %s: final highest %d < acknowledged bid %d: an acknowledged bid was lost", a, hi, w.maxAcked[a])
		}
		if hi != w.maxAcked[a] && !contains(w.unknown[a], hi) {
			t.Errorf("auction %s: final highest %d was never acknowledged nor left undecided", a, hi)
		}
	}
	w.c.waitSameState(t, live...)
}

func contains(xs []int64, x int64) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// waitSameState waits until every live node has applied the same sequence
// number with the same state digest.
func (c *cluster) waitSameState(t *testing.T, ids ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		sts := c.statuses(ids...)
		same := true
		first := sts[ids[0]]
		for _, id := range ids[1:] {
			if sts[id].Applied != first.Applied || sts[id].StateDigest != first.StateDigest {
				same = false
			}
		}
		if same {
			t.Logf("all of %v applied %d, digest %s", ids, first.Applied, first.StateDigest)
			return
		}
		if time.Now().After(deadline) {
			for _, id := range ids {
				t.Logf("%s: role %v applied %d committed %d digest %s", id, sts[id].Role, sts[id].Applied,
					sts[id].Committed, sts[id].StateDigest)
			}
			t.Fatalf("nodes %v do not converge on one state", ids)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
