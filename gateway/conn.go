package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/client"
)

// conn is one WebSocket connection. One goroutine, the reader, serves it
// from the upgrade to the end: it reads frames, splits them into lines and
// runs each line's command, one at a time, in order, queueing the replies
// (a reply waits for room in the queue, and meanwhile the client's next
// commands are not read: TCP pushes back on a client that sends without
// reading). When it ends it tears the connection down: hub, gateway, log.
//
// Nothing else runs for an idle connection. A writer goroutine exists
// only while the outgoing queue has something to send: whoever queues into
// an idle queue starts one (outQueue.start), and it sends, with a write
// deadline per frame, until the queue is empty, then ends. The reader
// sends its own replies when no writer runs (writeInline). Pushes come
// from the hub and the metrics ticker straight into the queue, which never
// blocks them; pings come from the gateway's ping sweep (pingLoop), which
// asks the queue for one every ping interval. The writer that finds the
// queue closed sends what is left and a close frame, closes the socket
// (which ends the reader) and closes ended.
type conn struct {
	g      *Gateway
	ws     *websocket.Conn
	nc     *corkConn // the connection under ws
	remote string
	q      *outQueue

	ctx    context.Context // ends when the connection closes: aborts waits for the queue and chain calls
	cancel context.CancelFunc

	closeOnce sync.Once
	// closeCode and closeText are what the last writer says in its close
	// frame; written once, before the queue is closed.
	closeCode int
	closeText string
	ended     chan struct{} // closed by the last writer once the socket is closed

	metricsOn atomic.Bool // metrics pushes wanted

	// pingAt is when the ping sweep next asks for a ping; guarded by g.mu.
	pingAt time.Time

	// Owned by the reader goroutine (set before it starts).
	bidder string    // "" until login in open mode
	role   auth.Role // from the token; "" in open mode
	token  bool      // identity from a token: fixed
	// tokenText is the token itself, which the nodes check when they
	// cannot tell the gateway from a bidder (no TLS); expires is its
	// expiry (Unix seconds; 0 without a token). Both are set before the
	// reader starts and never change.
	tokenText string
	expires   int64

	// subs are the connection's watches by auction; guarded by hub.mu.
	subs map[string]*subscription
}

func newConn(g *Gateway, ws *websocket.Conn, nc *corkConn, id identity, remote string) *conn {
	ctx, cancel := context.WithCancel(g.ctx)
	c := &conn{g: g, ws: ws, nc: nc, remote: remote, ctx: ctx, cancel: cancel, ended: make(chan struct{}),
		bidder: id.bidder, role: id.role, token: id.token, tokenText: id.tokenText, expires: id.expires,
		subs: map[string]*subscription{}}
	c.q = newOutQueue(g.opts.QueueSize, g.opts.QueueSize+g.opts.MaxWatches, g.opts.ConflateAfter, func() { go c.writeLoop() })
	return c
}

// close starts closing the connection with a close frame of code and
// text; later calls do nothing. It never blocks.
func (c *conn) close(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		c.cancel()
		c.q.close() // a writer comes to say goodbye
	})
}

// closing reports whether close has been called.
func (c *conn) closing() bool { return c.ctx.Err() != nil }

// pushOrKill queues a push that must not be dropped; a connection with too
// many of them pending is closed as too slow.
func (c *conn) pushOrKill(frame []byte) {
	if !c.q.push(frame) {
		c.close(websocket.ClosePolicyViolation, "too slow: too many pushes pending")
	}
}

// readLoop is the reader goroutine: it reads and runs commands until the
// connection fails or closes, then tears it down.
func (c *conn) readLoop() {
	defer c.teardown()
	wait := c.g.opts.PongWait // not all of the options: the handler keeps what it uses
	c.ws.SetReadLimit(int64(c.g.opts.ReadLimit))
	_ = c.ws.SetReadDeadline(time.Now().Add(wait))
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(wait)) })
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			c.close(closeFor(err))
			return
		}
		if !c.frame(typ, data) {
			return
		}
		// The commands may have taken a while: the client's pongs wait
		// unread meanwhile, so its silence counts from now.
		_ = c.ws.SetReadDeadline(time.Now().Add(wait))
	}
}

// frame runs the commands of one frame from the client; false once the
// connection is closing. It is kept out of readLoop (noinline), whose
// stack frame an idle connection keeps while it waits for the next frame:
// a small one lets the collector shrink the reader's stack to 4 KB.
//
//go:noinline
func (c *conn) frame(typ int, data []byte) bool {
	if c.expired(c.g.opts.Now()) {
		c.closeExpired()
		return false
	}
	if typ == websocket.BinaryMessage {
		c.reply(errorMsg{Type: "error", Error: "binary frames are not understood: send text lines (commands or JSON); try help"})
		return !c.closing()
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		if c.closing() {
			return false
		}
		c.handle(line)
	}
	return !c.closing()
}

