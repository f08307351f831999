package auction

import (
	"errors"
	"strconv"
	"testing"

	"github.com/gavel-auction/gavel/api"
)

// applier feeds a State consecutive updates.
type applier struct {
	t  *testing.T
	s  *State
	ms int64
}

func newApplier(t *testing.T) *applier {
	return &applier{t: t, s: NewWithDedup(DedupParams{RequestWindow: 4}), ms: 1000}
}

func (a *applier) apply(cmd *api.Command) Result {
	a.t.Helper()
	a.ms += 10
	r, err := a.s.Apply(&api.Update{Seq: a.s.Seq() + 1, TimeMs: a.ms, Command: cmd})
	if err != nil {
		a.t.Fatal(err)
	}
	return r
}

func open(id string, durMs, inc, start, soft int64, req string) *api.Command {
	return &api.Command{Op: &api.Command_Open{Open: &api.OpenAuction{Auction: id, Item: "item " + id,
		DurationMs: durMs, MinIncrement: inc, StartingPrice: start, SoftCloseMs: soft, RequestId: req}}}
}

func bid(id, bidder string, amount int64, req string) *api.Command {
	return &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{Auction: id, Bidder: bidder, Amount: amount, RequestId: req}}}
}

func closeCmd(id string) *api.Command {
	return &api.Command{Op: &api.Command_Close{Close: &api.CloseAuction{Auction: id}}}
}

func want(t *testing.T, r Result, o api.Outcome, reason api.Reason) {
	t.Helper()
	if r.Outcome != o || r.Reason != reason {
		t.Fatalf("got %v/%v (%s), want %v/%v", r.Outcome, r.Reason, r.Detail, o, reason)
	}
}

func TestBidRules(t *testing.T) {
	a := newApplier(t)
	want(t, a.apply(open("a1", 60_000, 5, 100, 0, "o1")), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	want(t, a.apply(bid("a1", "alice", 99, "r1")), api.Outcome_FAIL, api.Reason_TOO_LOW) // below starting price
	want(t, a.apply(bid("a1", "alice", 100, "r2")), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	want(t, a.apply(bid("a1", "bob", 104, "r3")), api.Outcome_FAIL, api.Reason_TOO_LOW) // below highest + increment
	r := a.apply(bid("a1", "bob", 105, "r4"))
	want(t, r, api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	if r.Previous != "alice" {
		t.Errorf("previous leader %q, want alice", r.Previous)
	}
	want(t, a.apply(bid("nope", "bob", 500, "r5")), api.Outcome_EXCEPTION, api.Reason_UNKNOWN_AUCTION)
	want(t, a.apply(open("a1", 60_000, 1, 0, 0, "o2")), api.Outcome_EXCEPTION, api.Reason_AUCTION_EXISTS)
	want(t, a.apply(closeCmd("a1")), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	want(t, a.apply(bid("a1", "carol", 1000, "r6")), api.Outcome_EXCEPTION, api.Reason_CLOSED)
	au, _ := a.s.Get("a1")
	if !au.Closed || au.Highest != 105 || au.Bidder != "bob" || au.Bids != 5 || len(au.bidders) != 3 {
		t.Errorf("final auction %+v", au.Info())
	}
	if au.Version != a.s.Seq() {
		t.Errorf("version %d, want the last update's seq %d", au.Version, a.s.Seq())
	}
}

// TestExactlyOnce: a repeated request id returns the original outcome and
// changes nothing, even when the same bid would now be too low.
func TestExactlyOnce(t *testing.T) {
	a := newApplier(t)
	a.apply(open("a1", 60_000, 1, 0, 0, "o1"))
	first := a.apply(bid("a1", "alice", 10, "r1"))
	again, ok := a.s.Lookup("alice", "r1")
	if !ok || again.Outcome != first.Outcome || again.Seq != first.Seq {
		t.Fatalf("lookup %+v %v, want the original %+v", again, ok, first)
	}
	dup := a.apply(bid("a1", "alice", 10, "r1")) // sequenced twice: a no-op
	if dup.Outcome != api.Outcome_SUCCESS || !dup.Duplicate || dup.Seq != first.Seq {
		t.Fatalf("duplicate applied as %+v", dup)
	}
	au, _ := a.s.Get("a1")
	if au.Bids != 1 {
		t.Errorf("duplicate counted: %d bids", au.Bids)
	}
	// The same request id from another bidder is another request.
	want(t, a.apply(bid("a1", "bob", 10, "r1")), api.Outcome_FAIL, api.Reason_TOO_LOW)
	// The window forgets the oldest ids (window 4 in newApplier).
	for i, req := range []string{"r2", "r3", "r4", "r5"} {
		a.apply(bid("a1", "alice", int64(20+i), req))
	}
	if _, ok := a.s.Lookup("alice", "r1"); ok {
		t.Error("r1 still remembered beyond the dedup window")
	}
	// Opens are deduplicated too.
	o1, ok := a.s.Lookup("", "o1")
	if !ok || o1.Outcome != api.Outcome_SUCCESS {
		t.Errorf("open lookup %+v %v", o1, ok)
	}
}

func TestSoftCloseExtends(t *testing.T) {
	a := newApplier(t)
	a.apply(open("a1", 100, 1, 0, 500, "o1")) // closes at 1010+100
	au, _ := a.s.Get("a1")
	closes := au.ClosesAtMs
	r := a.apply(bid("a1", "alice", 5, "r1"))
	if !r.Extended || au.ClosesAtMs != a.ms+500 || au.ClosesAtMs <= closes {
		t.Errorf("soft close: extended %v, closes %d (was %d, bid at %d)", r.Extended, au.ClosesAtMs, closes, a.ms)
	}
	if ids := a.s.Due(au.ClosesAtMs - 1); len(ids) != 0 {
		t.Errorf("due before closing time: %v", ids)
	}
	if ids := a.s.Due(au.ClosesAtMs); len(ids) != 1 || ids[0] != "a1" {
		t.Errorf("due at closing time: %v", ids)
	}
}

// TestInvalidInputChangesNothing: invalid requests are refused with a clear
// reason and, even if sequenced, leave the state as it was.
func TestInvalidInputChangesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    *api.PlaceBid
		err  error
	}{
		{"zero", &api.PlaceBid{Auction: "a1", Bidder: "x", Amount: 0}, ErrInvalidAmount},
		{"negative", &api.PlaceBid{Auction: "a1", Bidder: "x", Amount: -5}, ErrInvalidAmount},
		{"overflowing", &api.PlaceBid{Auction: "a1", Bidder: "x", Amount: MaxAmount + 1}, ErrInvalidAmount},
		{"empty bidder", &api.PlaceBid{Auction: "a1", Bidder: "", Amount: 5}, ErrInvalidBidder},
		{"empty auction", &api.PlaceBid{Auction: "", Bidder: "x", Amount: 5}, ErrInvalidAuction},
		{"bad utf8", &api.PlaceBid{Auction: "a1", Bidder: "\xff", Amount: 5}, ErrInvalidBidder},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := ValidateBid(tc.b); !errors.Is(err, tc.err) {
				t.Fatalf("ValidateBid: %v, want %v", err, tc.err)
			}
			a := newApplier(t)
			a.apply(open("a1", 60_000, 1, 0, 0, "o1"))
			a.apply(bid("a1", "alice", 10, "r1"))
			au, _ := a.s.Get("a1")
			before := *au.Info()
			r := a.apply(&api.Command{Op: &api.Command_Bid{Bid: tc.b}})
			if r.Outcome != api.Outcome_EXCEPTION || r.Reason != ReasonOf(tc.err) {
				t.Errorf("applied as %v/%v", r.Outcome, r.Reason)
			}
			after := au.Info()
			if after.Highest != before.Highest || after.Bids != before.Bids || after.Version != before.Version {
				t.Errorf("state changed: %v -> %v", before.String(), after.String())
			}
		})
	}
	for _, o := range []*api.OpenAuction{
		{Auction: "a", DurationMs: 0},
		{Auction: "a", DurationMs: 1000, MinIncrement: -1},
		{Auction: "a", DurationMs: 1000, StartingPrice: MaxAmount + 1},
		{Auction: "", DurationMs: 1000},
	} {
		if err := ValidateOpen(o); err == nil {
			t.Errorf("ValidateOpen(%v) accepted", o)
		}
	}
}

