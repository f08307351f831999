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
	"github.com/gavel-auction/gavel/client"
)

// conn is one WebSocket connection. Three goroutines serve it:
//   - the reader reads frames, splits them into lines and hands them to
//     the command goroutine (a bounded channel: a client that sends faster
//     than its commands are answered is no longer read);
//   - the command goroutine runs the commands one at a time, in order, and
//     queues their replies;
//   - the writer sends what the outgoing queue holds, with a write
//     deadline per frame, and pings the client every ping interval.
//
// Pushes come from the hub and the metrics ticker straight into the queue,
// which never blocks them (see outQueue). The command goroutine, last to
// end, tears the connection down: hub, gateway, log.
type conn struct {
	g      *Gateway
	ws     *websocket.Conn
	remote string
	q      *outQueue
	cmds   chan inLine

	ctx    context.Context // ends when the connection closes: aborts chain calls
	cancel context.CancelFunc

	closeOnce sync.Once
	done      chan struct{} // closed by close
	// closeCode and closeText are what the writer says in its close frame;
	// written once, before done is closed.
	closeCode int
	closeText string
	rw        sync.WaitGroup // the reader and the writer

	metricsOn atomic.Bool // metrics pushes wanted

	// Owned by the command goroutine (set before it starts).
	bidder string // "" until login in open mode
	role   Role   // from the token; "" in open mode
	token  bool   // identity from a token: fixed

	// subs are the connection's watches by auction; guarded by hub.mu.
	subs map[string]*subscription
}

// inLine is one line read from the client.
type inLine struct {
	text   string
	binary bool // it came in a binary frame
}

// cmdBuffer is how many lines may wait for the command goroutine.
const cmdBuffer = 64

func newConn(g *Gateway, ws *websocket.Conn, id identity, remote string) *conn {
	ctx, cancel := context.WithCancel(g.ctx)
	return &conn{g: g, ws: ws, remote: remote, q: newOutQueue(g.opts.QueueSize, g.opts.QueueSize+maxWatches),
		cmds: make(chan inLine, cmdBuffer), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		bidder: id.bidder, role: id.role, token: id.token, subs: map[string]*subscription{}}
}

// close starts closing the connection with a close frame of code and
// text; later calls do nothing. It never blocks.
func (c *conn) close(code int, text string) {
	c.closeOnce.Do(func() {
		c.closeCode, c.closeText = code, text
		c.cancel()
		c.q.close()
		close(c.done)
	})
}

// closing reports whether close has been called.
func (c *conn) closing() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// pushOrKill queues a push that must not be dropped; a connection with too
// many of them pending is closed as too slow.
func (c *conn) pushOrKill(frame []byte) {
	if !c.q.push(frame) {
		c.close(websocket.ClosePolicyViolation, "too slow: too many pushes pending")
	}
}

// readLoop is the reader goroutine.
func (c *conn) readLoop() {
	defer c.rw.Done()
	defer close(c.cmds)
	o := c.g.opts
	c.ws.SetReadLimit(int64(o.ReadLimit))
	_ = c.ws.SetReadDeadline(time.Now().Add(o.PongWait))
	c.ws.SetPongHandler(func(string) error { return c.ws.SetReadDeadline(time.Now().Add(o.PongWait)) })
	for {
		typ, data, err := c.ws.ReadMessage()
		if err != nil {
			c.close(closeFor(err))
			return
		}
		_ = c.ws.SetReadDeadline(time.Now().Add(o.PongWait))
		if typ == websocket.BinaryMessage {
			if !c.hand(inLine{text: clip(string(data)), binary: true}) {
				return
			}
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSuffix(line, "\r")
			if strings.TrimSpace(line) == "" {
				continue
			}
			if !c.hand(inLine{text: line}) {
				return
			}
		}
	}
}

