package checker

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/gavel-auction/gavel/api"
)

// h builds a history by hand: each op runs from call to ret on a client.
type h struct{ ops []porcupine.Operation }

func (x *h) op(client int, call, ret int64, in Input, out Output) *h {
	x.ops = append(x.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
	return x
}

func ok() Output               { return Output{Outcome: OutcomeSuccess} }
func outcome(o Outcome) Output { return Output{Outcome: o} }
func open(hi int64, b string) Output {
	return Output{Outcome: OutcomeSuccess, Highest: hi, Bidder: b}
}
func closed(hi int64, b string) Output {
	return Output{Outcome: OutcomeSuccess, Closed: true, Highest: hi, Bidder: b}
}

const a1 = "a1"

func bid(b string, amount int64, req string) Input { return BidInput(a1, b, amount, req) }
func result() Input                                { return ResultInput(a1) }

// opened starts a history with a1 opened (min increment 5, starting price 10).
func opened() *h {
	return (&h{}).op(0, 0, 1, OpenInput(a1, 5, 10, "o1"), ok())
}

func mustCheck(t *testing.T, x *h, want porcupine.CheckResult) {
	t.Helper()
	rep := Check(x.ops, 10*time.Second)
	if rep.Result != want {
		t.Fatalf("Check = %v (%v), want %v", rep.Result, rep.Err(), want)
	}
	if (rep.Err() == nil) != (want == porcupine.Ok) {
		t.Fatalf("Err() = %v for result %v", rep.Err(), rep.Result)
	}
}

func TestModelLegalHistory(t *testing.T) {
	x := (&h{}).
		// A bid before the open: the auction does not exist yet.
		op(1, 0, 1, bid("bob", 50, "b0"), outcome(OutcomeUnknownAuction)).
		op(0, 2, 3, OpenInput(a1, 5, 10, "o1"), ok()).
		op(0, 4, 5, OpenInput(a1, 1, 1, "o2"), outcome(OutcomeExists)).
		op(1, 6, 7, bid("bob", 5, "b1"), outcome(OutcomeTooLow)). // below the starting price
		// Two concurrent bids: either order works if exactly one wins...
		op(1, 8, 12, bid("bob", 20, "b2"), ok()).
		op(2, 9, 11, bid("carol", 22, "c1"), outcome(OutcomeTooLow)). // ...after bob's 20 (+5)
		op(3, 13, 14, result(), open(20, "bob")).
		op(2, 15, 16, bid("carol", 25, "c2"), ok()).
		op(1, 17, 18, bid("bob", -3, "b3"), outcome(OutcomeInvalid)).
		// A given-up bid that would succeed, observed by a later read.
		op(1, 19, pending, bid("bob", 40, "b4"), UnknownOutput()).
		op(3, 20, 21, result(), open(40, "bob")).
		// A given-up bid that is too low: it changes nothing.
		op(4, 22, pending, bid("dave", 41, "d1"), UnknownOutput()).
		// The chain closes the auction: a bid sees it, then every read does.
		op(2, 23, 24, bid("carol", 100, "c3"), outcome(OutcomeClosed)).
		op(3, 25, 26, result(), closed(40, "bob")).
		op(1, 27, 28, bid("bob", 200, "b5"), outcome(OutcomeClosed)).
		// A given-up bid after the close changes nothing either.
		op(4, 29, pending, bid("dave", 500, "d2"), UnknownOutput()).
		op(3, 30, 31, result(), closed(40, "bob"))
	mustCheck(t, x, porcupine.Ok)
}

func TestModelCloseAtAnyPoint(t *testing.T) {
	// A read that overlaps a successful bid may see the auction before
	// it, after it, or closed after it: the close can come at any point.
	for _, out := range []Output{open(0, ""), open(30, "bob"), closed(30, "bob")} {
		x := opened().
			op(1, 2, 10, bid("bob", 30, "b1"), ok()).
			op(2, 3, 9, result(), out)
		mustCheck(t, x, porcupine.Ok)
	}
	// But a read that saw it closed with no bids rules the bid's success
	// out, concurrent or later.
	x := opened().
		op(1, 2, 10, bid("bob", 30, "b1"), ok()).
		op(2, 3, 9, result(), closed(0, ""))
	mustCheck(t, x, porcupine.Illegal)
	x = opened().
		op(2, 2, 3, result(), closed(0, "")).
		op(1, 4, 5, bid("bob", 30, "b1"), ok())
	mustCheck(t, x, porcupine.Illegal)
}

func TestModelIllegalSuccessAfterClosed(t *testing.T) {
	x := opened().
		op(1, 2, 3, bid("bob", 20, "b1"), ok()).
		op(2, 4, 5, bid("carol", 30, "c1"), outcome(OutcomeClosed)).
		op(1, 6, 7, bid("bob", 40, "b2"), ok())
	mustCheck(t, x, porcupine.Illegal)

	// A read that says open after one that said closed.
	x = opened().
		op(2, 4, 5, result(), closed(0, "")).
		op(3, 6, 7, result(), open(0, ""))
	mustCheck(t, x, porcupine.Illegal)
}

func TestModelIllegalTooLow(t *testing.T) {
	// bob's 20 is acknowledged; carol's 30 >= 20+5 must succeed.
	x := opened().
		op(1, 2, 3, bid("bob", 20, "b1"), ok()).
		op(2, 4, 5, bid("carol", 30, "c1"), outcome(OutcomeTooLow))
	mustCheck(t, x, porcupine.Illegal)

	// The first bid at the starting price succeeds.
	x = opened().op(1, 2, 3, bid("bob", 10, "b1"), outcome(OutcomeTooLow))
	mustCheck(t, x, porcupine.Illegal)

	// And one below it cannot.
	x = opened().op(1, 2, 3, bid("bob", 9, "b1"), ok())
	mustCheck(t, x, porcupine.Illegal)
}

func TestModelIllegalLowerHighest(t *testing.T) {
	x := opened().
		op(1, 2, 3, bid("bob", 20, "b1"), ok()).
		op(2, 4, 5, bid("carol", 30, "c1"), ok()).
		op(3, 6, 7, result(), open(20, "bob"))
	mustCheck(t, x, porcupine.Illegal)

	// A lost acknowledged bid: a read after the close that misses it.
	x = opened().
		op(1, 2, 3, bid("bob", 20, "b1"), ok()).
		op(3, 6, 7, result(), closed(0, ""))
	mustCheck(t, x, porcupine.Illegal)
}

func TestModelIllegalDuplicateApplication(t *testing.T) {
	// bob's bid was applied (a read shows it), then applied again on a
	// retry, whose evaluation — too low against itself — reached bob.
	x := opened().
		op(1, 2, 10, bid("bob", 20, "b1"), outcome(OutcomeTooLow)).
		op(3, 11, 12, result(), open(20, "bob"))
	mustCheck(t, x, porcupine.Illegal)

	// The same, with every attempt recorded as its own operation: the
	// retry must return the original outcome, not a second evaluation.
	x = opened().
		op(1, 2, 3, bid("bob", 20, "b1"), ok()).
		op(1, 4, 5, bid("bob", 20, "b1"), outcome(OutcomeTooLow))
	mustCheck(t, x, porcupine.Illegal)

	// Whereas a retry that returns the original outcome is fine, even
	// after the state moved on.
	x = opened().
		op(1, 2, 3, bid("bob", 20, "b1"), ok()).
		op(2, 4, 5, bid("carol", 30, "c1"), ok()).
		op(1, 6, 7, bid("bob", 20, "b1"), ok()).
		op(3, 8, 9, result(), open(30, "carol"))
	mustCheck(t, x, porcupine.Ok)

	// A duplicate open of the same request is not "exists".
	x = opened().op(0, 2, 3, OpenInput(a1, 5, 10, "o1"), outcome(OutcomeExists))
	mustCheck(t, x, porcupine.Illegal)
}

func TestModelIllegalGivenUpBid(t *testing.T) {
	// A given-up bid applies only if it would succeed: 12 after 10 is
	// too low (+5), so it cannot be the highest.
	x := opened().
		op(1, 2, 3, bid("bob", 10, "b1"), ok()).
		op(2, 4, pending, bid("carol", 12, "c1"), UnknownOutput()).
		op(3, 5, 6, result(), open(12, "carol"))
	mustCheck(t, x, porcupine.Illegal)
}

func TestModelUnknownAuction(t *testing.T) {
	x := (&h{}).op(1, 0, 1, bid("bob", 20, "b1"), ok())
	mustCheck(t, x, porcupine.Illegal)
	x = (&h{}).op(3, 0, 1, result(), open(0, ""))
	mustCheck(t, x, porcupine.Illegal)
	x = opened().op(3, 2, 3, result(), outcome(OutcomeUnknownAuction))
	mustCheck(t, x, porcupine.Illegal)
	x = (&h{}).op(3, 0, 1, result(), outcome(OutcomeUnknownAuction)).
		op(0, 0, pending, OpenInput(a1, 5, 10, "o1"), UnknownOutput()).
		op(3, 2, 3, result(), open(0, ""))
	mustCheck(t, x, porcupine.Ok)
}

func TestModelPartitionsByAuction(t *testing.T) {
	// Auctions are independent: a1's close does not close a2.
	var x h
	x.op(0, 0, 1, OpenInput("a1", 1, 1, "o1"), ok()).
		op(0, 2, 3, OpenInput("a2", 1, 1, "o2"), ok()).
		op(1, 4, 5, BidInput("a1", "bob", 5, "b1"), outcome(OutcomeClosed)).
		op(1, 6, 7, BidInput("a2", "bob", 5, "b2"), ok()).
		op(2, 8, 9, ResultInput("a2"), open(5, "bob"))
	mustCheck(t, &x, porcupine.Ok)
	x.op(2, 10, 11, ResultInput("a1"), open(0, ""))
	mustCheck(t, &x, porcupine.Illegal)
}

func TestOutcomeOf(t *testing.T) {
	for _, tc := range []struct {
		o    api.Outcome
		r    api.Reason
		want Outcome
	}{
		{api.Outcome_SUCCESS, api.Reason_REASON_NONE, OutcomeSuccess},
		{api.Outcome_FAIL, api.Reason_TOO_LOW, OutcomeTooLow},
		{api.Outcome_EXCEPTION, api.Reason_CLOSED, OutcomeClosed},
		{api.Outcome_EXCEPTION, api.Reason_UNKNOWN_AUCTION, OutcomeUnknownAuction},
		{api.Outcome_EXCEPTION, api.Reason_INVALID_AMOUNT, OutcomeInvalid},
		{api.Outcome_EXCEPTION, api.Reason_INVALID_BIDDER, OutcomeInvalid},
		{api.Outcome_EXCEPTION, api.Reason_AUCTION_EXISTS, OutcomeExists},
		{api.Outcome_EXCEPTION, api.Reason_UNAVAILABLE, OutcomeUnknown},
		{api.Outcome_FAIL, api.Reason_CLOSED, OutcomeOther},
		{api.Outcome_OUTCOME_UNSPECIFIED, api.Reason_REASON_NONE, OutcomeOther},
	} {
		if got := OutcomeOf(tc.o, tc.r); got != tc.want {
			t.Errorf("OutcomeOf(%v, %v) = %v, want %v", tc.o, tc.r, got, tc.want)
		}
	}
	// An outcome the model does not know is never accepted.
	x := opened().op(1, 2, 3, bid("bob", 20, "b1"), outcome(OutcomeOther))
	mustCheck(t, x, porcupine.Illegal)
}

func TestRecorderConcurrent(t *testing.T) {
	rec := NewRecorder()
	admin := rec.NewClient()
	id := admin.Call(OpenInput(a1, 1, 1, "o"))
	admin.Return(id, ok())
	server := &lockedAuction{st: state{exists: true, minInc: 1, start: 1}}
	var wg sync.WaitGroup
	for i := range 8 {
		c := rec.NewClient()
		wg.Go(func() {
			for j := range 50 {
				in := BidInput(a1, fmt.Sprintf("b%d", i), int64(1+i+8*j), fmt.Sprint(j))
				id := c.Call(in)
				c.Return(id, server.bid(in))
			}
			id := c.Call(ResultInput(a1))
			c.Return(id, server.result())
		})
	}
	wg.Wait()
	ops := rec.Operations()
	if len(ops) != 1+8*51 || rec.Len() != len(ops) {
		t.Fatalf("recorded %d operations", len(ops))
	}
	seen := map[int64]bool{}
	for _, op := range ops {
		if op.Call >= op.Return || seen[op.Call] || seen[op.Return] {
			t.Fatalf("bad timestamps %d..%d", op.Call, op.Return)
		}
		seen[op.Call], seen[op.Return] = true, true
	}
	rep := Check(ops, 10*time.Second)
	if err := rep.Err(); err != nil {
		t.Fatal(err)
	}
	t.Log(rep)
}

// lockedAuction is a linearizable auction: one mutex around the model.
type lockedAuction struct {
	mu sync.Mutex
	st state
}

func (l *lockedAuction) bid(in Input) Output {
	l.mu.Lock()
	defer l.mu.Unlock()
	o := OutcomeTooLow
	if in.Amount >= l.st.minNext() {
		o = OutcomeSuccess
	}
	_, l.st = step(l.st, in, Output{Outcome: o})
	return Output{Outcome: o}
}

func (l *lockedAuction) result() Output {
	l.mu.Lock()
	defer l.mu.Unlock()
	return open(l.st.highest, l.st.bidder)
}

func TestRecorderGiveUpAndMisuse(t *testing.T) {
	rec := NewRecorder()
	c := rec.NewClient()
	id := c.Call(bid("bob", 1, "x"))
	c.Return(id, UnknownOutput())
	pendingID := c.Call(bid("bob", 2, "y")) // never returned
	_ = pendingID
	ops := rec.Operations()
	if ops[0].Return != math.MaxInt64 || ops[1].Return != math.MaxInt64 {
		t.Fatalf("given-up and pending operations must never return: %+v", ops)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("a second Return did not panic")
		}
	}()
	c.Return(id, ok())
}

