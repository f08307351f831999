package chain

// Edge regression tests: each one replays an interleaving that the gRPC
// layer (node.go, transport.go, server.go) must survive; the comment on
// each test describes the hazard. None of them hangs the test binary: every
// wait is bounded and a Stop that does not return is reported, not waited
// for.

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/api"
)

// reviewGate is an input that blocks the driver until released.
type reviewGate struct{ entered, release chan struct{} }

func newReviewGate() *reviewGate {
	return &reviewGate{entered: make(chan struct{}), release: make(chan struct{})}
}

func (g *reviewGate) input() input {
	return input{f: func(*Replica) { close(g.entered); <-g.release }}
}

func (g *reviewGate) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-g.entered:
	case <-time.After(2 * time.Second):
		t.Fatal("gate input never ran")
	}
}

// startReviewNode starts a node on a loopback listener; cleanup stops it,
// reporting (not waiting forever for) a Stop that does not return.
func startReviewNode(t *testing.T, opts NodeOptions) *Node {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if opts.ID == "" {
		opts.ID = "r1"
	}
	opts.Addr = l.Addr().String()
	n, err := NewNode(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if d, ok := stopWithin(n, 2*time.Second); !ok {
			t.Errorf("cleanup: Stop did not return within %v", d)
		}
	})
	return n
}

// stopWithin calls n.Stop and reports whether it returned within d.
func stopWithin(n *Node, d time.Duration) (time.Duration, bool) {
	done := make(chan struct{})
	go func() { n.Stop(); close(done) }()
	select {
	case <-done:
		return d, true
	case <-time.After(d):
		return d, false
	}
}

func (n *Node) reviewQueueLen() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.inputs)
}

