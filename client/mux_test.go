package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/api"
)

// muxNode is a fake head for BidMux: it answers a stream's bids in
// batches of `batch`, last first (a real node answers as updates commit,
// in any order), or holds every answer until release.
type muxNode struct {
	api.UnimplementedAuctionsServer
	api.UnimplementedAdminServer
	id, addr string
	batch    int

	mu      sync.Mutex // guards the fields below
	seen    []string   // request ids, in arrival order
	holding bool
	held    []func() // sends of held answers
	decided map[string]uint64
}

func (f *muxNode) Status(context.Context, *api.StatusRequest) (*api.NodeStatus, error) {
	return &api.NodeStatus{Id: f.id, Addr: f.addr, Config: &api.ChainConfig{Epoch: 1, Chain: []*api.Member{{Id: f.id, Addr: f.addr}}}}, nil
}

// BidStream decides each request id once: a repeat gets the first
// answer's version, as the chain's dedup would.
func (f *muxNode) BidStream(stream grpc.BidiStreamingServer[api.BidRequest, api.BidReply]) error {
	var sendMu sync.Mutex
	send := func(r *api.BidReply) {
		sendMu.Lock()
		defer sendMu.Unlock()
		_ = stream.Send(r)
	}
	reqs := make(chan *api.BidRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			reqs <- req
		}
	}()
	var batch []*api.BidReply
	flush := func() {
		for i := len(batch) - 1; i >= 0; i-- {
			send(batch[i])
		}
		batch = batch[:0]
	}
	for {
		var req *api.BidRequest
		select {
		case req = <-reqs:
		case err := <-recvErr:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-time.After(2 * time.Millisecond): // a batch that does not fill goes out anyway
			flush()
			continue
		}
		f.mu.Lock()
		f.seen = append(f.seen, req.RequestId)
		if f.decided == nil {
			f.decided = map[string]uint64{}
		}
		v, ok := f.decided[req.RequestId]
		if !ok {
			v = uint64(len(f.decided) + 1)
			f.decided[req.RequestId] = v
		}
		rep := &api.BidReply{Outcome: api.Outcome_SUCCESS, Auction: req.Auction, Amount: req.Amount, Version: v,
			Node: f.id, RequestId: req.RequestId}
		if f.holding {
			f.held = append(f.held, func() { send(rep) })
			f.mu.Unlock()
			continue
		}
		f.mu.Unlock()
		batch = append(batch, rep)
		if len(batch) >= max(1, f.batch) {
			flush()
		}
	}
}

func (f *muxNode) hold(on bool) {
	f.mu.Lock()
	f.holding = on
	held := f.held
	f.held = nil
	f.mu.Unlock()
	for _, s := range held {
		s()
	}
}

func (f *muxNode) requestIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.seen...)
}

func startMuxNode(t *testing.T, f *muxNode) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	s := grpc.NewServer()
	api.RegisterAuctionsServer(s, f)
	api.RegisterAdminServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
}

func newTestMux(t *testing.T, c *Client, lanes int) *BidMux {
	t.Helper()
	m := c.NewBidMux(lanes)
	t.Cleanup(func() { m.Close() })
	return m
}

