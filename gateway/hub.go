package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
)

// The hub fans the chain's auction events out to the connections.
//
// For each auction some connection watches, or that a connected bidder
// bid on through this gateway, the hub keeps ONE upstream: an
// Auctions.Watch stream at the chain's tail, read by one goroutine. When
// the stream breaks (the tail changed, lost its lease, or cut the gateway
// off as too slow) the goroutine finds the tail again in the chain view
// and resumes after the last sequence number it saw, so the events go on
// without a gap and without a repeat. The upstream ends when nobody needs
// it any more.
//
// Per connection and auction, the seq of the highest and closed pushes
// strictly increases: the hub remembers, for each watch, the seq of the
// last one it queued (or the watch's "from"), and never queues one that is
// not above it. An extended push rides with the highest push of the same
// update; outbid pushes have their own increasing seqs.

// Backoff between attempts to (re)open an upstream watch.
const (
	minUpstreamBackoff = 20 * time.Millisecond
	maxUpstreamBackoff = time.Second
)

// hub holds the upstreams, the watches and the bidders' leads.
type hub struct {
	g *Gateway

	// mu guards everything the hub holds: upstreams and every field of
	// each upstream marked "guarded by hub.mu", bidders, and each
	// connection's subs and outbid bookkeeping. It is taken after no other
	// lock; queue locks are taken inside it (queues never call back).
	mu        sync.Mutex
	upstreams map[string]*upstream
	bidders   map[string]*bidderEntry
}

func newHub(g *Gateway) *hub {
	return &hub{g: g, upstreams: map[string]*upstream{}, bidders: map[string]*bidderEntry{}}
}

// upstream is the one Watch stream of an auction and what it has shown.
// Once the auction is closed nothing changes any more: the stream ends,
// the bidders' interest goes, and the upstream stays only while
// connections watch it (to show them the result).
type upstream struct {
	auction    string
	highestKey string          // the conflation key of its highest pushes
	ctx        context.Context // cancelled when the upstream is dropped
	cancel     context.CancelFunc

	// Guarded by hub.mu.
	subs     map[*subscription]struct{}
	interest int              // connected bidders that bid on the auction through this gateway
	leads    map[string]*lead // by bidder: its standing, for outbid pushes
	info     *api.AuctionInfo // the auction as the last event showed it; nil before the first
	lastSeq  uint64           // seq of the last event: the stream resumes after it
	// highestSeq and closedSeq are the seqs of the current highest bid and
	// of the close, as pushed (0: none yet). highestSeq < closedSeq.
	highestSeq, closedSeq uint64
	opened                bool // a stream was opened once: later ones resume
}

// lead is a bidder's standing in one auction, for outbid pushes.
type lead struct {
	amount  int64  // the bidder's last known highest bid
	seq     uint64 // the update that showed it
	leading bool   // the bidder led as of seq
}

// subscription is one connection's watch of one auction.
type subscription struct {
	c       *conn
	auction string
	line    string          // the watch command, for a later error about it
	id      json.RawMessage // its JSON id
	// lastSeq is the seq of the last highest or closed push queued, or the
	// watch's from; guarded by hub.mu.
	lastSeq uint64
}

// bidderEntry is a bidder connected to this gateway.
type bidderEntry struct {
	conns map[*conn]struct{}
	// auctions the bidder bid on successfully through this gateway, which
	// the hub keeps upstreams for, so that outbid pushes reach it; nil
	// until the first.
	auctions map[string]struct{}
}

// ---------------------------------------------------------------------------
// Called by connections.

