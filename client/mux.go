package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auth"
)

// BidMux places bids for many goroutines at once over a few long-lived
// BidStream calls to the chain head ("lanes"), with many bids in flight on
// each: a bid costs one message each way and no goroutine of its own. A
// gateway, which relays the bids of many connections, uses one. Create one
// with Client.NewBidMux and Close it when done.
//
// The node answers a stream's bids as their updates commit, not
// necessarily in the order they were sent (chain/server.go's BidStream);
// the mux matches each reply to its bid by request id. For that, the
// request ids of the bids in flight on one mux are distinct: a Bid whose
// request id is already in flight waits for that bid and returns its
// outcome when it is the same request (auction, bidder, amount), and is
// refused at once with REQUEST_MISMATCH when it is not — as the chain
// itself refuses a request id reused for another request.
//
// Retries are those of Client.Bid: an undecided attempt — an UNAVAILABLE
// answer, a broken stream, no answer within Options.AttemptTimeout — is
// repeated with the SAME request id and client_seq, after a backoff and a
// refresh of the view of the chain, until the caller's context ends. A
// late answer to an earlier attempt is as good as the answer to the
// current one: it is for the same request, which the chain decides once.
// A lane's stream that has been silent for a whole attempt is dropped (the
// bids on it are retried); one that breaks is replaced on the next bid.
//
// A BidMux is safe for concurrent use.
type BidMux struct {
	c     *Client
	lanes int
	next  atomic.Uint32 // round robin over the lanes

	// mu guards streams, calls, closed and every muxStream's pending.
	mu      sync.Mutex
	streams map[string][]*muxStream // by node address: one per lane, nil until opened
	calls   map[string]*muxCall     // bids in flight, by request id
	closed  bool
}

// DefaultMuxLanes is the number of streams of a BidMux made with lanes 0.
const DefaultMuxLanes = 4

// muxCall is one bid in flight.
type muxCall struct {
	req *api.BidRequest
	// reply takes the answer to an attempt (capacity 1; the stream's
	// receiver never blocks on it).
	reply chan *api.BidReply
	// done is closed when the bid has returned, with rep and err set, for
	// the callers that wait on the same request id. left says that it
	// returned because its caller's context ended: they try themselves.
	done chan struct{}
	rep  *api.BidReply
	err  error
	left bool
}

// muxStream is one lane's BidStream to one node.
type muxStream struct {
	addr   string
	stream grpc.BidiStreamingClient[api.BidRequest, api.BidReply]
	cancel context.CancelFunc

	sendMu sync.Mutex // one Send at a time

	broken chan struct{} // closed when the stream has ended
	err    error         // why; set before broken is closed

	lastRecv atomic.Int64 // when the last answer came (UnixNano)

	// pending are the bids sent on this stream and not answered, by
	// request id; nil once the stream has ended. Guarded by BidMux.mu.
	pending map[string]*muxCall
}

// NewBidMux returns a mux on c with the given number of lanes (streams
// per node; DefaultMuxLanes if lanes <= 0). It connects on its first bid.
func (c *Client) NewBidMux(lanes int) *BidMux {
	if lanes <= 0 {
		lanes = DefaultMuxLanes
	}
	return &BidMux{c: c, lanes: lanes, streams: map[string][]*muxStream{}, calls: map[string]*muxCall{}}
}

// Close ends the mux's streams: bids in flight fail with ErrClosed. The
// mux must not be used after.
func (m *BidMux) Close() error {
	m.mu.Lock()
	m.closed = true
	var all []*muxStream
	for _, lanes := range m.streams {
		for _, s := range lanes {
			if s != nil {
				all = append(all, s)
			}
		}
	}
	m.mu.Unlock()
	for _, s := range all {
		m.fail(s, ErrClosed)
	}
	return nil
}