// closeFor returns the close code and text for a read error.
func closeFor(err error) (int, string) {
	var ce *websocket.CloseError
	var ne net.Error
	switch {
	case errors.As(err, &ce):
		return websocket.CloseNormalClosure, fmt.Sprintf("client closed (%d %s)", ce.Code, ce.Text)
	case errors.Is(err, websocket.ErrReadLimit):
		return websocket.CloseMessageTooBig, "frame larger than the read limit"
	case errors.As(err, &ne) && ne.Timeout():
		return websocket.CloseGoingAway, "no pong within the pong wait"
	}
	return websocket.CloseGoingAway, "read: " + err.Error()
}

// writeLoop is a writer goroutine: it sends what the queue holds until the
// queue is empty, or says goodbye once the connection is closing.
func (c *conn) writeLoop() {
	for c.writeRound() {
	}
}

// writeInline is the reader's turn as the writer, after a reply it queued
// into an idle queue (outQueue.claim): it sends one round itself, which
// spares the reply a goroutine and a hand-over, and leaves what comes
// meanwhile to a writer goroutine.
func (c *conn) writeInline() {
	if c.writeRound() {
		c.q.release()
	}
}

// writeRound sends one round of what the queue holds (outQueue.next). It
// returns false when the caller is no longer the writer: the queue was
// empty, or the connection was closing and the round said goodbye.
func (c *conn) writeRound() bool {
	frames, ping, closing, ok := c.q.next()
	switch {
	case !ok:
		return false
	case closing:
		c.goodbye(frames)
		return false
	}
	c.send(frames, ping)
	return true
}

// send writes frames, each with its write deadline, then a ping if asked,
// all in one write to the socket when there are several; a failed write
// closes the connection.
func (c *conn) send(frames [][]byte, ping bool) {
	o := c.g.opts
	if len(frames) > 1 || ping && len(frames) > 0 {
		c.nc.cork()
		defer func() {
			if err := c.nc.uncork(); err != nil {
				c.close(websocket.CloseGoingAway, "write: "+err.Error())
			}
		}()
	}
	for _, f := range frames {
		_ = c.ws.SetWriteDeadline(time.Now().Add(o.WriteTimeout))
		if err := c.ws.WriteMessage(websocket.TextMessage, f); err != nil {
			c.close(websocket.CloseGoingAway, "write: "+err.Error())
			return
		}
	}
	if ping {
		if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(o.WriteTimeout)); err != nil {
			c.close(websocket.CloseGoingAway, "ping: "+err.Error())
		}
	}
}

// goodbye sends the last frames, briefly, and the close frame, then closes
// the socket, which ends the reader.
func (c *conn) goodbye(frames [][]byte) {
	defer close(c.ended)
	defer c.ws.Close()
	deadline := time.Now().Add(min(c.g.opts.WriteTimeout, time.Second))
	_ = c.ws.SetWriteDeadline(deadline)
	for _, f := range frames {
		if c.ws.WriteMessage(websocket.TextMessage, f) != nil {
			return
		}
	}
	text := c.closeText
	if len(text) > 120 { // a close frame's payload is at most 125 bytes
		text = text[:120]
	}
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, text), deadline)
}

// teardown runs once the connection ends.
func (c *conn) teardown() {
	c.close(websocket.CloseNormalClosure, "")
	<-c.ended
	c.g.hub.removeConn(c, c.bidder)
	c.g.forget(c)
	c.g.log.Debug("connection closed", "remote", c.remote, "bidder", c.bidder, "why", c.closeText)
}

// reply queues a reply (waiting for room: see outQueue.reserve) and, when
// no writer runs, sends it at once (writeInline).
func (c *conn) reply(v any) {
	frame := encode(v)
	if c.q.reserve(c.ctx) != nil {
		return
	}
	inline := c.q.claim()
	c.q.putReserved(frame)
	if inline {
		c.writeInline()
	}
}

// replyErr answers cmd with an error object.
func (c *conn) replyErr(cmd command, format string, args ...any) {
	c.reply(errorMsg{Type: "error", Error: fmt.Sprintf(format, args...), Line: cmd.line, ID: cmd.id})
}