// watch subscribes c to auction, starting after seq from, and queues the
// reply in the slot c reserved: watching (then the current state, if it
// is newer than from) or an error.
func (h *hub) watch(c *conn, cmd command) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if sub, ok := c.subs[cmd.auction]; ok {
		// Watching already: nothing to resend; a later from only skips more.
		sub.lastSeq = max(sub.lastSeq, cmd.from)
		c.q.putReserved(encode(watchingReply{Type: "watching", Auction: cmd.auction, From: cmd.from, ID: cmd.id}))
		return
	}
	if max := h.g.opts.MaxWatches; len(c.subs) >= max {
		h.g.prom.watchesRefused.Inc()
		c.q.putReserved(encode(errorMsg{Type: "error", Error: fmt.Sprintf("%v (at most %d, gateway.max_watches): unwatch some first",
			errTooManyWatches, max), Line: cmd.line, ID: cmd.id}))
		return
	}
	c.q.putReserved(encode(watchingReply{Type: "watching", Auction: cmd.auction, From: cmd.from, ID: cmd.id}))
	sub := &subscription{c: c, auction: cmd.auction, line: cmd.line, id: cmd.id, lastSeq: cmd.from}
	c.subs[cmd.auction] = sub
	up := h.upstreamFor(cmd.auction)
	up.subs[sub] = struct{}{}
	if up.info != nil {
		h.sendState(up, sub, &stateFrames{now: h.g.nowMs(), at: time.Now()})
	}
}

// unwatch ends c's watch of auction and queues the reply in the slot c
// reserved.
func (h *hub) unwatch(c *conn, cmd command) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sub, ok := c.subs[cmd.auction]
	if !ok {
		c.q.putReserved(encode(errorMsg{Type: "error", Error: fmt.Sprintf("not watching %q", cmd.auction), Line: cmd.line, ID: cmd.id}))
		return
	}
	h.dropSub(sub)
	c.q.putReserved(encode(unwatchedReply{Type: "unwatched", Auction: cmd.auction, ID: cmd.id}))
}

// setBidder records that c now acts as bidder (from "" or another name).
func (h *hub) setBidder(c *conn, old, bidder string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if old == bidder {
		return
	}
	if old != "" {
		h.leaveBidder(c, old)
	}
	if bidder != "" {
		be := h.bidders[bidder]
		if be == nil {
			be = &bidderEntry{conns: map[*conn]struct{}{}}
			h.bidders[bidder] = be
		}
		be.conns[c] = struct{}{}
	}
}

// bidSucceeded records that bidder (through c) placed a successful bid of
// amount on auction, sequenced as seq: the hub follows the auction from
// now on, to tell the bidder when it loses the lead.
func (h *hub) bidSucceeded(c *conn, bidder, auction string, amount int64, seq uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	be := h.bidders[bidder]
	if be == nil || c.closing() {
		return // the connection is gone
	}
	if _, ok := be.auctions[auction]; !ok {
		if be.auctions == nil {
			be.auctions = map[string]struct{}{}
		}
		be.auctions[auction] = struct{}{}
		h.upstreamFor(auction).interest++
	}
	up := h.upstreams[auction]
	l := up.leads[bidder]
	if l != nil && l.seq >= seq {
		return // the events are past this bid already
	}
	if up.info != nil && up.lastSeq >= seq {
		// The upstream has shown this bid and what came after it.
		if up.info.Bidder == bidder {
			up.leads[bidder] = &lead{amount: up.info.Highest, seq: up.lastSeq, leading: true}
			return
		}
		up.leads[bidder] = &lead{amount: amount, seq: up.lastSeq}
		h.sendOutbid(up, bidder, amount, up.highestSeq, h.g.nowMs())
		return
	}
	up.leads[bidder] = &lead{amount: amount, seq: seq, leading: true}
}

// removeConn forgets c: its watches and its bidder.
func (h *hub) removeConn(c *conn, bidder string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, sub := range c.subs {
		h.dropSub(sub)
	}
	if bidder != "" {
		h.leaveBidder(c, bidder)
	}
}

// counts returns the number of watches and of upstreams.
func (h *hub) counts() (watchers, upstreams int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, up := range h.upstreams {
		watchers += len(up.subs)
	}
	return watchers, len(h.upstreams)
}

// ---------------------------------------------------------------------------
// Bookkeeping; hub.mu held.

