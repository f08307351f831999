package client

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/api"
)

// BidStream answers like Bid, one reply per request, on the stream: the
// first `unavailable` bids get an UNAVAILABLE answer, later ones SUCCESS.
func (f *fakeNode) BidStream(stream grpc.BidiStreamingServer[api.BidRequest, api.BidReply]) error {
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		f.mu.Lock()
		f.bids = append(f.bids, r.RequestId)
		f.streamBids++
		n, hang, unavailable := len(f.bids), f.hang, f.unavailable
		f.mu.Unlock()
		if hang {
			continue // never answer
		}
		rep := &api.BidReply{Outcome: api.Outcome_SUCCESS, Auction: r.Auction, Amount: r.Amount,
			Version: uint64(n), Node: f.id, RequestId: r.RequestId}
		if n <= unavailable {
			rep = &api.BidReply{Outcome: api.Outcome_EXCEPTION, Reason: api.Reason_UNAVAILABLE,
				Detail: "chain reconfiguring", Auction: r.Auction, Amount: r.Amount, Node: f.id, RequestId: r.RequestId}
		}
		if err := stream.Send(rep); err != nil {
			return err
		}
	}
}

func newTestSession(t *testing.T, c *Client) *BidSession {
	t.Helper()
	s := c.NewBidSession()
	t.Cleanup(func() { s.Close() })
	return s
}

// A session carries many bids on one stream and retries an UNAVAILABLE
// answer with the same request id.
func TestSessionRetriesWithSameRequestID(t *testing.T) {
	for _, pinned := range []bool{false, true} {
		f := &fakeNode{id: "n1", unavailable: 2}
		startFake(t, f)
		c := newTestClient(t, []string{f.addr}, Options{Pinned: pinned})
		s := newTestSession(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := s.Bid(ctx, "a1", "alice", 100, "req-1")
		if err != nil || r.Outcome != api.Outcome_SUCCESS {
			t.Fatalf("pinned=%v: Bid: %v %v", pinned, r, err)
		}
		for i := range 10 {
			if r, err := s.Bid(ctx, "a1", "alice", int64(101+i), ""); err != nil || r.Amount != int64(101+i) {
				t.Fatalf("pinned=%v: bid %d: %v %v", pinned, i, r, err)
			}
		}
		ids := f.requestIDs()
		if len(ids) != 13 || ids[0] != "req-1" || ids[1] != "req-1" || ids[2] != "req-1" || ids[3] == "req-1" {
			t.Fatalf("pinned=%v: request ids seen %q, want req-1 three times, then others", pinned, ids)
		}
	}
}

// When the head is unreachable, the session falls back to another member.
func TestSessionFallsBackWhenHeadIsDown(t *testing.T) {
	f := &fakeNode{id: "n2"}
	startFake(t, f)
	f.config = &api.ChainConfig{Epoch: 3, Chain: []*api.Member{{Id: "n1", Addr: deadAddr(t)}, {Id: "n2", Addr: f.addr}}}
	c := newTestClient(t, []string{f.addr}, Options{})
	s := newTestSession(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := s.Bid(ctx, "a1", "alice", 100, "req-7")
	if err != nil || r.Node != "n2" {
		t.Fatalf("Bid: %v %v, want an answer from n2", r, err)
	}
}

// A stream that gets no answer is cut after the attempt timeout and the
// bid is retried, with the same request id, on a new stream elsewhere.
func TestSessionAttemptTimeout(t *testing.T) {
	hung := &fakeNode{id: "n1", hang: true}
	startFake(t, hung)
	f := &fakeNode{id: "n2"}
	startFake(t, f)
	c := newTestClient(t, []string{hung.addr, f.addr}, Options{Pinned: true, AttemptTimeout: 100 * time.Millisecond})
	s := newTestSession(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := s.Bid(ctx, "a1", "alice", 100, "req-3")
	if err != nil || r.Node != "n2" {
		t.Fatalf("Bid: %v %v, want an answer from n2", r, err)
	}
	if ids := hung.requestIDs(); len(ids) != 1 || ids[0] != "req-3" {
		t.Fatalf("hung node saw %q", ids)
	}
	if ids := f.requestIDs(); len(ids) != 1 || ids[0] != "req-3" {
		t.Fatalf("second node saw %q", ids)
	}
}

// When no node decides before the caller's context ends, the error wraps
// ErrUnavailable and the context's error, and comes soon after.
func TestSessionUnavailableAfterTimeout(t *testing.T) {
	for _, hang := range []bool{false, true} {
		f := &fakeNode{id: "n1", unavailable: 1 << 30, hang: hang}
		startFake(t, f)
		c := newTestClient(t, []string{f.addr}, Options{AttemptTimeout: 10 * time.Second})
		s := newTestSession(t, c)
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		_, err := s.Bid(ctx, "a1", "alice", 100, "req-9")
		cancel()
		if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("hang=%v: err = %v, want ErrUnavailable and DeadlineExceeded", hang, err)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("hang=%v: Bid took %v after a 200ms deadline", hang, d)
		}
		for _, id := range f.requestIDs() {
			if id != "req-9" {
				t.Fatalf("hang=%v: a retry used request id %q", hang, id)
			}
		}
		// The session still works once the node answers.
		f.mu.Lock()
		f.unavailable, f.hang = 0, false
		f.mu.Unlock()
		ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
		if r, err := s.Bid(ctx, "a1", "alice", 101, ""); err != nil || r.Outcome != api.Outcome_SUCCESS {
			t.Fatalf("hang=%v: bid after recovery: %v %v", hang, r, err)
		}
		cancel()
	}
}

// Sessions of one client share its connection, each on its own stream.
func TestSessionsInParallel(t *testing.T) {
	f := &fakeNode{id: "n1"}
	startFake(t, f)
	c := newTestClient(t, []string{f.addr}, Options{})
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			s := c.NewBidSession()
			defer s.Close()
			for j := range 50 {
				amount := int64(i*1000 + j)
				r, err := s.Bid(context.Background(), "a1", "b", amount, "")
				if err != nil || r.Amount != amount {
					t.Errorf("session %d bid %d: %v %v", i, j, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.streamBids != 400 {
		t.Fatalf("%d bids on streams, want 400", f.streamBids)
	}
}