func TestCheckMalformedHistory(t *testing.T) {
	rep := Check([]porcupine.Operation{{Input: "bid", Output: ok(), Call: 0, Return: 1}}, time.Second)
	if !errors.Is(rep.Err(), ErrMalformedHistory) || rep.Ok() {
		t.Fatalf("Err() = %v", rep.Err())
	}
	rep = Check([]porcupine.Operation{{Input: result(), Output: ok(), Call: 5, Return: 1}}, time.Second)
	if !errors.Is(rep.Err(), ErrMalformedHistory) {
		t.Fatalf("Err() = %v", rep.Err())
	}
}

func TestCheckTimeoutIsAnError(t *testing.T) {
	// An undecided check is an error, never a pass.
	rep := &Report{Result: porcupine.Unknown, timeout: time.Nanosecond}
	if rep.Ok() || !errors.Is(rep.Err(), ErrCheckTimeout) {
		t.Fatalf("undecided check: Ok() = %v, Err() = %v", rep.Ok(), rep.Err())
	}
	// And a real check with a tiny timeout is either decided or an error.
	x := opened()
	for i := range 40 {
		x.op(i+1, 2, pending, bid(fmt.Sprint("b", i), int64(10+i), "r"), UnknownOutput())
	}
	x.op(50, 3, 100, result(), open(49, "b39"))
	rep = Check(x.ops, time.Nanosecond)
	if rep.Result != porcupine.Ok && rep.Err() == nil {
		t.Fatalf("check result %v without an error", rep.Result)
	}
}

