package client

import (
	"context"
	"errors"
	"io"
	"math"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auth"
)

// BidSession places bids over one long-lived BidStream call to the chain
// head, so that a bid costs one message each way instead of a new HTTP/2
// stream per call. Create one with Client.NewBidSession and Close it when
// done.
//
// A session carries one bid at a time: Bid sends the bid, waits for its
// reply and returns. With a single bid in flight on the stream, the next
// reply is that bid's answer; the session also checks that it carries the
// bid's request id.
// A stream that broke, or whose answer did not come in time, is abandoned
// and never read again, so a late answer cannot be taken for another bid's.
//
// Retries are those of Client.Bid: an undecided attempt — an UNAVAILABLE
// answer, a broken stream, no answer within Options.AttemptTimeout — is
// repeated with the SAME request id, after a backoff and a refresh of the
// view of the chain, until the caller's context ends.
//
// A BidSession is not safe for concurrent use: use one per goroutine.
type BidSession struct {
	c *Client

	// Owned by the goroutine calling Bid.
	addr   string // node the stream goes to
	stream grpc.BidiStreamingClient[api.BidRequest, api.BidReply]
	timer  *time.Timer // runs expire when an attempt's time is up

	// mu guards the fields below, which expire and abort (run by the
	// timer and by context.AfterFunc) share with Bid.
	mu       sync.Mutex
	cancel   context.CancelFunc // ends the current stream; nil when there is none
	armed    bool               // an attempt is waiting on the stream
	deadline time.Time          // when the armed attempt times out
	ctx      context.Context    // the armed attempt's caller context
	cut      bool               // expire or abort ended the stream during the armed attempt
}

// NewBidSession returns a session on c. It connects on its first bid.
func (c *Client) NewBidSession() *BidSession {
	s := &BidSession{c: c}
	s.timer = time.AfterFunc(math.MaxInt64, s.expire)
	s.timer.Stop()
	return s
}

// Close ends the session's stream. The session must not be used after.
func (s *BidSession) Close() error {
	s.timer.Stop()
	s.dropStream()
	return nil
}

// Bid places a bid and returns its decided outcome, exactly like
// Client.Bid (same arguments, same retries, same errors), over the
// session's stream.
func (s *BidSession) Bid(ctx context.Context, auctionID, bidder string, amount int64, requestID string) (*api.BidReply, error) {
	if requestID == "" {
		requestID = NewRequestID()
	}
	sid, seq, acked := s.c.session.begin()
	defer s.c.session.end(seq)
	ctx, cancel := boundRetries(ctx)
	defer cancel()
	// The stream outlives this bid's context: the bid carries its own token.
	req := &api.BidRequest{Auction: auctionID, Bidder: bidder, Amount: amount, RequestId: requestID,
		Client: sid, ClientSeq: seq, AckedBelow: acked, Token: auth.TokenOf(ctx)}
	rs := s.c.newRetries(toHead)
	for {
		addr := rs.next(ctx)
		r, err := s.roundTrip(ctx, addr, req)
		if err == nil {
			if r.GetReason() != api.Reason_UNAVAILABLE {
				return r, nil
			}
			err = status.Error(codes.Unavailable, "node answered: "+r.GetDetail())
		}
		if errors.Is(err, ErrClosed) {
			return nil, err
		}
		if err := rs.failed(ctx, "bid "+requestID, addr, err, retryWrite); err != nil {
			return nil, err
		}
	}
}

// roundTrip sends req on the stream to addr, opening the stream first if
// there is none to addr, and waits for its reply: at most AttemptTimeout,
// and no longer than ctx lasts. On an error the stream is dropped.
func (s *BidSession) roundTrip(ctx context.Context, addr string, req *api.BidRequest) (*api.BidReply, error) {
	if s.addr != addr {
		s.dropStream()
	}
	cn, err := s.c.conn(addr)
	if err != nil {
		return nil, err
	}
	sctx := s.arm(ctx)
	var stop func() bool
	if ctx.Done() != nil {
		stop = context.AfterFunc(ctx, s.abort)
	}
	if s.stream == nil {
		s.stream, err = cn.auctions.BidStream(sctx)
		s.addr = addr
	}
	var rep *api.BidReply
	if err == nil {
		if err = s.stream.Send(req); err == nil || errors.Is(err, io.EOF) {
			// After a failed Send, Recv returns the stream's real error.
			rep, err = s.stream.Recv()
		}
	}
	if stop != nil {
		stop()
	}
	cut := s.disarm()
	switch {
	case err == nil && rep.GetRequestId() != req.RequestId:
		err = status.Errorf(codes.Internal, "reply for request %q answers request %q",
			req.RequestId, rep.GetRequestId())
	case err != nil && cut && ctx.Err() == nil:
		// The stream was ended by the attempt timeout.
		err = status.Errorf(codes.DeadlineExceeded, "no answer within %v", s.c.opts.AttemptTimeout)
	case err == nil && !cut:
		return rep, nil
	}
	s.dropStream()
	if err == nil {
		return rep, nil // the answer came just before the stream was cut
	}
	if errors.Is(err, io.EOF) {
		err = status.Error(codes.Unavailable, "node ended the bid stream")
	}
	return nil, err
}

// arm starts an attempt: it makes sure there is a stream context (a new
// one when the stream is to be opened) and starts the attempt timer.
func (s *BidSession) arm(ctx context.Context) context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	var sctx context.Context
	if s.stream == nil {
		sctx, s.cancel = context.WithCancel(context.Background())
	}
	s.armed, s.cut, s.ctx = true, false, ctx
	s.deadline = time.Now().Add(s.c.opts.AttemptTimeout)
	s.timer.Reset(s.c.opts.AttemptTimeout)
	return sctx
}

// disarm ends an attempt and reports whether its stream was cut.
func (s *BidSession) disarm() bool {
	s.timer.Stop()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.armed, s.ctx = false, nil
	return s.cut
}

// expire cuts the stream of an attempt whose time is up. A late run of the
// timer (armed again since) finds the deadline not reached and does nothing.
func (s *BidSession) expire() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.armed && !time.Now().Before(s.deadline) {
		s.cutLocked()
	}
}

// abort cuts the stream of an attempt whose caller's context ended. A late
// run (for an earlier attempt's context) finds the current one alive.
func (s *BidSession) abort() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.armed && s.ctx.Err() != nil {
		s.cutLocked()
	}
}

func (s *BidSession) cutLocked() {
	s.cut = true
	if s.cancel != nil {
		s.cancel()
	}
}

// dropStream ends the stream, if any; the next attempt opens a new one.
func (s *BidSession) dropStream() {
	if s.stream != nil {
		_ = s.stream.CloseSend()
	}
	s.mu.Lock()
	if s.cancel != nil {
		s.cancel()
	}
	s.cancel = nil
	s.mu.Unlock()
	s.stream, s.addr = nil, ""
}