// handle runs one line.
func (c *conn) handle(line string) {
	cmd, perr := parseLine(line)
	if perr != nil {
		c.reply(errorMsg{Type: "error", Error: perr.msg, Line: line, ID: perr.id})
		return
	}
	switch cmd.op {
	case opHelp:
		c.reply(helpReplyFor(cmd.id, c.g.open()))
	case opLogin:
		c.login(cmd)
	case opBid:
		c.bid(cmd)
	case opResult:
		c.result(cmd)
	case opWatch:
		if c.q.reserve(c.ctx) == nil {
			c.g.hub.watch(c, cmd)
		}
	case opUnwatch:
		if c.q.reserve(c.ctx) == nil {
			c.g.hub.unwatch(c, cmd)
		}
	case opAuctions:
		c.auctions(cmd)
	case opOpen:
		c.open(cmd)
	case opMetrics:
		c.metricsOn.Store(cmd.on)
		c.reply(metricsReply{Type: "metrics", On: cmd.on, ID: cmd.id})
		if cmd.on {
			c.g.pushMetrics(c)
		}
	}
}

func (c *conn) login(cmd command) {
	if c.token {
		c.replyErr(cmd, "login is not available: this gateway takes bidders from tokens (you are %s)", c.bidder)
		return
	}
	if msg := c.g.rebid(c.bidder, cmd.bidder); msg != "" {
		c.replyErr(cmd, "%v: %s", errTooManyConnections, msg)
		return
	}
	c.g.hub.setBidder(c, c.bidder, cmd.bidder)
	c.bidder = cmd.bidder
	c.reply(loginReply{Type: "login", Bidder: c.bidder, ID: cmd.id})
}

// callCtx bounds one chain call by the gateway's call timeout. Without
// TLS, the nodes cannot tell the gateway from anyone else and check the
// bidder's token themselves: the call carries it.
func (c *conn) callCtx() (context.Context, context.CancelFunc) {
	ctx := c.ctx
	if c.tokenText != "" && c.g.opts.TLS == nil {
		ctx = auth.WithToken(ctx, c.tokenText)
	}
	return context.WithTimeout(ctx, c.g.opts.CallTimeout)
}

// expired reports whether the connection's token has expired at now; a
// connection without a token never expires.
func (c *conn) expired(now time.Time) bool { return c.expires != 0 && now.Unix() >= c.expires }

// closeExpired closes the connection because its token expired: close
// frame 1008 (policy violation) with the reason, and a line in the log.
func (c *conn) closeExpired() {
	at := time.Unix(c.expires, 0).UTC().Format(time.RFC3339)
	if !c.closing() {
		c.g.log.Info("connection closed: token expired", "remote", c.remote, "bidder", c.bidder, "expired", at)
	}
	c.close(websocket.ClosePolicyViolation, "token expired at "+at+": connect again with a new token (gavel token)")
}

func (c *conn) bid(cmd command) {
	switch {
	case c.bidder == "":
		c.replyErr(cmd, "who is bidding? login NAME first, or connect with ?bidder=NAME")
		return
	case cmd.bidder != "" && cmd.bidder != c.bidder:
		c.replyErr(cmd, "you are %s: you cannot bid as %s", c.bidder, cmd.bidder)
		return
	}
	rep := bidReply{Type: "bid", Auction: cmd.auction, Amount: cmd.amount, Bidder: c.bidder, ID: cmd.id}
	if !cmd.amountOK {
		rep.Outcome, rep.Reason = "exception", reasonName(api.Reason_INVALID_AMOUNT)
		rep.Detail = fmt.Sprintf("%v", auction.ErrInvalidAmount)
		c.reply(rep)
		return
	}
	// A JSON bid with an id is placed under a request id derived from
	// the bid and that id, so that the same command sent again (after a
	// reconnection, to any gateway) gets the first one's outcome rather
	// than placing a second bid; other bids get a fresh one.
	var requestID string
	if cmd.id != nil {
		requestID = bidRequestID(c.bidder, cmd.auction, cmd.amount, cmd.id)
	}
	// Pushes for this connection wait for the bid's reply and leave with
	// it, in one write (outQueue.hold): its client is waiting for the
	// reply and is served nothing else before it anyway.
	c.q.hold()
	start := time.Now()
	ctx, cancel := c.callCtx()
	r, err := c.g.bids.Bid(ctx, cmd.auction, c.bidder, cmd.amount, requestID)
	cancel()
	if c.ctx.Err() != nil {
		return // the connection is gone; the bid may or may not stand
	}
	c.g.stats.record(time.Now(), time.Since(start))
	if err != nil {
		rep.Outcome, rep.Reason, rep.Detail = "exception", reasonName(api.Reason_UNAVAILABLE), err.Error()
		if status.Code(err) == codes.InvalidArgument {
			rep.Reason = reasonName(api.Reason_INVALID_REQUEST)
		} else if cmd.id != nil {
			rep.Detail += ": the bid may stand; send the same command again (same id) for its outcome, placed at most once"
		}
		c.reply(rep)
		return
	}
	rep.Outcome, rep.Reason, rep.Detail, rep.Version = outcomeName(r.Outcome), reasonName(r.Reason), r.Detail, r.Version
	c.reply(rep)
	if r.Outcome == api.Outcome_SUCCESS {
		// After the reply: an outbid that already happened comes after it.
		c.g.hub.bidSucceeded(c, c.bidder, cmd.auction, cmd.amount, r.Version)
	}
}