// Bid places a bid and returns its decided outcome, exactly like
// Client.Bid (same arguments, same retries, same errors), over the mux's
// streams. See BidMux for a request id already in flight.
func (m *BidMux) Bid(ctx context.Context, auctionID, bidder string, amount int64, requestID string) (*api.BidReply, error) {
	if requestID == "" {
		requestID = NewRequestID()
	}
	for {
		m.mu.Lock()
		if m.closed {
			m.mu.Unlock()
			return nil, ErrClosed
		}
		lead := m.calls[requestID]
		if lead == nil {
			// The stream is shared: the bid carries its own token.
			call := &muxCall{req: &api.BidRequest{Auction: auctionID, Bidder: bidder, Amount: amount, RequestId: requestID,
				Token: auth.TokenOf(ctx)},
				reply: make(chan *api.BidReply, 1), done: make(chan struct{})}
			m.calls[requestID] = call
			m.mu.Unlock()
			call.rep, call.err = m.run(ctx, call)
			call.left = call.err != nil && ctx.Err() != nil
			m.mu.Lock()
			delete(m.calls, requestID)
			m.mu.Unlock()
			close(call.done)
			return call.rep, call.err
		}
		m.mu.Unlock()
		if r := lead.req; r.Auction != auctionID || r.Bidder != bidder || r.Amount != amount {
			return &api.BidReply{Outcome: api.Outcome_EXCEPTION, Reason: api.Reason_REQUEST_MISMATCH,
				Detail: fmt.Sprintf("request id %q is in flight for a different request (bid of %d on %q by %q)",
					requestID, r.Amount, r.Auction, r.Bidder),
				Auction: auctionID, Amount: amount, RequestId: requestID}, nil
		}
		select {
		case <-lead.done:
			if !lead.left {
				return lead.rep, lead.err
			}
			// Its caller gave up; this one has not: place it again.
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: bid %s: no decision: waiting for the same request in flight: %w",
				ErrUnavailable, requestID, ctx.Err())
		}
	}
}

// run places call's bid, retrying until it is decided or ctx ends.
func (m *BidMux) run(ctx context.Context, call *muxCall) (*api.BidReply, error) {
	sid, seq, acked := m.c.session.begin()
	defer m.c.session.end(seq)
	call.req.Client, call.req.ClientSeq, call.req.AckedBelow = sid, seq, acked
	ctx, cancel := boundRetries(ctx)
	defer cancel()
	rs := m.c.newRetries(toHead)
	for {
		addr := rs.next(ctx)
		r, err := m.attempt(ctx, call, addr)
		if err == nil {
			return r, nil
		}
		if errors.Is(err, ErrClosed) {
			return nil, err
		}
		if err := rs.failed(ctx, "bid "+call.req.RequestId, addr, err, retryWrite); err != nil {
			return nil, err
		}
	}
}

// attempt sends call's bid on a lane's stream to addr and waits for its
// answer: at most AttemptTimeout, and no longer than ctx lasts.
func (m *BidMux) attempt(ctx context.Context, call *muxCall, addr string) (*api.BidReply, error) {
	s, err := m.stream(addr)
	if err != nil {
		return nil, err
	}
	id := call.req.RequestId
	m.mu.Lock()
	if s.pending == nil {
		m.mu.Unlock()
		return nil, s.err
	}
	s.pending[id] = call
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		if s.pending[id] == call {
			delete(s.pending, id)
		}
		m.mu.Unlock()
	}()
	sent := time.Now()
	s.sendMu.Lock()
	err = s.stream.Send(call.req)
	s.sendMu.Unlock()
	timer := time.NewTimer(m.c.opts.AttemptTimeout)
	defer timer.Stop()
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if err != nil {
		// The stream failed; its receiver says why.
		select {
		case <-s.broken:
			return nil, s.err
		case <-timer.C:
			m.fail(s, status.Errorf(codes.Unavailable, "bid stream to %s: %v", addr, err))
			return nil, s.err
		case <-ctx.Done():
			return nil, status.FromContextError(ctx.Err()).Err()
		}
	}
	select {
	case r := <-call.reply:
		if r.GetReason() == api.Reason_UNAVAILABLE {
			return nil, status.Error(codes.Unavailable, "node answered: "+r.GetDetail())
		}
		return r, nil
	case <-s.broken:
		return nil, s.err
	case <-timer.C:
		if s.lastRecv.Load() < sent.UnixNano() {
			// Nothing at all came on the stream meanwhile: drop it.
			m.fail(s, status.Errorf(codes.Unavailable, "bid stream to %s silent for %v", addr, m.c.opts.AttemptTimeout))
		}
		return nil, status.Errorf(codes.DeadlineExceeded, "no answer within %v", m.c.opts.AttemptTimeout)
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
}

