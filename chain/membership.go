package chain

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/internal/conns"
)

// membership is a node's side of the master: it heartbeats to the master
// leader, takes the configurations the master pushes (a watch stream, and
// every heartbeat reply), and keeps the lease that lets this node serve
// reads as tail and take bids as head.
//
// A node is known to the master by its id and its incarnation, a random
// number drawn when the process starts: a restarted node is a new member
// that catches up from the tail, never the old one resuming its position.
// A heartbeat from a node that is not in the configuration asks to join.
type membership struct {
	n       *Node
	masters []string // gRPC addresses
	period  time.Duration

	// latest is the node's progress as of its last tick, published by the
	// driver so that heartbeats never wait behind client requests in the
	// input queue.
	latest atomic.Pointer[publishedReport]

	// conns are the connections to the masters.
	conns *conns.Cache
}

// publishedReport is a heartbeat's content and when the driver made it.
type publishedReport struct {
	req *api.HeartbeatRequest
	at  time.Time
}

// staleReport is the age past which a node stops heartbeating: its driver
// has not ticked for that long, so it is wedged and had better be removed.
const staleReport = time.Second

// heartbeatTimeout bounds one heartbeat call: long enough for a loaded
// leader, short enough to try another master before the lease runs out.
func heartbeatTimeout(period time.Duration) time.Duration { return 4 * period }

// publish records the node's progress for the next heartbeat; driver only.
func (ms *membership) publish(req *api.HeartbeatRequest) {
	ms.latest.Store(&publishedReport{req: req, at: time.Now()})
}

func newMembership(n *Node, masters []string, period time.Duration) *membership {
	return &membership{n: n, masters: slices.Clone(masters), period: period,
		conns: conns.New(append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
			client.ReconnectQuickly}, n.opts.DialOptions...)...)}
}

// newIncarnation draws a random non-zero incarnation number.
func newIncarnation() uint64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		if v := binary.LittleEndian.Uint64(b[:]); v != 0 {
			return v
		}
	}
}

func (ms *membership) client(i int) (api.MasterClient, error) {
	cc, err := ms.conns.Get(ms.masters[i])
	if err != nil {
		return nil, err
	}
	return api.NewMasterClient(cc), nil
}

// close closes the connections to the masters; client fails from then on.
func (ms *membership) close() { ms.conns.Close() }

// run starts the heartbeat and watch loops; both end when ctx is done.
func (ms *membership) run(ctx context.Context, wg *sync.WaitGroup) {
	wg.Add(2)
	go func() { defer wg.Done(); ms.heartbeatLoop(ctx) }()
	go func() { defer wg.Done(); ms.watchLoop(ctx) }()
}

// heartbeatLoop reports to the master leader every period. Each reply
// brings the master's configuration and, for a member, a lease counted
// from when the heartbeat was sent, so it ends before the master's own
// count of the node's silence does.
func (ms *membership) heartbeatLoop(ctx context.Context) {
	n := ms.n
	ticker := time.NewTicker(ms.period)
	defer ticker.Stop()
	cur, wedged := 0, false
	// lastOK is the last answered heartbeat; warned is set once a silence
	// that costs the lease has been logged.
	lastOK, warned := time.Now(), false
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
		latest := ms.latest.Load()
		if latest == nil || time.Since(latest.at) > staleReport {
			if latest != nil && !wedged && ctx.Err() == nil {
				n.log.Warn("node wedged: no tick for too long; heartbeats paused", "node", n.opts.ID,
					"since", time.Since(latest.at).Round(time.Millisecond))
			}
			wedged = latest != nil
			continue
		}
		wedged = false
		req := latest.req
		c, err := ms.client(cur)
		if err != nil {
			cur = (cur + 1) % len(ms.masters)
			continue
		}
		sentMs := n.nowMs()
		cctx, cancel := context.WithTimeout(ctx, heartbeatTimeout(ms.period))
		rep, err := c.Heartbeat(cctx, req)
		cancel()
		if err != nil {
			n.log.Debug("heartbeat failed; trying the next master", "node", n.opts.ID, "master", ms.masters[cur], "err", err)
			if !warned && time.Since(lastOK) > 4*ms.period && ctx.Err() == nil {
				n.log.Warn("master leader unreachable: lease not renewed", "node", n.opts.ID, "epoch", req.Epoch,
					"silent_ms", time.Since(lastOK).Milliseconds(), "err", err)
				warned = true
			}
			cur = (cur + 1) % len(ms.masters)
			continue
		}
		if warned {
			n.log.Info("master leader reachable again", "node", n.opts.ID, "epoch", req.Epoch, "leader", rep.LeaderId,
				"silent_ms", time.Since(lastOK).Milliseconds())
			warned = false
		}
		lastOK = time.Now()
		if i := slices.Index(ms.masters, rep.LeaderAddr); i >= 0 {
			cur = i // talk to the leader directly from now on
		}
		n.enqueue(input{f: func(r *Replica) {
			n.installFromMaster(r, rep.Config)
			if rep.LeaseMs > 0 {
				r.GrantLease(sentMs + rep.LeaseMs)
			}
		}})
	}
}