func TestWriteVisualization(t *testing.T) {
	x := opened().
		op(1, 2, 3, bid("bob", 20, "b1"), ok()).
		op(2, 4, pending, bid("carol", 30, "c1"), UnknownOutput()).
		op(3, 6, 7, result(), open(10, "bob"))
	rep := Check(x.ops, 10*time.Second)
	if rep.Ok() {
		t.Fatal("illegal history passed")
	}
	path := filepath.Join(t.TempDir(), "vis.html")
	if err := rep.WriteVisualization(path); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "bid(bob, 20)") {
		t.Fatalf("visualization does not describe the operations (%d bytes)", len(b))
	}
	tmp, err := rep.WriteVisualizationTemp("checker-test-*.html")
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(tmp)
}

func TestModelValidation(t *testing.T) {
	long := strings.Repeat("x", 129)
	x := opened().
		op(1, 2, 3, bid(long, 20, "b1"), outcome(OutcomeInvalid)).
		op(1, 4, 5, bid("bob", maxAmount+1, "b2"), outcome(OutcomeInvalid)).
		op(1, 6, 7, bid("bob", maxAmount, "b3"), ok()).
		// An open the system calls invalid has no effect.
		op(0, 8, 9, OpenInput("a2", -1, 0, "o2"), outcome(OutcomeInvalid)).
		op(3, 10, 11, ResultInput("a2"), outcome(OutcomeUnknownAuction))
	mustCheck(t, x, porcupine.Ok)
	// A valid bid is never "invalid".
	x = opened().op(1, 2, 3, bid("bob", 20, "b1"), outcome(OutcomeInvalid))
	mustCheck(t, x, porcupine.Illegal)
	// And an open that was called invalid cannot have created the auction.
	x = (&h{}).op(0, 0, 1, OpenInput(a1, 1, 1, "o1"), outcome(OutcomeInvalid)).
		op(1, 2, 3, bid("bob", 20, "b1"), ok())
	mustCheck(t, x, porcupine.Illegal)
}