// hand gives a line to the command goroutine; false once closing.
func (c *conn) hand(l inLine) bool {
	select {
	case c.cmds <- l:
		return true
	case <-c.done:
		return false
	}
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

// writeLoop is the writer goroutine.
func (c *conn) writeLoop() {
	defer c.rw.Done()
	defer c.ws.Close() // ends the reader too
	o := c.g.opts
	ping := time.NewTicker(o.PingInterval)
	defer ping.Stop()
	for {
		select {
		case <-c.q.ready:
			for _, f := range c.q.take() {
				_ = c.ws.SetWriteDeadline(time.Now().Add(o.WriteTimeout))
				if err := c.ws.WriteMessage(websocket.TextMessage, f); err != nil {
					c.close(websocket.CloseGoingAway, "write: "+err.Error())
					return
				}
			}
		case <-ping.C:
			if err := c.ws.WriteControl(websocket.PingMessage, nil, time.Now().Add(o.WriteTimeout)); err != nil {
				c.close(websocket.CloseGoingAway, "ping: "+err.Error())
				return
			}
		case <-c.done:
			// Flush what is queued, briefly, and say goodbye.
			deadline := time.Now().Add(min(o.WriteTimeout, time.Second))
			_ = c.ws.SetWriteDeadline(deadline)
			for _, f := range c.q.take() {
				if c.ws.WriteMessage(websocket.TextMessage, f) != nil {
					return
				}
			}
			text := c.closeText
			if len(text) > 120 { // a close frame's payload is at most 125 bytes
				text = text[:120]
			}
			_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, text), deadline)
			return
		}
	}
}

// commandLoop is the command goroutine; it tears the connection down when
// it ends.
func (c *conn) commandLoop() {
	defer c.teardown()
	for {
		select {
		case l, ok := <-c.cmds:
			if !ok {
				return
			}
			c.handle(l)
		case <-c.done:
			return
		}
	}
}

// teardown runs once the connection ends.
func (c *conn) teardown() {
	c.close(websocket.CloseNormalClosure, "")
	c.rw.Wait()
	c.g.hub.removeConn(c, c.bidder)
	c.g.forget(c)
	c.g.log.Debug("connection closed", "remote", c.remote, "bidder", c.bidder, "why", c.closeText)
}

// reply queues a reply (waiting for room: see outQueue.reserve).
func (c *conn) reply(v any) {
	_ = c.q.reply(c.ctx, encode(v))
}

// replyErr answers cmd with an error object.
func (c *conn) replyErr(cmd command, format string, args ...any) {
	c.reply(errorMsg{Type: "error", Error: fmt.Sprintf(format, args...), Line: cmd.line, ID: cmd.id})
}

// handle runs one line.
func (c *conn) handle(l inLine) {
	if l.binary {
		c.reply(errorMsg{Type: "error", Error: "binary frames are not understood: send text lines (commands or JSON); try help"})
		return
	}
	cmd, perr := parseLine(l.text)
	if perr != nil {
		c.reply(errorMsg{Type: "error", Error: perr.msg, Line: l.text, ID: perr.id})
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
	c.g.hub.setBidder(c, c.bidder, cmd.bidder)
	c.bidder = cmd.bidder
	c.reply(loginReply{Type: "login", Bidder: c.bidder, ID: cmd.id})
}

// callCtx bounds one chain call by the gateway's call timeout.
func (c *conn) callCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.ctx, c.g.opts.CallTimeout)
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
	start := time.Now()
	ctx, cancel := c.callCtx()
	r, err := c.g.client.Bid(ctx, cmd.auction, c.bidder, cmd.amount, "")
	cancel()
	if c.ctx.Err() != nil {
		return // the connection is gone; the bid may or may not stand
	}
	c.g.stats.record(time.Now(), time.Since(start))
	if err != nil {
		rep.Outcome, rep.Reason, rep.Detail = "exception", reasonName(api.Reason_UNAVAILABLE), err.Error()
		if status.Code(err) == codes.InvalidArgument {
			rep.Reason = reasonName(api.Reason_INVALID_REQUEST)
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
			Highest: info.Highest, Bidder: info.Bidder, ClosesAt: info.ClosesAtMs, Version: info.Version})
	}
	c.reply(rep)
}

func (c *conn) open(cmd command) {
	if !c.g.open() && c.role != RoleAdmin {
		c.replyErr(cmd, "only admins may open auctions (your token's role is %s)", c.role)
		return
	}
	ctx, cancel := c.callCtx()
	r, err := c.g.client.Open(ctx, &api.OpenAuction{Auction: cmd.auction, Item: cmd.item,
		DurationMs: cmd.duration.Milliseconds(), MinIncrement: 1})
	cancel()
	rep := openReply{Type: "open", Auction: cmd.auction, ID: cmd.id}
	if err != nil {
		rep.Outcome, rep.Reason, rep.Detail = "exception", reasonName(api.Reason_UNAVAILABLE), err.Error()
		if status.Code(err) == codes.InvalidArgument {
			rep.Reason = reasonName(api.Reason_INVALID_REQUEST)
		}
	} else {
		rep.Outcome, rep.Reason, rep.Detail = outcomeName(r.Outcome), reasonName(r.Reason), r.Detail
		rep.ClosesAt, rep.Version = r.GetInfo().GetClosesAtMs(), r.Version
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