// Many goroutines bid at once through one mux; the node answers each
// stream's bids out of order, and every bid gets its own answer.
func TestMuxMatchesOutOfOrderAnswers(t *testing.T) {
	f := &muxNode{id: "n1", batch: 8}
	startMuxNode(t, f)
	c := newTestClient(t, []string{f.addr}, Options{AttemptTimeout: 5 * time.Second})
	m := newTestMux(t, c, 2)
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 32 {
				amount := int64(g*1000 + i)
				r, err := m.Bid(context.Background(), "a1", fmt.Sprint("b", g), amount, fmt.Sprintf("r%d-%d", g, i))
				if err != nil || r.Amount != amount || r.RequestId != fmt.Sprintf("r%d-%d", g, i) {
					t.Errorf("bid %d: %v %v", amount, r, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(f.requestIDs()); n != 16*32 {
		t.Errorf("the node saw %d bids, want %d (each once)", n, 16*32)
	}
}

// An UNAVAILABLE answer is retried with the same request id, and a node
// that does not answer within the attempt timeout is left for another.
func TestMuxRetriesWithSameRequestID(t *testing.T) {
	f := &fakeNode{id: "n1", unavailable: 2}
	startFake(t, f)
	c := newTestClient(t, []string{f.addr}, Options{})
	m := newTestMux(t, c, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r, err := m.Bid(ctx, "a1", "alice", 100, "req-1"); err != nil || r.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("Bid: %v %v", r, err)
	}
	if ids := f.requestIDs(); fmt.Sprint(ids) != "[req-1 req-1 req-1]" {
		t.Fatalf("request ids seen %q, want req-1 three times", ids)
	}

	hung := &fakeNode{id: "h1", hang: true}
	startFake(t, hung)
	ok := &fakeNode{id: "n2"}
	startFake(t, ok)
	c2 := newTestClient(t, []string{hung.addr, ok.addr}, Options{Pinned: true, AttemptTimeout: 100 * time.Millisecond})
	m2 := newTestMux(t, c2, 1)
	r, err := m2.Bid(ctx, "a1", "alice", 100, "req-3")
	if err != nil || r.Node != "n2" {
		t.Fatalf("Bid: %v %v, want an answer from n2", r, err)
	}
	if ids := hung.requestIDs(); fmt.Sprint(ids) != "[req-3]" {
		t.Fatalf("hung node saw %q", ids)
	}
	// When no node decides before the caller's context ends, the error
	// wraps ErrUnavailable and the context's error.
	c3 := newTestClient(t, []string{hung.addr}, Options{AttemptTimeout: 10 * time.Second})
	short, cancel3 := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel3()
	if _, err := newTestMux(t, c3, 1).Bid(short, "a1", "alice", 100, "req-9"); !errors.Is(err, ErrUnavailable) ||
		!errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
}

// A bid whose request id is in flight waits for it and gets its answer;
// the same id for another request is refused; a bid whose first caller
// left is placed again by the one still waiting, with the same id.
func TestMuxOneBidPerRequestID(t *testing.T) {
	f := &muxNode{id: "n1"}
	startMuxNode(t, f)
	c := newTestClient(t, []string{f.addr}, Options{AttemptTimeout: 5 * time.Second})
	m := newTestMux(t, c, 2)
	ctx := context.Background()
	f.hold(true)
	first := make(chan *api.BidReply, 1)
	go func() {
		r, err := m.Bid(ctx, "a1", "alice", 100, "req-1")
		if err != nil {
			t.Error(err)
		}
		first <- r
	}()
	waitSeen(t, f, 1)
	second := make(chan *api.BidReply, 1)
	go func() {
		r, err := m.Bid(ctx, "a1", "alice", 100, "req-1")
		if err != nil {
			t.Error(err)
		}
		second <- r
	}()
	r, err := m.Bid(ctx, "a1", "alice", 999, "req-1")
	if err != nil || r.Reason != api.Reason_REQUEST_MISMATCH {
		t.Fatalf("same id, another amount: %v %v, want REQUEST_MISMATCH", r, err)
	}
	time.Sleep(50 * time.Millisecond)
	f.hold(false)
	r1, r2 := <-first, <-second
	if r1.GetVersion() != 1 || r2.GetVersion() != 1 {
		t.Fatalf("answers %v and %v, want the same (version 1)", r1, r2)
	}
	if ids := f.requestIDs(); len(ids) != 1 {
		t.Fatalf("the node saw %q, want req-1 once", ids)
	}

	// The first caller leaves; the one waiting places the bid itself.
	f.hold(true)
	leaving, leave := context.WithCancel(ctx)
	gone := make(chan error, 1)
	go func() {
		_, err := m.Bid(leaving, "a1", "alice", 200, "req-2")
		gone <- err
	}()
	waitSeen(t, f, 2)
	stays := make(chan *api.BidReply, 1)
	go func() {
		r, err := m.Bid(ctx, "a1", "alice", 200, "req-2")
		if err != nil {
			t.Error(err)
		}
		stays <- r
	}()
	time.Sleep(20 * time.Millisecond)
	leave()
	if err := <-gone; !errors.Is(err, ErrUnavailable) {
		t.Fatalf("the caller that left got %v, want ErrUnavailable", err)
	}
	waitSeen(t, f, 3)
	f.hold(false)
	if r := <-stays; r.GetVersion() != 2 || r.GetRequestId() != "req-2" {
		t.Fatalf("the caller that stayed got %v, want version 2", r)
	}
	if ids := f.requestIDs(); fmt.Sprint(ids) != "[req-1 req-2 req-2]" {
		t.Fatalf("the node saw %q", ids)
	}
}

func waitSeen(t *testing.T, f *muxNode, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for len(f.requestIDs()) < n {
		if time.Now().After(deadline) {
			t.Fatalf("the node saw %q, want %d bids", f.requestIDs(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// After Close, bids fail with ErrClosed.
func TestMuxClose(t *testing.T) {
	f := &muxNode{id: "n1"}
	startMuxNode(t, f)
	c := newTestClient(t, []string{f.addr}, Options{})
	m := c.NewBidMux(0)
	if _, err := m.Bid(context.Background(), "a1", "a", 1, ""); err != nil {
		t.Fatal(err)
	}
	m.Close()
	if _, err := m.Bid(context.Background(), "a1", "a", 2, ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("bid after Close: %v, want ErrClosed", err)
	}
}
