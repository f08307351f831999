package client

import (
	"context"
	"errors"
	"net"
	"regexp"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
)

// fakeNode is a tiny gRPC server standing in for a chain node: its Bid
// answers Unavailable for the first `unavailable` calls, then SUCCESS; it
// records every request id it sees.
type fakeNode struct {
	api.UnimplementedAuctionsServer
	api.UnimplementedAdminServer

	id          string
	addr        string
	unavailable int

	mu     sync.Mutex // guards the fields below (and unavailable, once serving)
	config *api.ChainConfig
	hang   bool     // BidStream never answers
	bids   []string // request ids, in arrival order
	// streamBids counts the bids that came on a BidStream.
	streamBids int
	opens      []string
	reads      int
}

func (f *fakeNode) Bid(_ context.Context, r *api.BidRequest) (*api.BidReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bids = append(f.bids, r.RequestId)
	if len(f.bids) <= f.unavailable {
		return nil, status.Error(codes.Unavailable, "chain reconfiguring")
	}
	return &api.BidReply{Outcome: api.Outcome_SUCCESS, Auction: r.Auction, Amount: r.Amount,
		Version: uint64(len(f.bids)), Node: f.id}, nil
}

func (f *fakeNode) OpenAuction(_ context.Context, r *api.OpenAuctionRequest) (*api.OpenAuctionReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.opens = append(f.opens, r.GetOpen().GetRequestId())
	if len(f.opens) <= f.unavailable {
		return nil, status.Error(codes.Unavailable, "chain reconfiguring")
	}
	return &api.OpenAuctionReply{Outcome: api.Outcome_SUCCESS, Node: f.id}, nil
}

func (f *fakeNode) Result(_ context.Context, r *api.ResultRequest) (*api.ResultReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if r.Auction != "a1" {
		return nil, status.Errorf(codes.NotFound, "no auction %q", r.Auction)
	}
	return &api.ResultReply{Info: &api.AuctionInfo{Auction: "a1"}, Node: f.id}, nil
}

func (f *fakeNode) Status(context.Context, *api.StatusRequest) (*api.NodeStatus, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &api.NodeStatus{Id: f.id, Addr: f.addr, Config: f.config}, nil
}

func (f *fakeNode) requestIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bids...)
}

var _ api.AuctionsServer = (*fakeNode)(nil)
var _ api.AdminServer = (*fakeNode)(nil)

// startFake serves f on a fresh 127.0.0.1 port until the test ends.
func startFake(t *testing.T, f *fakeNode) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	if f.config == nil {
		f.config = &api.ChainConfig{Epoch: 1, Chain: []*api.Member{{Id: f.id, Addr: f.addr}}}
	}
	s := grpc.NewServer()
	api.RegisterAuctionsServer(s, f)
	api.RegisterAdminServer(s, f)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
}

// deadAddr returns a 127.0.0.1 address on which nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func newTestClient(t *testing.T, addrs []string, opts Options) *Client {
	t.Helper()
	opts.MinBackoff, opts.MaxBackoff = time.Millisecond, 5*time.Millisecond
	if opts.AttemptTimeout == 0 {
		opts.AttemptTimeout = 500 * time.Millisecond
	}
	c, err := New(addrs, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// An undecided bid is retried with the same request id until it is decided.
func TestBidRetriesWithSameRequestID(t *testing.T) {
	for _, pinned := range []bool{false, true} {
		f := &fakeNode{id: "n1", unavailable: 2}
		startFake(t, f)
		c := newTestClient(t, []string{f.addr}, Options{Pinned: pinned})
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.Bid(ctx, "a1", "alice", 100, "req-1")
		if err != nil {
			t.Fatalf("pinned=%v: Bid: %v", pinned, err)
		}
		if r.Outcome != api.Outcome_SUCCESS {
			t.Fatalf("pinned=%v: outcome %v, want SUCCESS", pinned, r.Outcome)
		}
		ids := f.requestIDs()
		if len(ids) != 3 || ids[0] != "req-1" || ids[1] != "req-1" || ids[2] != "req-1" {
			t.Fatalf("pinned=%v: request ids seen %q, want req-1 three times", pinned, ids)
		}
	}
}

// An empty request id is replaced by one random id that every retry reuses.
func TestBidGeneratesOneRequestID(t *testing.T) {
	f := &fakeNode{id: "n1", unavailable: 2}
	startFake(t, f)
	c := newTestClient(t, []string{f.addr}, Options{})
	if _, err := c.Bid(context.Background(), "a1", "alice", 100, ""); err != nil {
		t.Fatal(err)
	}
	ids := f.requestIDs()
	if len(ids) != 3 || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("request ids %q: want one id three times", ids)
	}
	if !regexp.MustCompile(`^[0-9a-f]{16}$`).MatchString(ids[0]) {
		t.Fatalf("generated request id %q is not 16 hex characters", ids[0])
	}
	if a, b := NewRequestID(), NewRequestID(); a == b {
		t.Fatal("NewRequestID repeats itself")
	}
}