// upstreamFor returns the auction's upstream, starting it if there is none.
func (h *hub) upstreamFor(auction string) *upstream {
	if up, ok := h.upstreams[auction]; ok {
		return up
	}
	ctx, cancel := context.WithCancel(h.g.ctx)
	up := &upstream{auction: auction, highestKey: "highest\x00" + auction, ctx: ctx, cancel: cancel,
		subs: map[*subscription]struct{}{}, leads: map[string]*lead{}}
	h.upstreams[auction] = up
	if !h.g.goFn(func() { h.run(up) }) {
		cancel() // the gateway is stopping
	}
	return up
}

// dropSub ends a watch.
func (h *hub) dropSub(sub *subscription) {
	delete(sub.c.subs, sub.auction)
	if up, ok := h.upstreams[sub.auction]; ok {
		delete(up.subs, sub)
		h.release(up)
	}
}

// leaveBidder takes c out of bidder's connections; the bidder's last
// connection gone, its auctions no longer need an upstream for it.
func (h *hub) leaveBidder(c *conn, bidder string) {
	be := h.bidders[bidder]
	if be == nil {
		return
	}
	delete(be.conns, c)
	if len(be.conns) > 0 {
		return
	}
	delete(h.bidders, bidder)
	for a := range be.auctions {
		if up, ok := h.upstreams[a]; ok {
			up.interest--
			delete(up.leads, bidder)
			h.release(up)
		}
	}
}

// release drops up if nobody needs it any more.
func (h *hub) release(up *upstream) {
	if len(up.subs) > 0 || up.interest > 0 || h.upstreams[up.auction] != up {
		return
	}
	delete(h.upstreams, up.auction)
	up.cancel()
	h.g.log.Debug("upstream watch closed: nobody needs it", "auction", up.auction, "seq", up.lastSeq)
}

// ---------------------------------------------------------------------------
// The upstream's goroutine.

// run keeps up's Watch stream open at the current tail until up is
// dropped (or the auction turns out not to exist).
func (h *hub) run(up *upstream) {
	wait := minUpstreamBackoff
	failures := 0     // attempts in a row that got nothing
	var logged string // the tail and epoch of the last attempt logged at info
	repeat := false   // the last attempt got nothing: the next is the same again
	for up.ctx.Err() == nil {
		cfg, changed := h.g.view.get()
		tail := tailOf(cfg)
		if tail == nil {
			h.g.view.refresh(up.ctx)
			if !sleepOrChange(up.ctx, changed, wait) {
				return
			}
			wait = min(2*wait, maxUpstreamBackoff)
			continue
		}
		h.mu.Lock()
		after, resumed := up.lastSeq, up.opened
		up.opened = true
		h.mu.Unlock()
		msg := "upstream watch opened"
		if resumed {
			msg = "upstream watch resumed"
		}
		level := h.g.log.Info
		if at := fmt.Sprintf("%s@%d", tail.GetId(), cfg.GetEpoch()); at != logged || !repeat {
			logged = at
		} else {
			level = h.g.log.Debug // the same attempt again: said already
		}
		level(msg, "auction", up.auction, "tail", tail.GetId(), "tail_addr", tail.GetAddr(), "epoch", cfg.GetEpoch(), "after_seq", after)

		started := time.Now()
		got, err := h.stream(up, tail.GetAddr(), after)
		if up.ctx.Err() != nil {
			return
		}
		st := status.Convert(err)
		switch {
		case errors.Is(err, errDropped), h.closed(up):
			return // dropped, or nothing more to follow
		case st.Code() == codes.NotFound || st.Code() == codes.InvalidArgument:
			h.fail(up, st.Message())
			return
		}
		repeat = got == 0 && time.Since(started) <= time.Second
		if !repeat {
			wait, failures = minUpstreamBackoff, 0
		}
		switch {
		case failures == 0:
			h.g.log.Info("upstream watch broken", "auction", up.auction, "tail", tail.GetId(), "epoch", cfg.GetEpoch(),
				"code", st.Code().String(), "err", st.Message(), "events", got)
		case st.Code() == codes.Unimplemented && failures == 1:
			h.g.log.Warn("the tail does not serve Auctions.Watch: no live pushes", "auction", up.auction, "tail", tail.GetId())
		default:
			h.g.log.Debug("upstream watch failed", "auction", up.auction, "tail", tail.GetId(), "code", st.Code().String(), "err", st.Message())
		}
		failures++
		h.g.view.refresh(up.ctx)
		if !sleepOrChange(up.ctx, changed, wait) {
			return
		}
		wait = min(2*wait, maxUpstreamBackoff)
	}
}