func TestApplyOutOfSequence(t *testing.T) {
	s := New()
	if _, err := s.Apply(&api.Update{Seq: 2}); !errors.Is(err, ErrBadSequence) {
		t.Fatalf("got %v", err)
	}
	if s.Seq() != 0 {
		t.Fatal("state changed")
	}
}

// TestSnapshotRoundTrip: a restored snapshot is the same state, and goes on
// to compute the same outcomes as the original.
func TestSnapshotRoundTrip(t *testing.T) {
	a := newApplier(t)
	a.apply(open("a1", 60_000, 2, 10, 100, "o1"))
	a.apply(open("a2", 60_000, 1, 0, 0, "o2"))
	a.apply(bid("a1", "alice", 10, "r1"))
	a.apply(bid("a2", "bob", 3, "r2"))
	a.apply(closeCmd("a2"))
	r, err := Restore(a.s.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if r.Digest() != a.s.Digest() {
		t.Fatal("restored digest differs")
	}
	b := &applier{t: t, s: r, ms: a.ms}
	for _, cmd := range []*api.Command{bid("a1", "carol", 12, "r3"), bid("a1", "alice", 10, "r1"), bid("a2", "x", 50, "r4")} {
		x, y := a.apply(cmd), b.apply(cmd)
		if x.Outcome != y.Outcome || x.Reason != y.Reason || x.Seq != y.Seq {
			t.Fatalf("diverged: %+v vs %+v", x, y)
		}
	}
	if r.Digest() != a.s.Digest() {
		t.Fatal("digests diverged after further updates")
	}
	bad := a.s.Snapshot()
	bad.Auctions = append(bad.Auctions, bad.Auctions[0])
	if _, err := Restore(bad); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("duplicate auction accepted: %v", err)
	}
}

func BenchmarkApplyBid(b *testing.B) {
	s := New()
	s.Apply(&api.Update{Seq: 1, Command: open("a", 1<<40, 1, 0, 0, "o")})
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s.Apply(&api.Update{Seq: s.Seq() + 1, TimeMs: 5, Command: bid("a", "bidder", int64(i+1), strconv.Itoa(i))})
	}
}
