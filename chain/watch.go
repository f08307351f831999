package chain

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
)

// watchBuffer is how many events a watcher may fall behind before it is
// cut off (it resumes from its last sequence number, with the state).
const watchBuffer = 1024

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
	// last is the auction as the latest event sent about it showed it, for
	// the previous highest bid of the next event.
	last map[string]*api.AuctionInfo
}

func newWatchHub() *watchHub {
	return &watchHub{byAuction: map[string]map[*auctionWatcher]struct{}{}, last: map[string]*api.AuctionInfo{}}
}

func (h *watchHub) add(w *auctionWatcher, info *api.AuctionInfo) {
	set := h.byAuction[w.auction]
	if set == nil {
		set = map[*auctionWatcher]struct{}{}
		h.byAuction[w.auction] = set
	}
	set[w] = struct{}{}
	h.last[w.auction] = info
}

func (h *watchHub) remove(w *auctionWatcher) {
	if set := h.byAuction[w.auction]; set != nil {
		delete(set, w)
		if len(set) == 0 {
			delete(h.byAuction, w.auction)
			delete(h.last, w.auction)
		}
	}
}

// count is the number of watchers.
func (h *watchHub) count() int {
	n := 0
	for _, set := range h.byAuction {
		n += len(set)
	}
	return n
}

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

// publish turns the applied updates that watchers see into events; driver only.
func (h *watchHub) publish(applied []Applied, node string, epoch uint64, nowMs int64) {
	if len(h.byAuction) == 0 {
		return
	}
	for _, ap := range applied {
		set := h.byAuction[ap.Result.Auction]
		if ap.Info == nil || len(set) == 0 {
			continue
		}
		ev := &api.AuctionEvent{Kind: api.EventKind_EVENT_HIGHEST, Info: ap.Info, Seq: ap.Update.Seq,
			ServerTimeMs: nowMs, Node: node, Epoch: epoch}
		if ap.Result.Closed {
			ev.Kind = api.EventKind_EVENT_CLOSED
		} else {
			ev.PreviousBidder, ev.Extended = ap.Result.Previous, ap.Result.Extended
			if prev := h.last[ap.Result.Auction]; prev != nil {
				ev.PreviousAmount = prev.Highest
			}
		}
		h.last[ap.Result.Auction] = ap.Info
		for w := range set {
			select {
			case w.events <- ev:
			default:
				h.end(w, status.Errorf(codes.ResourceExhausted,
					"watcher of %s fell %d events behind: resume after seq %d", w.auction, watchBuffer, ap.Update.Seq-1))
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
	if err := n.leaseErr(); err != nil {
		return status.Error(codes.Unavailable, err.Error())
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
	if req.GetAuction() == "" {
		return status.Error(codes.InvalidArgument, "watch needs an auction id")
	}
	w := &auctionWatcher{auction: req.Auction, events: make(chan *api.AuctionEvent, watchBuffer), done: make(chan struct{})}
	var (
		first *api.AuctionEvent
		err   error
	)
	if derr := n.do(ctx, func(r *Replica) {
		if err = n.watchable(r); err != nil {
			return
		}
		a, ok := r.State().Get(req.Auction)
		if !ok {
			err = status.Error(codes.NotFound, fmt.Sprintf("%v: %q", auction.ErrUnknownAuction, req.Auction))
			return
		}
		info := a.Info()
		n.watches.add(w, info)
		if info.Version > req.AfterSeq {
			first = &api.AuctionEvent{Kind: api.EventKind_EVENT_STATE, Info: info, Seq: info.Version,
				ServerTimeMs: n.opts.Now().UnixMilli(), Node: n.opts.ID, Epoch: r.Epoch()}
		}
	}); derr != nil {
		return toStatus(derr)
	}
	if err != nil {
		return err
	}
	defer n.enqueue(input{f: func(*Replica) {
		select {
		case <-w.done:
		default:
			n.watches.remove(w)
		}
	}})
	if first != nil {
		if err := stream.Send(first); err != nil {
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
