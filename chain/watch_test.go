package chain

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
)

// watchEvents opens a watch at node id and collects its events until the
// stream ends or ctx is done.
func watchEvents(ctx context.Context, c *grpcCluster, id, auction string, after uint64) (<-chan *api.AuctionEvent, <-chan error) {
	events, done := make(chan *api.AuctionEvent, 4096), make(chan error, 1)
	stream, err := c.client(id).Watch(ctx, &api.WatchAuctionRequest{Auction: auction, AfterSeq: after})
	if err != nil {
		done <- err
		close(events)
		return events, done
	}
	go func() {
		defer close(events)
		for {
			ev, err := stream.Recv()
			if err != nil {
				done <- err
				return
			}
			events <- ev
		}
	}()
	return events, done
}

func bidOK(t *testing.T, c *grpcCluster, via, auction, bidder string, amount int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := c.client(via).Bid(ctx, &api.BidRequest{Auction: auction, Bidder: bidder, Amount: amount,
		RequestId: fmt.Sprintf("%s-%d", bidder, amount)})
	if err != nil || rep.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("bid %d by %s: %v %v", amount, bidder, rep, err)
	}
}

// TestWatchStreamsCommittedChanges: the tail streams the auction's state,
// then every successful bid (with the bidder it outbid) and the close, in
// increasing sequence order; a failed bid sends nothing.
func TestWatchStreamsCommittedChanges(t *testing.T) {
	c := startGRPCCluster(t, 3)
	c.open(t, "n1", "a1")
	bidOK(t, c, "n1", "a1", "alice", 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events, _ := watchEvents(ctx, c, "n3", "a1", 0)

	first := <-events
	if first.GetKind() != api.EventKind_EVENT_STATE || first.Info.Highest != 10 || first.Info.Bidder != "alice" {
		t.Fatalf("first event %v, want the state with alice at 10", first)
	}
	bidOK(t, c, "n2", "a1", "bob", 20)
	if rep, err := c.client("n1").Bid(ctx, &api.BidRequest{Auction: "a1", Bidder: "carol", Amount: 5, RequestId: "low"}); err != nil || rep.Outcome != api.Outcome_FAIL {
		t.Fatalf("low bid: %v %v", rep, err)
	}
	bidOK(t, c, "n1", "a1", "alice", 30)
	for _, want := range []struct {
		bidder, previous string
		amount, prevAmt  int64
	}{{"bob", "alice", 20, 10}, {"alice", "bob", 30, 20}} {
		ev := <-events
		if ev.GetKind() != api.EventKind_EVENT_HIGHEST || ev.Info.Bidder != want.bidder || ev.Info.Highest != want.amount ||
			ev.PreviousBidder != want.previous || ev.PreviousAmount != want.prevAmt || ev.Seq <= first.Seq {
			t.Fatalf("event %v, want %s at %d outbidding %s at %d", ev, want.bidder, want.amount, want.previous, want.prevAmt)
		}
		first = ev
	}
	// A watcher that has seen everything gets no state event, only news.
	late, _ := watchEvents(ctx, c, "n3", "a1", first.Seq)
	bidOK(t, c, "n1", "a1", "bob", 40)
	for _, ch := range []<-chan *api.AuctionEvent{events, late} {
		if ev := <-ch; ev.GetKind() != api.EventKind_EVENT_HIGHEST || ev.Info.Highest != 40 {
			t.Fatalf("event %v, want bob's 40", ev)
		}
	}
}

// TestWatchOnlyAtTheTail: a node that is not the tail refuses a watch and
// names the tail; an unknown auction is NotFound.
func TestWatchOnlyAtTheTail(t *testing.T) {
	c := startGRPCCluster(t, 3)
	c.open(t, "n1", "a1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, done := watchEvents(ctx, c, "n1", "a1", 0)
	if err := <-done; status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("watch at the head: %v, want FailedPrecondition", err)
	}
	_, done = watchEvents(ctx, c, "n3", "nope", 0)
	if err := <-done; status.Code(err) != codes.NotFound {
		t.Fatalf("watch of an unknown auction: %v, want NotFound", err)
	}
}

// TestWatchEndsWhenTailChanges: when a reconfiguration makes another node
// the tail, the old tail ends its watch streams with Unavailable, and the
// new tail serves the watch from where the watcher left off.
func TestWatchEndsWhenTailChanges(t *testing.T) {
	c := startGRPCCluster(t, 3)
	c.open(t, "n1", "a1")
	bidOK(t, c, "n1", "a1", "alice", 10)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events, done := watchEvents(ctx, c, "n3", "a1", 0)
	st := <-events
	c.nodes["n3"].Stop()
	if err := <-done; status.Code(err) != codes.Unavailable {
		t.Fatalf("watch at a stopped tail ended with %v, want Unavailable", err)
	}
	cfg := &api.ChainConfig{Epoch: 2, Chain: []*api.Member{c.cfg.Chain[0], c.cfg.Chain[1]}}
	for _, id := range []string{"n1", "n2"} {
		if _, err := c.admin(id).SetConfig(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	bidOK(t, c, "n1", "a1", "bob", 20)
	resumed, _ := watchEvents(ctx, c, "n2", "a1", st.Seq)
	ev := <-resumed
	if ev.GetKind() != api.EventKind_EVENT_HIGHEST || ev.Info.Highest != 20 || ev.Info.Bidder != "bob" ||
		ev.PreviousBidder != "alice" || ev.PreviousAmount != 10 || ev.Seq <= st.Seq {
		t.Fatalf("resumed watch began with %v, want the missed bid: bob at 20 outbidding alice at 10", ev)
	}
}

// TestWatchResumeReplaysMissedChanges: a watch resumed after a sequence
// number gets every change after it, in order, from the node's history,
// as long as the history reaches back that far; past it, the state.
func TestWatchResumeReplaysMissedChanges(t *testing.T) {
	c := startGRPCCluster(t, 3)
	c.open(t, "n1", "a1")
	bidOK(t, c, "n1", "a1", "alice", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	events, _ := watchEvents(ctx, c, "n3", "a1", 0)
	seen := (<-events).Seq
	for a := int64(2); a <= 11; a++ {
		bidOK(t, c, "n2", "a1", fmt.Sprint("b", a%3), a)
	}
	resumed, _ := watchEvents(ctx, c, "n3", "a1", seen)
	for want := int64(2); want <= 11; want++ {
		ev := <-resumed
		if ev.GetKind() != api.EventKind_EVENT_HIGHEST || ev.Info.Highest != want || ev.PreviousAmount != want-1 {
			t.Fatalf("replayed event %v, want the bid of %d after %d", ev, want, want-1)
		}
	}
	// Push the history past its length: a resume from the start gets the
	// state instead.
	for a := int64(12); a <= historyLen+12; a++ {
		bidOK(t, c, "n1", "a1", "b", a)
	}
	old, _ := watchEvents(ctx, c, "n3", "a1", seen)
	if ev := <-old; ev.GetKind() != api.EventKind_EVENT_STATE || ev.Info.Highest != historyLen+12 {
		t.Fatalf("resume beyond the history began with %v, want the state", ev)
	}
}

// TestWatchSeesTheClose: the close the head sequences reaches watchers as
// a CLOSED event naming the winner.
func TestWatchSeesTheClose(t *testing.T) {
	c := startGRPCCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rep, err := c.client("n1").OpenAuction(ctx, &api.OpenAuctionRequest{Open: &api.OpenAuction{
		Auction: "quick", Item: "lamp", DurationMs: 300, MinIncrement: 1, RequestId: "open-quick"}})
	if err != nil || rep.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("open: %v %v", rep, err)
	}
	bidOK(t, c, "n1", "quick", "alice", 10)
	events, _ := watchEvents(ctx, c, "n3", "quick", 0)
	for ev := range events {
		if ev.GetKind() == api.EventKind_EVENT_CLOSED {
			if ev.Info.State != api.AuctionState_CLOSED_STATE || ev.Info.Bidder != "alice" || ev.Info.Highest != 10 {
				t.Fatalf("closed event %v, want alice winning at 10", ev)
			}
			return
		}
	}
	t.Fatal("the watch ended without a CLOSED event")
}

// TestWatchCutsOffASlowWatcher: a watcher that takes no events is cut off
// with ResourceExhausted once it is watchBuffer events behind, and the
// node keeps serving everyone else.
func TestWatchCutsOffASlowWatcher(t *testing.T) {
	c := startGRPCCluster(t, 1)
	c.open(t, "n1", "a1")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	w := &auctionWatcher{auction: "a1", events: make(chan *api.AuctionEvent, watchBuffer), done: make(chan struct{})}
	if err := c.nodes["n1"].do(ctx, func(*Replica) { c.nodes["n1"].watches.add(w) }); err != nil {
		t.Fatal(err)
	}
	for a := int64(1); a <= watchBuffer+1; a++ {
		bidOK(t, c, "n1", "a1", "b", a)
	}
	select {
	case <-w.done:
		if status.Code(w.err) != codes.ResourceExhausted {
			t.Fatalf("slow watcher ended with %v, want ResourceExhausted", w.err)
		}
	case <-ctx.Done():
		t.Fatal("slow watcher was never cut off")
	}
}