func (c *conn) result(cmd command) {
	ctx, cancel := c.callCtx()
	r, err := c.g.client.Result(ctx, cmd.auction)
	cancel()
	switch {
	case errors.Is(err, client.ErrUnknownAuction):
		c.replyErr(cmd, "unknown auction %q", cmd.auction)
		return
	case err != nil:
		c.replyErr(cmd, "chain unavailable: %v", err)
		return
	}
	info := r.GetInfo()
	rep := resultReply{Type: "result", Auction: info.GetAuction(), Item: info.GetItem(), State: stateName(info),
		Highest: info.GetHighest(), Bidder: info.GetBidder(), ClosesAt: info.GetClosesAtMs(), Version: info.GetVersion(),
		MinIncrement: info.GetMinIncrement(), StartingPrice: info.GetStartingPrice(), SoftCloseMs: info.GetSoftCloseMs(),
		ServerTime: c.g.nowMs(), ID: cmd.id}
	if rep.State == "closed" {
		rep.Winner = info.GetBidder()
	}
	c.reply(rep)
}

func (c *conn) auctions(cmd command) {
	ctx, cancel := c.callCtx()
	r, err := c.g.client.List(ctx)
	cancel()
	if err != nil {
		c.replyErr(cmd, "chain unavailable: %v", err)
		return
	}
	rep := auctionsReply{Type: "auctions", Auctions: []auctionEntry{}, ServerTime: c.g.nowMs(), ID: cmd.id}
	for _, info := range r.GetAuctions() {
		rep.Auctions = append(rep.Auctions, auctionEntry{Auction: info.Auction, Item: info.Item, State: stateName(info),
			Highest: info.Highest, Bidder: info.Bidder, ClosesAt: info.ClosesAtMs, Version: info.Version,
			MinIncrement: info.MinIncrement, StartingPrice: info.StartingPrice, SoftCloseMs: info.SoftCloseMs})
	}
	c.reply(rep)
}

func (c *conn) open(cmd command) {
	if !c.g.open() && c.role != auth.RoleAdmin {
		c.replyErr(cmd, "only admins may open auctions (your token's role is %s)", c.role)
		return
	}
	ctx, cancel := c.callCtx()
	r, err := c.g.client.Open(ctx, &api.OpenAuction{Auction: cmd.auction, Item: cmd.item,
		DurationMs: cmd.duration.Milliseconds(), MinIncrement: cmd.minIncrement, StartingPrice: cmd.startingPrice,
		SoftCloseMs: cmd.softClose.Milliseconds()})
	cancel()
	rep := openReply{Type: "open", Auction: cmd.auction, ID: cmd.id}
	if err != nil {
		rep.Outcome, rep.Reason, rep.Detail = "exception", reasonName(api.Reason_UNAVAILABLE), err.Error()
		if status.Code(err) == codes.InvalidArgument {
			rep.Reason = reasonName(api.Reason_INVALID_REQUEST)
		}
	} else {
		rep.Outcome, rep.Reason, rep.Detail = outcomeName(r.Outcome), reasonName(r.Reason), r.Detail
		info := r.GetInfo()
		rep.ClosesAt, rep.Version = info.GetClosesAtMs(), r.Version
		rep.MinIncrement, rep.StartingPrice, rep.SoftCloseMs = info.GetMinIncrement(), info.GetStartingPrice(), info.GetSoftCloseMs()
	}
	c.reply(rep)
}

// outcomeName is the protocol's name of an outcome.
func outcomeName(o api.Outcome) string {
	switch o {
	case api.Outcome_SUCCESS:
		return "success"
	case api.Outcome_FAIL:
		return "fail"
	}
	return "exception"
}

// reasonName is the protocol's name of a reason: "" or e.g. "too_low".
func reasonName(r api.Reason) string {
	if r == api.Reason_REASON_NONE {
		return ""
	}
	return strings.ToLower(r.String())
}

// stateName is "open" or "closed".
func stateName(info *api.AuctionInfo) string {
	if info.GetState() == api.AuctionState_CLOSED_STATE {
		return "closed"
	}
	return "open"
}
