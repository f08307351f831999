package auction

import (
	"strconv"
	"testing"

	"github.com/gavel-auction/gavel/api"
)

// sbid is a bid of a client session.
func sbid(id, bidder string, amount int64, client string, seq, acked uint64) *api.Command {
	return &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{Auction: id, Bidder: bidder, Amount: amount,
		Client: client, ClientSeq: seq, AckedBelow: acked}}}
}

// Rule: a client session keeps the outcome of every request it has not
// acknowledged, however many requests come after it: a retry of request 1
// after 10,000 more bids of the same bidder gets its original outcome.
func TestSessionRetryAfterManyBids(t *testing.T) {
	a := newApplier(t) // request-id window of 4: only sessions can remember this far
	a.apply(open("a1", 30*24*3600*1000, 1, 0, 0, "o1"))
	first := a.apply(sbid("a1", "alice", 10, "c1", 1, 1))
	want(t, first, api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	for i := uint64(2); i <= 10_001; i++ {
		// Reply 1 never reached the client: acked_below stays 1.
		a.apply(sbid("a1", "alice", 10+int64(i), "c1", i, 1))
	}
	r := a.apply(sbid("a1", "alice", 10, "c1", 1, 1))
	if !r.Duplicate || r.Seq != first.Seq || r.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("retry of request 1: %+v, want the original outcome (seq %d)", r, first.Seq)
	}
	if _, ok := a.s.Precheck(sbid("a1", "alice", 10, "c1", 1, 1)); !ok {
		t.Fatal("Precheck does not know request 1")
	}
	// Once acknowledged, the outcomes are forgotten and a retry is refused.
	a.apply(sbid("a1", "alice", 20_000, "c1", 10_002, 10_002))
	if n := len(a.s.clients["c1"].entries); n != 1 {
		t.Errorf("session holds %d outcomes after acknowledging all but one, want 1", n)
	}
	want(t, a.apply(sbid("a1", "alice", 10, "c1", 1, 1)), api.Outcome_EXCEPTION, api.Reason_STALE_REQUEST)
}

