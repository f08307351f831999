package e2e

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
)

// decide sends req through the cluster's nodes until one decides it (a
// reply that is not UNAVAILABLE), for at most 20 seconds.
func decide(t *testing.T, c *cluster, req *api.BidRequest) *api.BidReply {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		rep, err := c.auctions(c.ids[i%len(c.ids)]).Bid(ctx, req)
		cancel()
		if err == nil && rep.GetReason() != api.Reason_UNAVAILABLE {
			return rep
		}
		if err != nil && !retryable(err) {
			t.Fatalf("bid %v: %v", req, err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("bid %v not decided within 20s: %v %v", req, rep, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestExactlyOnceSessions: one bidder's client session sends 10,000 bids
// as fast as 16 concurrent callers can, while the reply to its first bid
// is "lost" (the client never acknowledges it). A retry of that first
// request then gets its original outcome, however many bids came after;
// so do retries of every other request after a SIGKILL of the whole
// cluster and a restart from the data dirs. A request id or client_seq
// reused for a different bid is refused with REQUEST_MISMATCH.
func TestExactlyOnceSessions(t *testing.T) {
	const n = 10_000
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1")
	w.openAuction("a1")
	const session = "e2e-session-1"
	sbid := func(seq uint64, amount int64) *api.BidRequest {
		// acked_below stays 1: the reply of request 1 never arrived.
		return &api.BidRequest{Auction: "a1", Bidder: "alice", Amount: amount, RequestId: fmt.Sprint("r", seq),
			Client: session, ClientSeq: seq, AckedBelow: 1}
	}
	replies := make([]*api.BidReply, n+1)
	replies[1] = decide(t, c, sbid(1, 10))
	if replies[1].Outcome != api.Outcome_SUCCESS {
		t.Fatalf("first bid: %v", replies[1])
	}
	start := time.Now()
	var wg sync.WaitGroup
	const callers = 16
	for g := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seq := uint64(2 + g); seq <= n; seq += callers {
				replies[seq] = decide(t, c, sbid(seq, 10+int64(seq)))
			}
		}()
	}
	wg.Wait()
	t.Logf("%d bids of one client session in %v", n-1, time.Since(start).Round(time.Millisecond))

	check := func(when string, seqs ...uint64) {
		t.Helper()
		for _, seq := range seqs {
			amount := int64(10)
			if seq > 1 {
				amount += int64(seq)
			}
			got := decide(t, c, sbid(seq, amount))
			want := replies[seq]
			if got.Outcome != want.Outcome || got.Reason != want.Reason || got.Version != want.Version {
				t.Errorf("%s: retry of request %d got %v/%v at seq %d; the original was %v/%v at seq %d", when, seq,
					got.Outcome, got.Reason, got.Version, want.Outcome, want.Reason, want.Version)
			}
		}
	}
	mismatch := func(when string, req *api.BidRequest) {
		t.Helper()
		if got := decide(t, c, req); got.Outcome != api.Outcome_EXCEPTION || got.Reason != api.Reason_REQUEST_MISMATCH {
			t.Errorf("%s: %v was answered %v/%v (%s), want EXCEPTION/REQUEST_MISMATCH", when, req,
				got.Outcome, got.Reason, got.Detail)
		}
	}
	check("after 10,000 bids", 1, 2, n/2, n)
	mismatch("after 10,000 bids", sbid(1, 11))
	other := sbid(n, 10+n)
	other.Client, other.ClientSeq, other.AckedBelow = "", 0, 0 // a recent request id, no session...
	other.Auction = "a2"                                       // ...for another auction
	mismatch("after 10,000 bids", other)

	before := c.config()
	c.killAll(c.ids...)
	for _, id := range c.ids {
		c.start(id)
	}
	cfg := c.waitRebuilt(before.GetEpoch(), 20*time.Second)
	t.Logf("whole cluster killed and restarted: %s", describeConfig(cfg))
	check("after a whole-cluster restart", 1, 2, 3, n/2, n-1, n)
	mismatch("after a whole-cluster restart", sbid(n, 1))
	c.waitSameState(t, c.ids...)

	// The client acknowledges everything: the outcomes are forgotten, and
	// an old request is refused rather than executed again.
	ack := &api.BidRequest{Auction: "a1", Bidder: "alice", Amount: 1_000_000, Client: session, ClientSeq: n + 1, AckedBelow: n + 1}
	if got := decide(t, c, ack); got.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("bid acknowledging every earlier one: %v", got)
	}
	if got := decide(t, c, sbid(2, 12)); got.Reason != api.Reason_STALE_REQUEST {
		t.Errorf("retry of an acknowledged request: %v/%v (%s), want STALE_REQUEST", got.Outcome, got.Reason, got.Detail)
	}
	bad := &api.BidRequest{Auction: "a1", Bidder: "alice", Amount: 5, Client: session, ClientSeq: 0}
	if got := decide(t, c, bad); got.Reason != api.Reason_INVALID_REQUEST {
		t.Errorf("client_seq 0: %v/%v (%s), want INVALID_REQUEST", got.Outcome, got.Reason, got.Detail)
	}
}