// watchLoop follows the configuration on any master's watch stream.
func (ms *membership) watchLoop(ctx context.Context) {
	n := ms.n
	cur := 0
	for ctx.Err() == nil {
		var after uint64
		if n.do(ctx, func(r *Replica) { after = r.Epoch() }) != nil {
			return
		}
		c, err := ms.client(cur)
		if err == nil {
			var stream grpc.ServerStreamingClient[api.ChainConfig]
			stream, err = c.Watch(ctx, &api.WatchRequest{AfterEpoch: after, Watcher: n.opts.ID})
			for err == nil {
				var cfg *api.ChainConfig
				if cfg, err = stream.Recv(); err == nil {
					n.enqueue(input{f: func(r *Replica) { n.installFromMaster(r, cfg) }})
				}
			}
		}
		cur = (cur + 1) % len(ms.masters)
		select {
		case <-ctx.Done():
		case <-time.After(ms.period):
		}
	}
}

// report is this node's heartbeat; driver only.
func (n *Node) report(r *Replica) *api.HeartbeatRequest {
	req := progressReport(r, n.opts.Addr, n.incarnation, n.durable(r))
	req.DataBytes, req.Recovered = uint64(max(0, n.dataBytes.Load())), n.recovered
	return req
}

// progressReport is the part of a heartbeat that the replica knows: who
// it is (at addr, as incarnation) and how far it has got, with durable
// the last seq on its disk. The simulation heartbeats with it too.
func progressReport(r *Replica, addr string, incarnation, durable uint64) *api.HeartbeatRequest {
	return &api.HeartbeatRequest{Id: r.ID(), Addr: addr, Incarnation: incarnation,
		Epoch: r.Epoch(), Role: r.Role(), Applied: r.Applied(), Committed: r.Committed(),
		CaughtUp: r.CaughtUp(), Linked: r.Linked(), Durable: durable}
}

// installFromMaster installs a configuration from the master if it is newer
// and concerns this run of the node; driver only. A configuration that
// names this node's id with another incarnation describes an earlier run
// of the process: it is not for us (the master replaces that member once
// our heartbeat reaches it). One that does not name us at all, before we
// ever had one, is skipped too: we are not a member yet.
func (n *Node) installFromMaster(r *Replica, cfg *api.ChainConfig) {
	if !forThisRun(r, n.incarnation, cfg) {
		return
	}
	err := r.Reconfigure(cfg)
	if err == nil || err == ErrRemoved {
		n.transport.setAddrs(cfg)
		n.metrics.reconfigs.Inc()
		n.saveConfig(cfg)
	}
	if err != nil && err != ErrRemoved {
		n.log.Warn("configuration from the master refused", "node", n.opts.ID, "epoch", cfg.Epoch, "err", err)
		return
	}
}

// forThisRun reports whether cfg, from the master, is for replica r run
// as the given incarnation: newer than what r has, and either naming this
// incarnation or leaving out a node that has been a member (a removal).
func forThisRun(r *Replica, incarnation uint64, cfg *api.ChainConfig) bool {
	if cfg.GetEpoch() <= r.Epoch() {
		return false
	}
	inc, named := incarnationIn(cfg, r.ID())
	return !(named && inc != incarnation) && (named || r.Config() != nil)
}

// incarnationIn finds id in cfg and returns its incarnation.
func incarnationIn(cfg *api.ChainConfig, id string) (uint64, bool) {
	for _, list := range [][]*api.Member{cfg.GetChain(), cfg.GetJoining()} {
		for _, m := range list {
			if m.GetId() == id {
				return m.GetIncarnation(), true
			}
		}
	}
	return 0, false
}

// read serves a read at the tail under the lease rule; driver only.
func (n *Node) read(r *Replica, auctionID string) (*api.AuctionInfo, error) {
	n.flushForRead(r)
	return r.Read(auctionID, n.nowMs())
}

// list serves a listing at the tail under the lease rule; driver only.
func (n *Node) list(r *Replica) ([]*api.AuctionInfo, error) {
	n.flushForRead(r)
	return r.List(n.nowMs())
}
