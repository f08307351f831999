package chain

import (
	"errors"
	"fmt"
	"sync/atomic"

	"google.golang.org/protobuf/proto"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
)

// watchBuffer is how many events a watcher may fall behind before it is
// cut off (it resumes from its last sequence number).
const watchBuffer = 1024

// historyLen is how many recent changes (successful bids) a node keeps
// per open auction by default, so that a watch resumed after a sequence
// number gets every change it missed — when the tail changes, or a
// watcher was cut off — instead of only the state. Beyond it, the state
// stands in; and once the auction closes its history goes, and the state
// (the winner) is all a resumed watch needs.
const historyLen = 128

// DefaultWatchHistory is NodeOptions.WatchHistory's default.
const DefaultWatchHistory = historyLen

// DefaultMaxWatchStreams is NodeOptions.MaxWatchStreams' default.
const DefaultMaxWatchStreams = 10_000

// change is one visible change of an auction, as kept in its history.
type change struct {
	seq        uint64
	closed     bool
	amount     int64 // the highest bid after the change
	bidder     string
	previous   string // who led before (bids)
	prevAmount int64
	extended   bool
	closesAtMs int64
}

// history is an auction's recent changes: a ring of at most a watchHub's
// histLen, oldest first from start.
type history struct {
	ring  []change // grows to histLen, then wraps
	start int      // index of the oldest change once the ring is full
	// evicted is the seq of the newest change overwritten (0: none): a
	// resume after it can be served from the ring.
	evicted uint64
}

// last returns the newest change (the zero change if there is none).
func (h *history) last() change {
	if len(h.ring) == 0 {
		return change{}
	}
	return h.ring[(h.start+len(h.ring)-1)%len(h.ring)]
}

// add appends c, overwriting the oldest change when the ring holds n.
func (h *history) add(c change, n int) {
	if len(h.ring) < n {
		h.ring = append(h.ring, c)
		return
	}
	h.evicted = h.ring[h.start].seq
	h.ring[h.start] = c
	h.start = (h.start + 1) % len(h.ring)
}

// each calls f on every change, oldest first.
func (h *history) each(f func(change)) {
	for i := range h.ring {
		f(h.ring[(h.start+i)%len(h.ring)])
	}
}

// auctionWatcher is one Auctions.Watch stream. The driver sends its events
// and ends it; the stream's handler goroutine takes them.
type auctionWatcher struct {
	auction string
	events  chan *api.AuctionEvent // capacity watchBuffer
	// done is closed by the driver when the stream must end, with err
	// (a gRPC status) set before.
	done chan struct{}
	err  error
}

// watchHub is the node's set of watchers. It is owned by the driver: only
// code running on the replica (inputs, dispatch, ticks) touches it.
type watchHub struct {
	byAuction map[string]map[*auctionWatcher]struct{}
	// streams counts the watchers; at maxStreams a new watch is refused.
	streams, maxStreams int
	// refused counts the watches refused at maxStreams (read by metrics:
	// atomic).
	refused atomic.Uint64
	// histories are every open auction's recent changes, at most histLen
	// each, kept at every node (a middle node may become the tail); they
	// describe the state of generation gen (see Replica.StateGen) and are
	// dropped with it.
	histories map[string]*history
	histLen   int
	gen       uint64
	// base is the seq the state of generation gen started from (a
	// snapshot's; 0 from the start): changes at or before it are unknown.
	base uint64
}

// newWatchHub returns a hub that keeps histLen changes per open auction
// and serves at most maxStreams watchers (the defaults for 0).
func newWatchHub(histLen, maxStreams int) *watchHub {
	if histLen <= 0 {
		histLen = DefaultWatchHistory
	}
	if maxStreams <= 0 {
		maxStreams = DefaultMaxWatchStreams
	}
	return &watchHub{byAuction: map[string]map[*auctionWatcher]struct{}{}, histories: map[string]*history{},
		histLen: histLen, maxStreams: maxStreams}
}

// recorded is one visible change, as record kept it, with the auction
// right after it when applying the change committed it, at the tail
// (else nil: it is not for watchers).
type recorded struct {
	auction string
	change  change
	info    *api.AuctionInfo
}