// Rule: a request id or client_seq reused for a different request is
// refused with REQUEST_MISMATCH and never given the other one's outcome.
func TestRequestMismatch(t *testing.T) {
	a := newApplier(t)
	a.apply(open("a1", 30*24*3600*1000, 1, 0, 0, "o1"))
	a.apply(open("a2", 30*24*3600*1000, 1, 0, 0, "o2"))
	want(t, a.apply(bid("a1", "alice", 10, "r1")), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	for _, cmd := range []*api.Command{bid("a1", "alice", 11, "r1"), bid("a2", "alice", 10, "r1")} {
		want(t, a.apply(cmd), api.Outcome_EXCEPTION, api.Reason_REQUEST_MISMATCH)
	}
	want(t, a.apply(open("a3", 1000, 1, 0, 0, "o1")), api.Outcome_EXCEPTION, api.Reason_REQUEST_MISMATCH)
	want(t, a.apply(sbid("a1", "bob", 20, "c1", 1, 1)), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	for _, cmd := range []*api.Command{sbid("a1", "bob", 21, "c1", 1, 1), sbid("a2", "bob", 20, "c1", 1, 1),
		sbid("a1", "carol", 20, "c1", 1, 1)} {
		want(t, a.apply(cmd), api.Outcome_EXCEPTION, api.Reason_REQUEST_MISMATCH)
	}
	if h, _ := a.s.Get("a1"); h.Highest != 20 || h.Bidder != "bob" {
		t.Errorf("a refused request changed the auction: %d by %s", h.Highest, h.Bidder)
	}
}

// Rule: opens are deduplicated per client session too.
func TestSessionOpens(t *testing.T) {
	a := newApplier(t)
	o := func(id string, seq, acked uint64) *api.Command {
		return &api.Command{Op: &api.Command_Open{Open: &api.OpenAuction{Auction: id, DurationMs: 1000,
			Client: "c1", ClientSeq: seq, AckedBelow: acked}}}
	}
	first := a.apply(o("a1", 1, 1))
	want(t, first, api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	for i := uint64(2); i < 300; i++ {
		a.apply(o("x"+strconv.FormatUint(i, 10), i, 1))
	}
	if r := a.apply(o("a1", 1, 1)); !r.Duplicate || r.Seq != first.Seq || r.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("retried open: %+v", r)
	}
	want(t, a.apply(o("a9", 1, 1)), api.Outcome_EXCEPTION, api.Reason_REQUEST_MISMATCH)
}

// Rule: a session's unacknowledged outcomes are bounded (TOO_MANY_PENDING),
// an idle session is forgotten after the TTL (its next requests are taken
// as those of a new session, and malformed session fields are invalid requests.
func TestSessionBoundsAndExpiry(t *testing.T) {
	a := &applier{t: t, s: NewWithDedup(DedupParams{RequestWindow: 4, MaxPending: 3, ClientTTLMs: 1000}), ms: 1000}
	a.apply(open("a1", 30*24*3600*1000, 1, 0, 0, "o1"))
	for i := uint64(1); i <= 3; i++ {
		want(t, a.apply(sbid("a1", "alice", int64(i), "c1", i, 1)), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	}
	want(t, a.apply(sbid("a1", "alice", 4, "c1", 4, 1)), api.Outcome_EXCEPTION, api.Reason_TOO_MANY_PENDING)
	want(t, a.apply(sbid("a1", "alice", 4, "c1", 4, 3)), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	a.ms += 2000
	a.apply(bid("a1", "bob", 100, "r1")) // time passes: c1 is idle
	a.ms += 2000
	a.apply(bid("a1", "bob", 101, "r2"))
	if a.s.Clients() != 0 {
		t.Fatalf("%d client sessions remembered after the TTL, want 0", a.s.Clients())
	}
	want(t, a.apply(sbid("a1", "alice", 200, "c1", 5, 5)), api.Outcome_SUCCESS, api.Reason_REASON_NONE)
	for _, cmd := range []*api.Command{sbid("a1", "alice", 5, "c1", 0, 0), sbid("a1", "alice", 5, "c1", 2, 3),
		sbid("a1", "alice", 5, "", 2, 1)} {
		if err := ValidateBid(cmd.GetBid()); err == nil {
			t.Errorf("ValidateBid(%v) accepted", cmd.GetBid())
		}
		want(t, a.apply(cmd), api.Outcome_EXCEPTION, api.Reason_INVALID_REQUEST)
	}
}

// Rule: client sessions and the dedup parameters are in the snapshot; a
// restored state answers a retry with the original outcome and keeps the
// snapshot's parameters.
func TestSessionSnapshot(t *testing.T) {
	a := &applier{t: t, s: NewWithDedup(DedupParams{RequestWindow: 4, MaxPending: 7, ClientTTLMs: 5000}), ms: 1000}
	a.apply(open("a1", 30*24*3600*1000, 1, 0, 0, "o1"))
	first := a.apply(sbid("a1", "alice", 10, "c1", 1, 1))
	a.apply(sbid("a1", "alice", 11, "c1", 2, 1))
	a.apply(sbid("a1", "bob", 12, "c2", 1, 1))
	r, err := Restore(a.s.Snapshot())
	if err != nil {
		t.Fatal(err)
	}
	if r.Digest() != a.s.Digest() || r.Dedup() != a.s.Dedup() {
		t.Fatalf("restored state differs: dedup %+v vs %+v", r.Dedup(), a.s.Dedup())
	}
	b := &applier{t: t, s: r, ms: a.ms}
	if got := b.apply(sbid("a1", "alice", 10, "c1", 1, 1)); !got.Duplicate || got.Seq != first.Seq {
		t.Fatalf("retry after restore: %+v", got)
	}
	bad := a.s.Snapshot()
	bad.Clients[0].Entries = append(bad.Clients[0].Entries, bad.Clients[0].Entries[0])
	if _, err := Restore(bad); err == nil {
		t.Fatal("session with out-of-order entries accepted")
	}
}