// stream returns a lane's stream to addr, opening it if there is none.
func (m *BidMux) stream(addr string) (*muxStream, error) {
	lane := int(m.next.Add(1) % uint32(m.lanes))
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	if s := m.streams[addr]; s != nil && s[lane] != nil {
		m.mu.Unlock()
		return s[lane], nil
	}
	m.mu.Unlock()

	cn, err := m.c.conn(addr)
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.Background())
	// Opening waits while the connection is being made: not longer than
	// an attempt.
	expire := time.AfterFunc(m.c.opts.AttemptTimeout, cancel)
	stream, err := cn.auctions.BidStream(sctx)
	if !expire.Stop() && err == nil {
		err = status.Errorf(codes.DeadlineExceeded, "opening a bid stream to %s took more than %v", addr, m.c.opts.AttemptTimeout)
	}
	if err != nil {
		cancel()
		return nil, err
	}
	s := &muxStream{addr: addr, stream: stream, cancel: cancel, broken: make(chan struct{}), pending: map[string]*muxCall{}}

	m.mu.Lock()
	lanes := m.streams[addr]
	if lanes == nil {
		lanes = make([]*muxStream, m.lanes)
		m.streams[addr] = lanes
	}
	if m.closed || lanes[lane] != nil {
		// Closed meanwhile, or another bid opened this lane first.
		other, closed := lanes[lane], m.closed
		m.mu.Unlock()
		cancel()
		if closed {
			return nil, ErrClosed
		}
		return other, nil
	}
	lanes[lane] = s
	// Streams to other nodes (an earlier head) that carry nothing are
	// done with.
	var idle []*muxStream
	for a, ls := range m.streams {
		for _, o := range ls {
			if a != addr && o != nil && len(o.pending) == 0 {
				idle = append(idle, o)
			}
		}
	}
	m.mu.Unlock()
	for _, o := range idle {
		m.fail(o, status.Error(codes.Unavailable, "bid stream to a former head closed"))
	}
	go m.recvLoop(s)
	return s, nil
}

// recvLoop hands each answer on s to its bid, until the stream ends.
func (m *BidMux) recvLoop(s *muxStream) {
	for {
		r, err := s.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = status.Error(codes.Unavailable, "node ended the bid stream")
			}
			m.fail(s, err)
			return
		}
		s.lastRecv.Store(time.Now().UnixNano())
		m.mu.Lock()
		call := s.pending[r.GetRequestId()]
		if call != nil {
			delete(s.pending, r.GetRequestId())
		}
		m.mu.Unlock()
		if call != nil {
			select {
			case call.reply <- r:
			default: // an answer to an earlier attempt waits there already: the same
			}
		}
	}
}

// fail ends s (once) with err: its bids in flight retry elsewhere, and the
// next bid on its lane opens a new stream.
func (m *BidMux) fail(s *muxStream, err error) {
	m.mu.Lock()
	if s.pending == nil {
		m.mu.Unlock()
		return
	}
	s.pending = nil
	s.err = err
	if lanes := m.streams[s.addr]; lanes != nil {
		for i, o := range lanes {
			if o == s {
				lanes[i] = nil
			}
		}
	}
	m.mu.Unlock()
	s.cancel()
	close(s.broken)
}