// record adds the visible changes among applied to the auctions'
// histories and returns them; driver only. gen and base are the replica's
// state generation and the seq it started from.
func (h *watchHub) record(applied []Applied, gen, base uint64) []recorded {
	h.sync(gen, base)
	var out []recorded
	for _, ap := range applied {
		if ap.Info == nil {
			continue
		}
		id := ap.Result.Auction
		c := change{seq: ap.Update.Seq, closed: ap.Result.Closed, amount: ap.Info.Highest, bidder: ap.Info.Bidder,
			closesAtMs: ap.Info.ClosesAtMs}
		hist := h.histories[id]
		if c.closed {
			// A closed auction changes no more: a resumed watch gets its
			// state, the winner.
			delete(h.histories, id)
		} else {
			if hist == nil {
				hist = &history{}
				h.histories[id] = hist
			}
			c.previous, c.extended, c.prevAmount = ap.Result.Previous, ap.Result.Extended, hist.last().amount
			hist.add(c, h.histLen)
		}
		rec := recorded{auction: id, change: c}
		if ap.Committed {
			rec.info = ap.Info
		}
		out = append(out, rec)
	}
	return out
}

// event is the AuctionEvent of c; info is the auction right after it.
func (c change) event(info *api.AuctionInfo, node string, epoch uint64, nowMs int64) *api.AuctionEvent {
	ev := &api.AuctionEvent{Kind: api.EventKind_EVENT_HIGHEST, Info: info, Seq: c.seq, PreviousBidder: c.previous,
		PreviousAmount: c.prevAmount, Extended: c.extended, ServerTimeMs: nowMs, Node: node, Epoch: epoch}
	if c.closed {
		ev.Kind = api.EventKind_EVENT_CLOSED
	}
	return ev
}

// sync drops the histories if the replica's state was replaced since
// they were recorded; driver only.
func (h *watchHub) sync(gen, base uint64) {
	if gen != h.gen {
		clear(h.histories)
		h.gen, h.base = gen, base
	}
}

// replay returns the events of a's changes after seq, or false when the
// history no longer reaches back that far (or never did: the node's state
// came from a snapshot after it); driver only. info is the auction now.
func (h *watchHub) replay(a *api.AuctionInfo, after uint64, node string, epoch uint64, nowMs int64) ([]*api.AuctionEvent, bool) {
	hist := h.histories[a.Auction]
	if after < h.base || (hist != nil && after < hist.evicted) || a.State != api.AuctionState_OPEN {
		return nil, false // a closed auction's history is gone: the state stands in
	}
	if hist == nil {
		return nil, true // no change since the state began, so none after seq
	}
	var evs []*api.AuctionEvent
	hist.each(func(c change) {
		if c.seq <= after {
			return
		}
		info := proto.Clone(a).(*api.AuctionInfo)
		info.Highest, info.Bidder, info.ClosesAtMs, info.Version = c.amount, c.bidder, c.closesAtMs, c.seq
		info.State = api.AuctionState_OPEN
		if c.closed {
			info.State = api.AuctionState_CLOSED_STATE
		}
		evs = append(evs, c.event(info, node, epoch, nowMs))
	})
	return evs, true
}

func (h *watchHub) add(w *auctionWatcher) {
	set := h.byAuction[w.auction]
	if set == nil {
		set = map[*auctionWatcher]struct{}{}
		h.byAuction[w.auction] = set
	}
	set[w] = struct{}{}
	h.streams++
}

func (h *watchHub) remove(w *auctionWatcher) {
	if set := h.byAuction[w.auction]; set != nil {
		if _, ok := set[w]; ok {
			delete(set, w)
			h.streams--
		}
		if len(set) == 0 {
			delete(h.byAuction, w.auction)
		}
	}
}

// count is the number of watchers.
func (h *watchHub) count() int { return h.streams }

// end closes w with err and forgets it.
func (h *watchHub) end(w *auctionWatcher, err error) {
	h.remove(w)
	w.err = err
	close(w.done)
}

// endAll closes every watcher with err.
func (h *watchHub) endAll(err error) {
	for _, set := range h.byAuction {
		for w := range set {
			h.end(w, err)
		}
	}
}

// publish sends the tail's recorded changes to their watchers; driver
// only. A watcher too far behind is cut off.
func (h *watchHub) publish(changes []recorded, node string, epoch uint64, nowMs int64) {
	for _, r := range changes {
		set := h.byAuction[r.auction]
		if r.info == nil || len(set) == 0 {
			continue
		}
		ev := r.change.event(r.info, node, epoch, nowMs)
		for w := range set {
			select {
			case w.events <- ev:
				if r.change.closed {
					h.end(w, nil) // nothing follows a close: the stream ends with it
				}
			default:
				h.end(w, status.Errorf(codes.ResourceExhausted,
					"watcher of %s fell %d events behind: resume after seq %d", w.auction, watchBuffer, r.change.seq-1))
			}
		}
	}
}