// stream runs one Watch stream at addr, after seq after, and applies its
// events; it returns how many it got and why it ended.
func (h *hub) stream(up *upstream, addr string, after uint64) (int, error) {
	cc, err := h.g.dial(addr)
	if err != nil {
		return 0, status.Error(codes.Unavailable, err.Error())
	}
	stream, err := api.NewAuctionsClient(cc).Watch(up.ctx, &api.WatchAuctionRequest{Auction: up.auction, AfterSeq: after})
	got := 0
	for err == nil {
		var ev *api.AuctionEvent
		if ev, err = stream.Recv(); err == nil {
			got++
			if !h.apply(up, ev) {
				return got, errDropped
			}
		}
	}
	if err == io.EOF {
		err = status.Error(codes.Unavailable, "the tail ended the stream")
	}
	return got, err
}

// sleepOrChange waits for d, or until the chain view changes; false if ctx
// ended.
func sleepOrChange(ctx context.Context, changed <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-changed:
	case <-t.C:
	}
	return true
}

// fail tells up's watchers that the auction cannot be watched (it does not
// exist) and drops up.
func (h *hub) fail(up *upstream, msg string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.upstreams[up.auction] != up {
		return
	}
	for sub := range up.subs {
		delete(sub.c.subs, sub.auction)
		sub.c.pushOrKill(encode(errorMsg{Type: "error", Error: msg, Auction: up.auction, Line: sub.line, ID: sub.id}))
	}
	clear(up.subs)
	for _, be := range h.bidders {
		delete(be.auctions, up.auction)
	}
	up.interest = 0
	h.release(up)
	h.g.log.Info("upstream watch refused", "auction", up.auction, "err", msg)
}

// ---------------------------------------------------------------------------
// Events to pushes.

// apply turns one event of up's stream into pushes; false when up has been
// dropped meanwhile.
func (h *hub) apply(up *upstream, ev *api.AuctionEvent) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.upstreams[up.auction] != up {
		return false
	}
	info := ev.GetInfo()
	if info == nil || ev.GetSeq() <= up.lastSeq {
		return true // nothing new (a stream never repeats; be sure anyway)
	}
	seq := ev.GetSeq()
	prev := up.info
	up.lastSeq, up.info = seq, info
	at := time.Now() // for the queues' conflation
	now := h.g.nowMs()
	if ev.GetKind() != api.EventKind_EVENT_STATE && len(up.subs) > 0 {
		h.g.prom.observePush(ev.GetServerTimeMs(), now)
	}
	closed := info.GetState() == api.AuctionState_CLOSED_STATE
	switch ev.GetKind() {
	case api.EventKind_EVENT_HIGHEST:
		up.highestSeq = seq
		// Encoded once, shared by every watcher's queue (which never
		// modifies frames).
		frames := [][]byte{encode(highestPush{Type: "highest", Auction: up.auction, Amount: info.Highest, Bidder: info.Bidder,
			ClosesAt: info.ClosesAtMs, Seq: seq, ServerTime: now})}
		if ev.GetExtended() {
			frames = append(frames, encode(extendedPush{Type: "extended", Auction: up.auction, ClosesAt: info.ClosesAtMs, Seq: seq, ServerTime: now}))
		}
		for sub := range up.subs {
			if seq > sub.lastSeq {
				sub.lastSeq = seq
				sub.c.q.pushConflating(up.highestKey, at, frames...)
			}
		}
		h.updateLeads(up, seq, info, now)
	case api.EventKind_EVENT_CLOSED:
		up.closedSeq = seq
		frame := encode(closedPush{Type: "closed", Auction: up.auction, Winner: info.Bidder, Amount: info.Highest, Seq: seq, ServerTime: now})
		for sub := range up.subs {
			if seq > sub.lastSeq {
				sub.lastSeq = seq
				sub.c.pushOrKill(frame)
			}
		}
		h.ended(up) // nobody loses the lead of a closed auction
	default: // EVENT_STATE: the auction as it is, at the start of a stream
		changed := prev == nil || prev.Bidder != info.Bidder || prev.Highest != info.Highest
		if closed && up.closedSeq == 0 {
			up.closedSeq = seq
			if changed && info.Bidder != "" {
				// The bid came before the close, which is seq at the latest.
				up.highestSeq = seq - 1
			}
		} else if changed && info.Bidder != "" {
			up.highestSeq = seq
		}
		sf := &stateFrames{now: now, at: at}
		for sub := range up.subs {
			h.sendState(up, sub, sf)
		}
		if closed {
			h.ended(up)
		} else {
			h.updateLeads(up, up.highestSeq, info, now)
		}
	}
	return true
}

