package gateway

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/internal/conns"
)

// chainView is the gateway's view of the chain configuration, which tells
// the upstream watches where the tail is. With masters it follows one
// long-lived Master.Watch stream (any master; the next one when a stream
// breaks); without, it asks the nodes' Admin.Status every pollInterval and
// whenever an upstream watch fails.
type chainView struct {
	g *Gateway

	mu  sync.Mutex // guards cfg and changed
	cfg *api.ChainConfig
	// changed is closed (and replaced) whenever cfg changes, so that
	// upstream watches waiting to retry go at once to the new tail.
	changed chan struct{}

	refreshMu   sync.Mutex // serializes node refreshes, so failing watches share one
	refreshedAt time.Time  // end of the last node refresh; guarded by refreshMu
}

const (
	// pollInterval is how often a gateway without masters asks the nodes
	// for their configuration.
	pollInterval = time.Second
	// minRefresh is the shortest time between two node refreshes.
	minRefresh = 50 * time.Millisecond
	// masterRetry is the wait before a broken master watch is opened again
	// on the next master.
	masterRetry = 100 * time.Millisecond
)

func newChainView(g *Gateway) *chainView {
	return &chainView{g: g, changed: make(chan struct{})}
}

// get returns the current configuration (nil before the first one; the
// caller must not modify it) and a channel closed when it changes.
func (v *chainView) get() (*api.ChainConfig, <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cfg, v.changed
}

// adopt makes cfg the current configuration if it differs: from a master
// only with a higher epoch (a master that lags behind its group must not
// take the view back); from the nodes' answers whenever it differs (a
// static chain restarted from scratch starts at epoch 1 again).
func (v *chainView) adopt(cfg *api.ChainConfig, fromMaster bool) {
	if len(cfg.GetChain()) == 0 {
		return
	}
	v.mu.Lock()
	old := v.cfg
	switch {
	case old != nil && fromMaster && cfg.Epoch <= old.Epoch:
		v.mu.Unlock()
		return
	case old != nil && proto.Equal(old, cfg):
		v.mu.Unlock()
		return
	}
	v.cfg = cfg
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()

	tail := cfg.Chain[len(cfg.Chain)-1].GetId()
	if old == nil {
		v.g.log.Info("chain configuration", "epoch", cfg.Epoch, "chain", memberIDs(cfg.Chain), "tail", tail)
		return
	}
	if oldTail := old.Chain[len(old.Chain)-1].GetId(); oldTail != tail {
		v.g.log.Info("tail changed", "epoch", cfg.Epoch, "old_tail", oldTail, "tail", tail, "chain", memberIDs(cfg.Chain))
	} else {
		v.g.log.Debug("chain configuration", "epoch", cfg.Epoch, "chain", memberIDs(cfg.Chain), "tail", tail)
	}
}

// run follows the configuration until ctx ends.
func (v *chainView) run(ctx context.Context) {
	if len(v.g.opts.Masters) > 0 {
		v.watchMasters(ctx)
		return
	}
	for {
		v.refresh(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pollInterval):
		}
	}
}

// watchMasters keeps one Master.Watch stream open, on the masters in
// turn, and adopts every configuration it sends.
func (v *chainView) watchMasters(ctx context.Context) {
	masters := v.g.opts.Masters
	for i := 0; ctx.Err() == nil; i = (i + 1) % len(masters) {
		var after uint64
		if cfg, _ := v.get(); cfg != nil {
			after = cfg.Epoch
		}
		var stream grpc.ServerStreamingClient[api.ChainConfig]
		cc, err := v.g.dial(masters[i])
		if err == nil {
			stream, err = api.NewMasterClient(cc).Watch(ctx, &api.WatchRequest{AfterEpoch: after, Watcher: "gateway " + v.g.opts.ID})
		}
		got := 0
		for err == nil {
			var cfg *api.ChainConfig
			if cfg, err = stream.Recv(); err == nil {
				got++
				v.adopt(cfg, true)
			}
		}
		if ctx.Err() != nil {
			return
		}
		if got > 0 {
			v.g.log.Info("master watch broken: trying the next master", "master", masters[i], "err", errText(err))
		} else {
			v.g.log.Debug("master watch failed", "master", masters[i], "err", errText(err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(masterRetry):
		}
	}
}

// refresh asks the nodes for their configuration now and adopts the
// highest epoch among the answers; with masters it does nothing (the
// master watch brings every new configuration). Refreshes less than
// minRefresh apart are shared.
func (v *chainView) refresh(ctx context.Context) {
	if len(v.g.opts.Masters) > 0 {
		return
	}
	v.refreshMu.Lock()
	defer v.refreshMu.Unlock()
	if time.Since(v.refreshedAt) < minRefresh {
		return
	}
	var best *api.ChainConfig
	for _, r := range v.g.client.StatusAll(ctx) {
		cfg := r.Status.GetConfig()
		if r.Err == nil && len(cfg.GetChain()) > 0 && (best == nil || cfg.Epoch > best.Epoch) {
			best = cfg
		}
	}
	if best != nil {
		v.adopt(best, false)
	}
	v.refreshedAt = time.Now()
}

// memberIDs lists the ids of members, in order.
func memberIDs(ms []*api.Member) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.GetId()
	}
	return ids
}

// tailOf returns the tail of cfg, or nil.
func tailOf(cfg *api.ChainConfig) *api.Member {
	if n := len(cfg.GetChain()); n > 0 {
		return cfg.Chain[n-1]
	}
	return nil
}

// dial returns the gateway's connection to addr, made on first use (gRPC
// connects lazily and reconnects by itself). Only a malformed address
// fails, and every address once Stop has closed the connections
// (ErrStopped).
func (g *Gateway) dial(addr string) (*grpc.ClientConn, error) {
	cc, err := g.grpcConns.Get(addr)
	if errors.Is(err, conns.ErrClosed) {
		return nil, ErrStopped
	}
	return cc, err
}

// errText is a short description of an RPC error: its code and message.
func errText(err error) string {
	st := status.Convert(err)
	return st.Code().String() + ": " + st.Message()
}