// watchable returns why r cannot serve watch streams now, as a gRPC
// status, or nil; driver only. Only a readable tail holding its lease
// serves them; another node names the tail it knows.
func (n *Node) watchable(r *Replica) error {
	switch {
	case r.Config() == nil:
		return status.Error(codes.Unavailable, ErrNoConfig.Error())
	case !r.Readable():
		id, addr := memberAddr(r.Config(), false)
		return status.Errorf(codes.FailedPrecondition, "%s is %s, not a readable tail; the tail in epoch %d is %s at %s",
			n.opts.ID, r.Role(), r.Epoch(), id, addr)
	}
	if r.LeaseLeft(n.nowMs()) == 0 {
		return status.Error(codes.Unavailable, ErrNoLease.Error())
	}
	return nil
}

// checkWatchers ends every watch stream once the node cannot serve them;
// driver only (run at each tick).
func (n *Node) checkWatchers(r *Replica) {
	if len(n.watches.byAuction) == 0 {
		return
	}
	if err := n.watchable(r); err != nil {
		n.log.Info("ending watch streams", "node", n.opts.ID, "epoch", r.Epoch(), "role", r.Role().String(),
			"why", status.Convert(err).Message())
		n.watches.endAll(status.Errorf(codes.Unavailable, "watch ended: %s", status.Convert(err).Message()))
	}
}

// Watch streams an auction's committed changes; see api.AuctionsServer.
func (s *auctionsServer) Watch(req *api.WatchAuctionRequest, stream grpc.ServerStreamingServer[api.AuctionEvent]) error {
	n := s.n
	ctx := stream.Context()
	if _, err := n.guard.Peer(ctx); err != nil {
		return err
	}
	if req.GetAuction() == "" {
		return status.Error(codes.InvalidArgument, "watch needs an auction id")
	}
	w := &auctionWatcher{auction: req.Auction, events: make(chan *api.AuctionEvent, watchBuffer), done: make(chan struct{})}
	var (
		first  []*api.AuctionEvent
		err    error
		closed bool // nothing will follow the first events
	)
	if derr := n.do(ctx, func(r *Replica) {
		if err = n.watchable(r); err != nil {
			return
		}
		n.flushForRead(r) // the state it starts from is on disk
		var info *api.AuctionInfo
		if a, ok := r.State().Get(req.Auction); ok {
			info = a.Info()
		} else if info, err = n.read(r, req.Auction); err != nil {
			if errors.Is(err, auction.ErrUnknownAuction) {
				err = status.Error(codes.NotFound, fmt.Sprintf("%v: %q", auction.ErrUnknownAuction, req.Auction))
			} else {
				err = toStatus(err) // the archive failed
			}
			return
		}
		closed = info.State != api.AuctionState_OPEN
		if !closed {
			if n.watches.streams >= n.watches.maxStreams {
				n.watches.refused.Add(1)
				err = status.Errorf(codes.ResourceExhausted, "%s serves %d watch streams, the most it takes "+
					"(chain.max_watch_streams): try again later", n.opts.ID, n.watches.maxStreams)
				return
			}
			n.watches.add(w)
		}
		if info.Version > req.AfterSeq {
			// Every change the watcher missed, if the history reaches
			// back to after_seq; else the state as it is.
			now := n.opts.Now().UnixMilli()
			n.watches.sync(r.StateGen(), r.StateBase())
			ok := false
			if req.AfterSeq > 0 { // a first watch wants the state, a resumed one the news
				first, ok = n.watches.replay(info, req.AfterSeq, n.opts.ID, r.Epoch(), now)
			}
			if !ok {
				first = []*api.AuctionEvent{{Kind: api.EventKind_EVENT_STATE, Info: info, Seq: info.Version,
					ServerTimeMs: now, Node: n.opts.ID, Epoch: r.Epoch()}}
			}
		}
	}); derr != nil {
		return toStatus(derr)
	}
	if err != nil {
		return err
	}
	if closed {
		for _, ev := range first {
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
		return nil // a closed auction changes no more
	}
	defer n.enqueue(input{f: func(*Replica) {
		select {
		case <-w.done:
		default:
			n.watches.remove(w)
		}
	}})
	for _, ev := range first {
		if err := stream.Send(ev); err != nil {
			return err
		}
	}
	for {
		select {
		case ev := <-w.events:
			if err := stream.Send(ev); err != nil {
				return err
			}
		case <-w.done:
			for {
				select {
				case ev := <-w.events:
					if err := stream.Send(ev); err != nil {
						return err
					}
				default:
					return w.err
				}
			}
		case <-ctx.Done():
			return nil
		}
	}
}
