package auction

import (
	"fmt"
	"testing"

	"github.com/gavel-auction/gavel/api"
)

// Rule: a closed auction stays in the state until its retention has run
// out at a Trim's update time; the Trim then retires it and hands out its
// final result, and reads of the state no longer find it.
func TestTrimRetiresAfterRetention(t *testing.T) {
	a := newApplier(t)
	lim := Limits{RetentionMs: 1000}
	a.apply(open("a1", 50, 1, 0, 0, "o1"))
	a.apply(bid("a1", "alice", 10, "r1"))
	a.apply(closeCmd("a1"))
	closedAt := a.ms
	if got, _ := a.s.Get("a1"); got.ClosedAtMs != closedAt {
		t.Fatalf("closed_at %d, want the close's update time %d", got.ClosedAtMs, closedAt)
	}
	if a.s.TrimDue(lim, closedAt+999) != true {
		t.Fatal("a Trim that sets new limits is due")
	}
	r := a.apply(TrimCommand(lim)) // at closedAt+10: too early
	if len(r.Retired) != 0 || a.s.Limits() != lim {
		t.Fatalf("early trim retired %d, limits %+v", len(r.Retired), a.s.Limits())
	}
	if a.s.TrimDue(lim, closedAt+999) || !a.s.TrimDue(lim, closedAt+1000) {
		t.Fatal("TrimDue does not follow the retention")
	}
	a.ms = closedAt + 990 // the next update is at closedAt+1000
	r = a.apply(TrimCommand(lim))
	if len(r.Retired) != 1 || !r.Retired[0].Retired || r.Retired[0].Bidder != "alice" || r.Retired[0].Highest != 10 ||
		r.Retired[0].State != api.AuctionState_CLOSED_STATE || r.Retired[0].ClosedAtMs != closedAt {
		t.Fatalf("retired %v", r.Retired)
	}
	if _, ok := a.s.Get("a1"); ok || a.s.Len() != 0 || a.s.Retired() != 1 {
		t.Fatalf("after retirement: len %d retired %d", a.s.Len(), a.s.Retired())
	}
	if st := a.s.Stats(); st.Open != 0 || st.Closed != 0 || st.Retired != 1 {
		t.Fatalf("stats %+v", st)
	}
	if a.s.TrimDue(lim, a.ms+1_000_000) {
		t.Fatal("trim due with nothing to trim")
	}
}

// Rule: one Trim retires at most MaxTrimItems auctions, oldest close
// first; the rest wait for the next.
func TestTrimIsBounded(t *testing.T) {
	a := newApplier(t)
	n := MaxTrimItems + 10
	for i := range n {
		id := fmt.Sprintf("a%05d", i)
		a.apply(open(id, 1, 1, 0, 0, ""))
		a.apply(closeCmd(id))
	}
	lim := Limits{RetentionMs: 1}
	r := a.apply(TrimCommand(lim))
	if len(r.Retired) != MaxTrimItems || r.Retired[0].Auction != "a00000" {
		t.Fatalf("first trim retired %d, first %s", len(r.Retired), r.Retired[0].Auction)
	}
	if !a.s.TrimDue(lim, a.ms) {
		t.Fatal("no trim due with auctions left to retire")
	}
	r = a.apply(TrimCommand(lim))
	if len(r.Retired) != 10 || a.s.Len() != 0 {
		t.Fatalf("second trim retired %d, %d left", len(r.Retired), a.s.Len())
	}
}