// ended forgets the bidders' interest in up's auction, which has closed:
// the upstream stays only while connections watch it. hub.mu held.
func (h *hub) ended(up *upstream) {
	for bidder := range up.leads {
		if be := h.bidders[bidder]; be != nil {
			delete(be.auctions, up.auction)
		}
	}
	clear(up.leads)
	up.interest = 0
	h.release(up)
}

// closed reports whether up's auction has closed.
func (h *hub) closed(up *upstream) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return up.closedSeq > 0
}

// stateFrames are the pushes of an upstream's current state, encoded on
// first use and shared by every watcher they are sent to.
type stateFrames struct {
	now             int64     // server_time
	at              time.Time // when they are queued
	highest, closed []byte
}

// sendState queues the pushes that bring sub up to date with up: the
// current highest bid and the close, those newer than what sub has.
func (h *hub) sendState(up *upstream, sub *subscription, sf *stateFrames) {
	info := up.info
	if info.GetBidder() != "" && up.highestSeq > sub.lastSeq {
		sub.lastSeq = up.highestSeq
		if sf.highest == nil {
			sf.highest = encode(highestPush{Type: "highest", Auction: up.auction, Amount: info.Highest, Bidder: info.Bidder,
				ClosesAt: info.ClosesAtMs, Seq: up.highestSeq, ServerTime: sf.now})
		}
		sub.c.q.pushConflating(up.highestKey, sf.at, sf.highest)
	}
	if up.closedSeq > 0 && up.closedSeq > sub.lastSeq {
		sub.lastSeq = up.closedSeq
		if sf.closed == nil {
			sf.closed = encode(closedPush{Type: "closed", Auction: up.auction, Winner: info.Bidder, Amount: info.Highest,
				Seq: up.closedSeq, ServerTime: sf.now})
		}
		sub.c.pushOrKill(sf.closed)
	}
}

// updateLeads follows each interested bidder's standing after an update
// (seq) that left info's bidder in the lead: a bidder that led and no
// longer does gets an outbid push.
func (h *hub) updateLeads(up *upstream, seq uint64, info *api.AuctionInfo, now int64) {
	if info.GetBidder() == "" {
		return
	}
	for bidder, l := range up.leads {
		if seq <= l.seq {
			continue
		}
		l.seq = seq
		if info.Bidder == bidder {
			l.amount, l.leading = info.Highest, true
			continue
		}
		if l.leading {
			l.leading = false
			h.sendOutbid(up, bidder, l.amount, seq, now)
		}
	}
}

// sendOutbid tells every connection of bidder that it lost the lead.
func (h *hub) sendOutbid(up *upstream, bidder string, yourBid int64, seq uint64, now int64) {
	be := h.bidders[bidder]
	if be == nil || up.info == nil {
		return
	}
	frame := encode(outbidPush{Type: "outbid", Auction: up.auction, Amount: up.info.Highest, Bidder: up.info.Bidder,
		YourBid: yourBid, Seq: seq, ServerTime: now})
	for c := range be.conns {
		c.q.pushLatest("outbid\x00"+up.auction, frame)
	}
}