func TestOpenRetriesWithSameRequestID(t *testing.T) {
	f := &fakeNode{id: "n1", unavailable: 2}
	startFake(t, f)
	c := newTestClient(t, []string{f.addr}, Options{})
	open := &api.OpenAuction{Auction: "a1", DurationMs: 1000}
	r, err := c.Open(context.Background(), open)
	if err != nil || r.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("Open: %v %v", r, err)
	}
	if open.RequestId != "" {
		t.Fatal("Open modified its argument")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.opens) != 3 || f.opens[0] == "" || f.opens[0] != f.opens[1] || f.opens[1] != f.opens[2] {
		t.Fatalf("open request ids %q: want one id three times", f.opens)
	}
}

// Bids go to the head of the learned chain; when the head is unreachable
// the client falls back to another member, which forwards.
func TestBidFallsBackWhenHeadIsDown(t *testing.T) {
	f := &fakeNode{id: "n2"}
	startFake(t, f)
	dead := deadAddr(t)
	f.config = &api.ChainConfig{Epoch: 3, Chain: []*api.Member{{Id: "n1", Addr: dead}, {Id: "n2", Addr: f.addr}}}
	c := newTestClient(t, []string{f.addr}, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Bid(ctx, "a1", "alice", 100, "req-7")
	if err != nil {
		t.Fatal(err)
	}
	if r.Node != "n2" {
		t.Fatalf("answered by %q, want n2", r.Node)
	}
	if v, err := c.Chain(ctx); err != nil || v.GetEpoch() != 3 || v.Chain[0].Id != "n1" {
		t.Fatalf("Chain: %v %v, want epoch 3 with head n1", v, err)
	}
}

// Reads go to the tail of the learned chain.
func TestResultGoesToTail(t *testing.T) {
	head := &fakeNode{id: "n1"}
	tail := &fakeNode{id: "n2"}
	startFake(t, head)
	startFake(t, tail)
	cfg := &api.ChainConfig{Epoch: 2, Chain: []*api.Member{{Id: "n1", Addr: head.addr}, {Id: "n2", Addr: tail.addr}}}
	head.config, tail.config = cfg, cfg
	c := newTestClient(t, []string{head.addr}, Options{})
	r, err := c.Result(context.Background(), "a1")
	if err != nil {
		t.Fatal(err)
	}
	if r.Node != "n2" {
		t.Fatalf("read answered by %q, want the tail n2", r.Node)
	}
	if _, err := c.Result(context.Background(), "nope"); !errors.Is(err, ErrUnknownAuction) {
		t.Fatalf("Result of an unknown auction: %v, want ErrUnknownAuction", err)
	}
	head.mu.Lock()
	defer head.mu.Unlock()
	if head.reads != 0 {
		t.Fatalf("head served %d reads", head.reads)
	}
}

// When no node decides before the caller's context ends, the error wraps
// ErrUnavailable and the context's error.
func TestBidUnavailableAfterTimeout(t *testing.T) {
	f := &fakeNode{id: "n1", unavailable: 1 << 30}
	startFake(t, f)
	c := newTestClient(t, []string{f.addr, deadAddr(t)}, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := c.Bid(ctx, "a1", "alice", 100, "req-9")
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrUnavailable and DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Bid took %v after a 200ms deadline", d)
	}
	for _, id := range f.requestIDs() {
		if id != "req-9" {
			t.Fatalf("a retry used request id %q", id)
		}
	}
}

// One attempt that hangs does not eat the whole budget: the attempt timeout
// cuts it and the next attempt goes elsewhere.
func TestAttemptTimeout(t *testing.T) {
	// A listener that accepts TCP connections but never speaks HTTP/2.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	f := &fakeNode{id: "n2"}
	startFake(t, f)
	c := newTestClient(t, []string{lis.Addr().String(), f.addr}, Options{Pinned: true, AttemptTimeout: 100 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.Bid(ctx, "a1", "alice", 100, "req-3")
	if err != nil {
		t.Fatal(err)
	}
	if r.Node != "n2" {
		t.Fatalf("answered by %q, want n2", r.Node)
	}
}

func TestStatusAll(t *testing.T) {
	f := &fakeNode{id: "n1"}
	startFake(t, f)
	dead := deadAddr(t)
	c := newTestClient(t, []string{f.addr, dead}, Options{})
	res := c.StatusAll(context.Background())
	if len(res) != 2 || res[0].Addr != f.addr || res[0].Err != nil || res[0].Status.GetId() != "n1" {
		t.Fatalf("first result %+v", res[0])
	}
	if res[1].Addr != dead || res[1].Err == nil {
		t.Fatalf("dead node result %+v, want an error", res[1])
	}
}

func TestNewValidatesAddresses(t *testing.T) {
	if _, err := New(nil, Options{}); !errors.Is(err, ErrNoAddrs) {
		t.Fatalf("New(nil): %v", err)
	}
	for _, a := range []string{"localhost", ":7101", "h:0", "h:70000", "h:x"} {
		if _, err := New([]string{a}, Options{}); !errors.Is(err, ErrBadAddr) {
			t.Errorf("New(%q): %v, want ErrBadAddr", a, err)
		}
	}
	c, err := New([]string{"127.0.0.1:1"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := c.Bid(context.Background(), "a", "b", 1, ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("Bid after Close: %v", err)
	}
}