// Rule: the bidders' request-id tables hold at most MaxRequestIDs ids
// after a Trim, the oldest forgotten first, whatever table they are in;
// the newest still deduplicate.
func TestTrimForgetsOldestRequestIDs(t *testing.T) {
	a := newApplier(t) // a table keeps 4 ids of its own
	a.apply(open("a1", 3_600_000, 1, 0, 0, ""))
	amount := int64(0)
	for i := range 30 {
		amount++
		a.apply(bid("a1", fmt.Sprintf("b%d", i%6), amount, fmt.Sprintf("r%d", i)))
	}
	if st := a.s.Stats(); st.RequestIDs != 24 || st.BidderTables != 6 {
		t.Fatalf("stats %+v, want 24 ids (6 tables of 4)", st)
	}
	lim := Limits{MaxRequestIDs: 5}
	r := a.apply(TrimCommand(lim))
	if r.Forgotten != 19 || a.s.Stats().RequestIDs != 5 || a.s.Stats().BidderTables != 5 {
		t.Fatalf("forgot %d, stats %+v", r.Forgotten, a.s.Stats())
	}
	for i := range 30 {
		_, ok := a.s.Lookup(fmt.Sprintf("b%d", i%6), fmt.Sprintf("r%d", i))
		if ok != (i >= 25) {
			t.Errorf("request r%d remembered: %v", i, ok)
		}
	}
	if r := a.apply(bid("a1", "b5", 30, "r29")); !r.Duplicate {
		t.Errorf("retry of a remembered request: %+v", r)
	}
	// A state restored from a snapshot forgets in the same order.
	s2, err := Restore(a.s.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	for i := 30; i < 40; i++ {
		amount++
		cmd := bid("a1", fmt.Sprintf("b%d", i%7), amount, fmt.Sprintf("r%d", i))
		a.apply(cmd)
		if _, err := s2.Apply(&api.Update{Seq: s2.Seq() + 1, TimeMs: a.ms, Command: cmd}); err != nil {
			t.Fatal(err)
		}
	}
	trim := TrimCommand(Limits{MaxRequestIDs: 3})
	a.apply(trim)
	if _, err := s2.Apply(&api.Update{Seq: s2.Seq() + 1, TimeMs: a.ms, Command: trim}); err != nil {
		t.Fatal(err)
	}
	if a.s.Digest() != s2.Digest() || s2.Stats().RequestIDs != 3 {
		t.Fatalf("restored state trims differently: %+v vs %+v", a.s.Stats(), s2.Stats())
	}
}

// Rule: an auction registers at most MaxBidders bidders; a new bidder
// past it is refused with TOO_MANY_BIDDERS, registered ones go on
// bidding, and a closed auction still answers CLOSED.
func TestMaxBidders(t *testing.T) {
	a := newApplier(t)
	a.apply(TrimCommand(Limits{MaxBidders: 2}))
	a.apply(open("a1", 3_600_000, 1, 0, 0, ""))
	want(t, a.apply(bid("a1", "alice", 1, "")), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	want(t, a.apply(bid("a1", "bob", 2, "")), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	want(t, a.apply(bid("a1", "carol", 3, "")), api.Outcome_EXCEPTION, api.Reason_TOO_MANY_BIDDERS)
	want(t, a.apply(bid("a1", "alice", 3, "")), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	if got, _ := a.s.Get("a1"); got.Info().Bidders != 2 || got.Bids != 4 {
		t.Fatalf("auction %+v", got.Info())
	}
	a.apply(closeCmd("a1"))
	want(t, a.apply(bid("a1", "carol", 9, "")), api.Outcome_EXCEPTION, api.Reason_CLOSED)
}

// Rule: a snapshot carries the limits, the order of closed auctions and
// the retired count, so a restored replica retires exactly as the others.
func TestBoundsSurviveSnapshot(t *testing.T) {
	a := newApplier(t)
	lim := Limits{RetentionMs: 100, MaxRequestIDs: 1000, MaxBidders: 10}
	a.apply(TrimCommand(lim))
	for i := range 5 {
		id := fmt.Sprintf("z%d", 5-i) // ids in the reverse of close order
		a.apply(open(id, 1, 1, 0, 0, ""))
		a.apply(closeCmd(id))
		a.ms += 30
	}
	s2, err := Restore(a.s.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if s2.Limits() != lim || s2.Digest() != a.s.Digest() {
		t.Fatalf("restored limits %+v", s2.Limits())
	}
	trim := &api.Update{Seq: a.s.Seq() + 1, TimeMs: a.ms, Command: TrimCommand(lim)}
	r1, _ := a.s.Apply(trim)
	r2, _ := s2.Apply(trim)
	if len(r1.Retired) != 3 || len(r2.Retired) != 3 {
		t.Fatalf("retired %d and %d, want 3", len(r1.Retired), len(r2.Retired))
	}
	for i := range r1.Retired {
		if r1.Retired[i].Auction != r2.Retired[i].Auction || r1.Retired[i].Auction != fmt.Sprintf("z%d", 5-i) {
			t.Fatalf("retired %s vs %s", r1.Retired[i].Auction, r2.Retired[i].Auction)
		}
	}
	if a.s.Digest() != s2.Digest() || s2.Retired() != 3 {
		t.Fatal("digests differ after the trim")
	}
}
