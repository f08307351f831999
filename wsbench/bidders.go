package wsbench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gavel-auction/gavel/latency"
)

// bidReq is one bid the pacer hands a bidder.
type bidReq struct {
	auction int
	amount  int64
}

// pendingBid is a bid sent and not answered yet.
type pendingBid struct {
	auction int
	sent    time.Duration
}

// bidStats are one bidder's counts.
type bidStats struct {
	sent, ok, fail, exc, errs uint64
	unanswered                uint64            // no reply within the timeout after the last bid
	lat                       latency.Histogram // sent -> reply
}

// bidder is one of the bench's bidders: a WebSocket connection of its own
// (Via "ws") or a name on the chain client (Via "grpc"). The pacer hands
// it bids through in; it never blocks the pacer.
type bidder struct {
	name string
	in   chan bidReq
	ws   *websocket.Conn // Via "ws" only

	mu      sync.Mutex // guards the fields below: the bidder's goroutines and the progress reporter
	stats   bidStats
	pending map[uint64]pendingBid // Via "ws": by request id
	nextID  uint64
	lastErr error // the last error of a bid or of the connection
}

// bidderQueue is how many bids may wait for one bidder; past it the
// pacer skips bids rather than slow down.
const bidderQueue = 1024

// maxPending bounds the bids a WebSocket bidder has sent and not seen
// answered; past it, it skips bids. The gateway runs a connection's
// commands one at a time, so bids beyond what it keeps up with would only
// queue in its socket buffers, and their latency would be the queue's.
const maxPending = 256

// grpcInFlight bounds one bidder's concurrent bids with Via "grpc".
const grpcInFlight = 64

// record counts one answered bid.
func (bd *bidder) record(b *bench, auction int, sent time.Duration, res BidResult, err error) {
	now := b.now()
	if err == nil && res.Outcome == "success" {
		b.track.succeeded(auction, res.Version, sent, now)
	}
	bd.mu.Lock()
	defer bd.mu.Unlock()
	bd.stats.lat.Record(now - sent)
	switch {
	case err != nil:
		bd.stats.errs++
		bd.lastErr = err
	case res.Outcome == "success":
		bd.stats.ok++
	case res.Outcome == "fail":
		bd.stats.fail++
	case res.Reason == "unavailable":
		bd.stats.errs++ // the gateway's word for a bid the chain did not decide
		bd.lastErr = errors.New("unavailable")
	default:
		bd.stats.exc++
	}
}

// snapshot returns the bidder's counts so far.
func (bd *bidder) snapshot() bidStats {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	return bd.stats
}

// lastErrText returns the bidder's last error, "" when none.
func (bd *bidder) lastErrText() string {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	if bd.lastErr == nil {
		return ""
	}
	return bd.lastErr.Error()
}

// pendingCount returns how many bids wait for their replies (Via "ws").
func (bd *bidder) pendingCount() int {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	return len(bd.pending)
}

// ---------------------------------------------------------------------------
// Via "ws": one connection per bidder, bids pipelined with JSON ids.

// runWS is a WebSocket bidder's writer: it sends the bids handed to it,
// each as a JSON command with an id, without waiting for the replies. It
// returns when in is closed or a write fails.
func (bd *bidder) runWS(b *bench) {
	var line []byte
	for req := range bd.in {
		bd.mu.Lock()
		if len(bd.pending) >= maxPending {
			bd.mu.Unlock()
			b.skipped.Add(1)
			continue
		}
		bd.nextID++
		id := bd.nextID
		bd.pending[id] = pendingBid{auction: req.auction, sent: b.now()}
		bd.stats.sent++
		bd.mu.Unlock()
		line = append(line[:0], `{"op":"bid","auction":`...)
		line = strconv.AppendQuote(line, b.auctions[req.auction])
		line = append(line, `,"amount":`...)
		line = strconv.AppendInt(line, req.amount, 10)
		line = append(line, `,"id":`...)
		line = strconv.AppendUint(line, id, 10)
		line = append(line, '}')
		_ = bd.ws.SetWriteDeadline(time.Now().Add(b.cfg.Timeout))
		if err := bd.ws.WriteMessage(websocket.TextMessage, line); err != nil {
			bd.mu.Lock()
			bd.lastErr = err
			bd.mu.Unlock()
			for range bd.in { // the rest cannot be sent: skipped
				b.skipped.Add(1)
			}
			return
		}
	}
}