// TestHandoffWithFullQueue: a handler that has driven the replica for
// maxInlineRounds hands it to the helper while the input queue is full.
// The helper must not be waiting for room at that moment (only the driver
// makes room): its ticks are skipped, never queued, when the queue is full.
func TestHandoffWithFullQueue(t *testing.T) {
	n := startReviewNode(t, NodeOptions{Tick: 10 * time.Millisecond})

	// A client handler (this goroutine pool) becomes the driver; each gate
	// is taken by exactly one take(): gate k by the k-th take, two takes a
	// round, so gate 8 blocks the driver in round 3's second batch.
	gates := make([]*reviewGate, 8)
	for i := range gates {
		gates[i] = newReviewGate()
	}
	driverDone := make(chan struct{})
	go func() { n.enqueue(gates[0].input()); close(driverDone) }()
	gates[0].waitEntered(t)
	for k := 1; k < len(gates); k++ {
		n.enqueue(gates[k].input()) // returns at once: somebody drives
		close(gates[k-1].release)
		gates[k].waitEntered(t)
	}
	// The driver is blocked in round 3's last batch. Fill the queue (the
	// load of many busy streams), then let the helper's ticker find it full.
	go func() {
		for n.reviewQueueLen() < maxInputs {
			n.enqueue(input{f: func(*Replica) {}})
		}
	}()
	deadline := time.Now().Add(2 * time.Second)
	for n.reviewQueueLen() < maxInputs {
		if time.Now().After(deadline) {
			t.Fatal("queue never filled")
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(10 * n.opts.Tick) // the helper's tick is now waiting for room
	close(gates[len(gates)-1].release)
	select {
	case <-driverDone: // round 4: the handler handed over to the helper
	case <-time.After(2 * time.Second):
		t.Fatal("inline driver never handed over")
	}

	probe := make(chan struct{})
	go n.enqueue(input{f: func(*Replica) { close(probe) }})
	select {
	case <-probe:
	case <-time.After(2 * time.Second):
		t.Fatalf("node deadlocked: an input queued after the handoff never ran (queue %d)", n.reviewQueueLen())
	}
}

// silentChain is a peer whose replication handler accepts the stream and
// never reads it: a node whose own handler is stuck (e.g. waiting for room
// in a full input queue), as seen from its predecessor.
type silentChain struct {
	api.UnimplementedChainServer
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (s *silentChain) Stream(grpc.ClientStreamingServer[api.Envelope, api.StreamClosed]) error {
	s.once.Do(func() { close(s.entered) })
	<-s.release
	return nil
}

func bigForward(from, to string, size int) *api.ChainMessage {
	return &api.ChainMessage{From: from, To: to, Epoch: 1, Body: &api.ChainMessage_Forward{Forward: &api.Forward{
		Updates: []*api.Update{{Seq: 1, Command: &api.Command{Op: &api.Command_Open{Open: &api.OpenAuction{
			Auction: "a1", Item: strings.Repeat("x", size)}}}}}}}}
}

// TestTransportCloseWhenPeerStopsReading: a peer that stops reading makes
// Send block on HTTP/2 flow control. close must still return (the link's
// context ends the blocked Send), and the peer's queue must stay bounded.
func TestTransportCloseWhenPeerStopsReading(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	peer := &silentChain{entered: make(chan struct{}), release: make(chan struct{})}
	srv := grpc.NewServer(grpc.MaxRecvMsgSize(maxMsgBytes),
		grpc.StaticStreamWindowSize(streamWindow), grpc.StaticConnWindowSize(connWindow))
	api.RegisterChainServer(srv, peer)
	go srv.Serve(l)
	t.Cleanup(srv.Stop)
	t.Cleanup(func() { close(peer.release) }) // runs first: unblocks everything

	var downs atomic.Int32
	tr := newTransport("a", slog.New(slog.DiscardHandler), func(string) { downs.Add(1) })
	tr.setAddrs(&api.ChainConfig{Epoch: 1, Chain: []*api.Member{{Id: "a", Addr: "127.0.0.1:1"}, {Id: "b", Addr: l.Addr().String()}}})
	// 12 MiB to a peer whose stream window is 4 MiB.
	for range 12 {
		tr.send([]*api.ChainMessage{bigForward("a", "b", 1<<20)})
	}
	select {
	case <-peer.entered:
	case <-time.After(2 * time.Second):
		t.Fatal("peer never saw the stream")
	}
	time.Sleep(300 * time.Millisecond) // the sender is now blocked in Send
	for range 100 {
		tr.send([]*api.ChainMessage{bigForward("a", "b", 10)})
	}
	tr.peers["b"].mu.Lock()
	queued := len(tr.peers["b"].queue)
	tr.peers["b"].mu.Unlock()
	t.Logf("messages queued for the stuck peer: %d, peer-down reports: %d", queued, downs.Load())

	closed := make(chan struct{})
	go func() { tr.close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Errorf("transport.close (called by Node.Stop) did not return within 2s: the sender is blocked in Send to a peer that does not read")
	}
}

// TestStopWithFrozenPeer: a frozen peer (SIGSTOP, a wedged host behind a
// live kernel) accepts TCP and never answers the HTTP/2 handshake. Opening
// a stream to it is bounded and cancellable, so Node.Stop returns promptly.
func TestStopWithFrozenPeer(t *testing.T) {
	frozen, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var held []net.Conn
	go func() {
		for {
			c, err := frozen.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		frozen.Close()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// n2 is the tail; its predecessor n1 is the frozen peer: n2 says Hello.
	cfg := &api.ChainConfig{Epoch: 1, Chain: []*api.Member{
		{Id: "n1", Addr: frozen.Addr().String()}, {Id: "n2", Addr: l.Addr().String()}}}
	n, err := NewNode(NodeOptions{ID: "n2", Addr: l.Addr().String(), Initial: cfg,
		Tick: 5 * time.Millisecond, HelloRetry: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(l); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the Hello's stream is being opened
	if d, ok := stopWithin(n, 2*time.Second); !ok {
		t.Errorf("Stop did not return within %v: the transport is opening a stream to a frozen peer", d)
	}
}

// TestOpenAuctionReplyNotWrittenAfterReturn: when the call's context ends
// while OpenAuction's read of the opened auction is still queued, the
// queued function must not write into the reply the handler has returned.
func TestOpenAuctionReplyNotWrittenAfterReturn(t *testing.T) {
	// No ticks: this goroutine drives every input it queues, inline.
	n := startReviewNode(t, NodeOptions{Tick: time.Hour, Initial: &api.ChainConfig{Epoch: 1,
		Chain: []*api.Member{{Id: "r1", Addr: "127.0.0.1:1"}}}})
	gate := newReviewGate()
	ctx := &reviewCtx{Context: context.Background(), never: make(chan struct{}), closed: make(chan struct{})}
	close(ctx.closed)
	// When the handler has its open's reply and waits on ctx for the first
	// time, another input occupies the driver; then the call's context
	// ends (its second wait, in do).
	ctx.onFirst = func() {
		go n.enqueue(gate.input())
		gate.waitEntered(t)
	}
	s := &auctionsServer{n: n}
	out, err := s.OpenAuction(ctx, &api.OpenAuctionRequest{Open: &api.OpenAuction{
		Auction: "a1", Item: "lamp", DurationMs: 60_000, MinIncrement: 1, RequestId: "o1"}})
	if err != nil || out.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("open: %v %v", out, err)
	}
	before := out.GetInfo()
	close(gate.release)
	if err := n.do(context.Background(), func(*Replica) {}); err != nil {
		t.Fatal(err)
	}
	if after := out.GetInfo(); before != after {
		t.Errorf("OpenAuction's reply was modified after the handler returned it (Info %v -> %v)", before, after)
	}
}

// reviewCtx returns a never-closed Done channel on its first call (after
// running onFirst) and a closed one afterwards.
type reviewCtx struct {
	context.Context
	calls   atomic.Int32
	never   chan struct{}
	closed  chan struct{}
	onFirst func()
}

func (c *reviewCtx) Done() <-chan struct{} {
	if c.calls.Add(1) == 1 {
		c.onFirst()
		return c.never
	}
	return c.closed
}

func (c *reviewCtx) Err() error {
	if c.calls.Load() >= 2 {
		return context.Canceled
	}
	return nil
}

// TestAbandonedCallsForgotten: while the chain cannot commit (tail down, not
// yet reconfigured), each retry of a client adds a call; calls whose
// context ended are forgotten, so memory does not grow with retries.
func TestAbandonedCallsForgotten(t *testing.T) {
	c := startGRPCCluster(t, 2)
	c.open(t, "n1", "a1")
	c.nodes["n2"].Stop() // the tail dies; no reconfiguration yet
	for range 20 {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := c.client("n1").Bid(ctx, &api.BidRequest{Auction: "a1", Bidder: "b1", Amount: 10, RequestId: "same-id"})
		cancel()
		if err == nil {
			t.Fatal("bid committed without a tail")
		}
	}
	var pending int
	if err := c.nodes["n1"].do(context.Background(), func(*Replica) { pending = len(c.nodes["n1"].pending) }); err != nil {
		t.Fatal(err)
	}
	if pending > 1 {
		t.Errorf("n1 holds %d pending proposals for 20 abandoned attempts of one request", pending)
	}
}

// reviewProxy forwards TCP connections to target; swallow drops what the
// dialling side sends (the bytes are lost in the network), cut breaks
// every connection.
type reviewProxy struct {
	l       net.Listener
	target  string
	swallow atomic.Bool
	mu      sync.Mutex
	conns   []net.Conn
}

func startReviewProxy(t *testing.T, target string) *reviewProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &reviewProxy{l: l, target: target}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go func() { // dialler -> target, unless swallowed
				buf := make([]byte, 32<<10)
				for {
					k, err := c.Read(buf)
					if err != nil {
						return
					}
					if !p.swallow.Load() {
						if _, err := u.Write(buf[:k]); err != nil {
							return
						}
					}
				}
			}()
			go func() { _, _ = io.Copy(c, u) }()
		}
	}()
	t.Cleanup(func() { l.Close(); p.cut() })
	return p
}

func (p *reviewProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// TestBrokenAckStreamBidAnswered: the connection carrying the successor's
// acks breaks and loses an ack while the chain is idle. The successor's
// transport notices the end of the stream (not only on its next Send),
// says Hello again, and the Hello's committed number answers the client.
func TestBrokenAckStreamBidAnswered(t *testing.T) {
	l1, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l2, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := startReviewProxy(t, l1.Addr().String()) // n2's way to n1
	cfg1 := &api.ChainConfig{Epoch: 1, Chain: []*api.Member{{Id: "n1", Addr: l1.Addr().String()}, {Id: "n2", Addr: l2.Addr().String()}}}
	cfg2 := &api.ChainConfig{Epoch: 1, Chain: []*api.Member{{Id: "n1", Addr: proxy.l.Addr().String()}, {Id: "n2", Addr: l2.Addr().String()}}}
	var nodes []*Node
	for _, x := range []struct {
		id  string
		l   net.Listener
		cfg *api.ChainConfig
	}{{"n1", l1, cfg1}, {"n2", l2, cfg2}} {
		n, err := NewNode(NodeOptions{ID: x.id, Addr: x.l.Addr().String(), Initial: x.cfg,
			Tick: 5 * time.Millisecond, HelloRetry: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(x.l); err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
		t.Cleanup(func() {
			if d, ok := stopWithin(n, 2*time.Second); !ok {
				t.Errorf("cleanup: Stop did not return within %v", d)
			}
		})
	}
	s := &auctionsServer{n: nodes[0]}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if rep, err := s.OpenAuction(ctx, &api.OpenAuctionRequest{Open: &api.OpenAuction{
		Auction: "a1", Item: "lamp", DurationMs: 60_000, MinIncrement: 1, RequestId: "o1"}}); err != nil || rep.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("open: %v %v", rep, err)
	}

	// The network loses what n2 sends to n1 from now on (its Ack of the
	// bid), then the connection breaks.
	proxy.swallow.Store(true)
	answered := make(chan error, 1)
	go func() {
		bctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := s.Bid(bctx, &api.BidRequest{Auction: "a1", Bidder: "b1", Amount: 10, RequestId: "bid1"})
		answered <- err
	}()
	// Wait until n2 has applied the bid (and sent its Ack into the void).
	deadline := time.Now().Add(2 * time.Second)
	for {
		var applied uint64
		if err := nodes[1].do(context.Background(), func(r *Replica) { applied = r.Applied() }); err != nil {
			t.Fatal(err)
		}
		if applied >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("n2 never applied the bid")
		}
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	proxy.cut()
	proxy.swallow.Store(false) // a new connection works

	if err := <-answered; err != nil {
		t.Errorf("bid committed at the tail but never answered at the head after the ack stream broke: %v", err)
	}
}