// wsReply is the part of a gateway reply a bidder reads.
type wsReply struct {
	Type    string `json:"type"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
	Detail  string `json:"detail"`
	Version uint64 `json:"version"`
	Error   string `json:"error"`
}

// readWS is a WebSocket bidder's reader: it matches replies to the bids
// pending by id, and ignores pushes (outbid) until the connection ends.
func (bd *bidder) readWS(b *bench) {
	defer b.readers.Done()
	var buf []byte
	for {
		typ, msg, err := readFrame(bd.ws, buf)
		buf = msg
		if err != nil {
			if !b.closing.Load() {
				bd.mu.Lock()
				bd.lastErr = err
				bd.mu.Unlock()
			}
			return
		}
		if typ != websocket.TextMessage {
			continue
		}
		id, ok := idOf(msg)
		if !ok {
			continue // a push
		}
		var r wsReply
		if err := json.Unmarshal(msg, &r); err != nil {
			continue
		}
		bd.mu.Lock()
		p, ok := bd.pending[id]
		delete(bd.pending, id)
		bd.mu.Unlock()
		if !ok {
			continue
		}
		switch r.Type {
		case "bid":
			bd.record(b, p.auction, p.sent, BidResult{Outcome: r.Outcome, Reason: r.Reason, Version: r.Version}, nil)
		default:
			bd.record(b, p.auction, p.sent, BidResult{}, fmt.Errorf("gateway: %s", r.Error))
		}
	}
}

// abandon counts the bids still pending as unanswered.
func (bd *bidder) abandon() {
	bd.mu.Lock()
	defer bd.mu.Unlock()
	bd.stats.unanswered += uint64(len(bd.pending))
	clear(bd.pending)
}

// ---------------------------------------------------------------------------
// Via "grpc": bids straight at the chain with the Go client.

// runGRPC places the bids handed to the bidder on the chain, up to
// grpcInFlight at a time, and returns once in is closed and every bid is
// answered (each bounded by the bench's timeout).
func (bd *bidder) runGRPC(ctx context.Context, b *bench) {
	sem := make(chan struct{}, grpcInFlight)
	var wg sync.WaitGroup
	for req := range bd.in {
		sem <- struct{}{}
		sent := b.now()
		bd.mu.Lock()
		bd.stats.sent++
		bd.mu.Unlock()
		wg.Go(func() {
			defer func() { <-sem }()
			bctx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
			res, err := b.cfg.Chain.Bid(bctx, b.auctions[req.auction], bd.name, req.amount)
			cancel()
			bd.record(b, req.auction, sent, res, err)
		})
	}
	wg.Wait()
}

// ---------------------------------------------------------------------------
// Closed loop: gavel bench --via ws.

// Bidder is one WebSocket connection of a bidder to a gateway, for a
// closed-loop load: Bid sends one bid and waits for its reply. A Bidder
// is not safe for concurrent use.
type Bidder struct {
	d      *dialer
	name   string
	ws     *websocket.Conn // nil after a failure: the next Bid dials again
	nextID uint64
	buf    []byte
}

// DialBidder connects to t's gateway as bidder name; its dial and
// handshake take at most timeout.
func DialBidder(ctx context.Context, t Target, name string, timeout time.Duration) (*Bidder, error) {
	b := &Bidder{d: newDialer(t, timeout), name: name}
	ws, err := b.d.dial(ctx, name)
	if err != nil {
		return nil, err
	}
	b.ws = ws
	return b, nil
}

// Bid places a bid of amount on auction and waits for its reply, until
// ctx ends. An error means no outcome came: the connection is then
// dropped, and the next Bid opens a new one. An exception whose reason is
// "unavailable" (the gateway could not reach the chain) is an outcome.
func (b *Bidder) Bid(ctx context.Context, auction string, amount int64) (BidResult, error) {
	if b.ws == nil {
		ws, err := b.d.dial(ctx, b.name)
		if err != nil {
			return BidResult{}, err
		}
		b.ws = ws
	}
	res, err := b.roundTrip(ctx, auction, amount)
	if err != nil {
		b.ws.Close()
		b.ws = nil
	}
	return res, err
}

// roundTrip sends one bid and reads until its reply.
func (b *Bidder) roundTrip(ctx context.Context, auction string, amount int64) (BidResult, error) {
	b.nextID++
	id := b.nextID
	line := fmt.Sprintf(`{"op":"bid","auction":%q,"amount":%d,"id":%d}`, auction, amount, id)
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(b.d.timeout)
	}
	stop := context.AfterFunc(ctx, func() { _ = b.ws.SetReadDeadline(time.Now()) })
	defer stop()
	_ = b.ws.SetWriteDeadline(deadline)
	if err := b.ws.WriteMessage(websocket.TextMessage, []byte(line)); err != nil {
		return BidResult{}, err
	}
	_ = b.ws.SetReadDeadline(deadline)
	for {
		typ, msg, err := readFrame(b.ws, b.buf)
		b.buf = msg
		if err != nil {
			if ctx.Err() != nil {
				return BidResult{}, ctx.Err()
			}
			return BidResult{}, err
		}
		if got, ok := idOf(msg); typ != websocket.TextMessage || !ok || got != id {
			continue // a push (outbid), or the late reply of an abandoned bid
		}
		var r wsReply
		if err := json.Unmarshal(msg, &r); err != nil {
			return BidResult{}, fmt.Errorf("reply %q: %v", msg, err)
		}
		if r.Type != "bid" {
			return BidResult{}, fmt.Errorf("gateway: %s: %s", r.Type, r.Error)
		}
		return BidResult{Outcome: r.Outcome, Reason: r.Reason, Version: r.Version}, nil
	}
}

// Close says goodbye to the gateway (close frame 1000), waits at most a
// second for its own close frame, and closes the connection.
func (b *Bidder) Close() error {
	if b.ws == nil {
		return nil
	}
	deadline := time.Now().Add(time.Second)
	if b.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), deadline) == nil {
		_ = b.ws.SetReadDeadline(deadline)
		for {
			var err error
			if _, b.buf, err = readFrame(b.ws, b.buf); err != nil {
				break
			}
		}
	}
	err := b.ws.Close()
	b.ws = nil
	return err
}
