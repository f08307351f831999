package chain

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/internal/conns"
	"github.com/gavel-auction/gavel/pki"
	"github.com/gavel-auction/gavel/storage"
)

// NodeOptions configure a Node.
type NodeOptions struct {
	// ID is the node's id; Addr the host:port it serves on and is reached at.
	ID, Addr string
	// Initial is the configuration to start with; nil makes the node wait
	// for one through Admin.SetConfig (a node that joins a running chain).
	Initial *api.ChainConfig
	// Tick is the replica's clock period (retries, closes); HelloRetry how
	// long an unanswered Hello waits before it is repeated.
	Tick, HelloRetry time.Duration
	// MaxBatch caps the updates in one Forward.
	MaxBatch int
	Logger   *slog.Logger
	// Now is the clock the head stamps updates with (time.Now if nil).
	Now func() time.Time
	// Masters are the gRPC addresses of the master group. With masters the
	// node heartbeats every Heartbeat, joins the chain through the master,
	// takes its configurations from it, and serves reads (as tail) and
	// bids (as head) only while it holds the master's lease. Without, it
	// runs on Initial and Admin.SetConfig alone.
	Masters   []string
	Heartbeat time.Duration
	// TLS, when set, runs every gRPC link of the node over mutual TLS with
	// this identity: its server requires a client certificate of the CA
	// (and logs each refused connection), and its connections to peers,
	// forwarding targets and masters present its certificate. Nil serves
	// and dials in plaintext.
	TLS *pki.Identity
	// Secret is auth.secret, which signs bidder and admin tokens: with
	// it, the node takes a bid only for the bidder its caller
	// authenticated (the caller's token, or a gateway's or node's
	// certificate), and opens auctions only for admins. Empty is open
	// mode: bidders name themselves. See auth.Guard for every check.
	Secret string
	// DialOptions are added to every connection the node opens (to peers,
	// to forwarding targets, to masters), after the credentials of TLS: a
	// custom dialer, other credentials.
	DialOptions []grpc.DialOption
	// Incarnation tells this run of the node from earlier ones; 0 draws a
	// random one (the normal case).
	Incarnation uint64
	// DataDir is where the node keeps its write-ahead log and snapshots
	// (package storage); empty keeps everything in memory. Cluster names
	// the cluster the data dir belongs to.
	DataDir, Cluster string
	// Sync makes the node fsync its log before it acknowledges or answers
	// anything, and, without masters, before it forwards (chain.sync:
	// always); without it, writes reach the page cache only and a
	// whole-machine crash loses them.
	Sync bool
	// SnapshotEvery is how many updates pass between two snapshots of the
	// state; the log keeps the updates since the one before the last, so
	// a node that missed less than that gets only what it lacks.
	SnapshotEvery int
	// SegmentSize is the size of the write-ahead log's segment files
	// (storage.DefaultSegmentSize if 0).
	SegmentSize int
	// Limits bound the replicated state (retention of closed auctions,
	// request ids, bidders per auction): as head, the node sequences the
	// Trims that apply them. The zero Limits bound nothing.
	Limits auction.Limits
	// SnapshotChunkBytes caps one chunk of a snapshot sent to a peer
	// (DefaultSnapshotChunkBytes if 0).
	SnapshotChunkBytes int
	// MaxWatchStreams bounds the Auctions.Watch streams the node serves
	// at once (DefaultMaxWatchStreams if 0); WatchHistory the changes it
	// keeps per open auction for resumed watches (DefaultWatchHistory if
	// 0).
	MaxWatchStreams, WatchHistory int
}

// DefaultSnapshotEvery is NodeOptions.SnapshotEvery's default.
const DefaultSnapshotEvery = 50_000

// replyTo receives the reply to a proposal. deliver runs on the goroutine
// driving the replica: it must not block.
type replyTo interface {
	deliver(cmd *api.Command, rep Reply)
}

// replyChan is the replyTo of one waiting call; its capacity is 1.
type replyChan chan Reply

func (c replyChan) deliver(_ *api.Command, rep Reply) { c <- rep }

// proposal is a client request given to the replica; its reply goes to to.
type proposal struct {
	cmd *api.Command
	to  replyTo
}

// input is one piece of work for the replica: a client request (cmd, with
// to), a batch of messages from a peer (msgs), or a function to run on the
// replica (f: reads, configuration, status, link failures, ticks).
type input struct {
	cmd  *api.Command
	to   replyTo
	msgs []*api.ChainMessage
	f    func(*Replica)
}

const (
	// maxInputs bounds the input queue: past it, whoever queues more waits
	// until the driver takes the queue (backpressure on clients and peers).
	maxInputs = 8192
	// maxInlineRounds is how many rounds a goroutine that came with its own
	// input drives before it hands the replica over to the helper.
	maxInlineRounds = 4
)

// Node runs one Replica behind gRPC: the client API (Auctions), the admin
// API (Admin) and the replication streams (Chain).
//
// Inputs for the replica — client requests, message batches from peers,
// and functions to run on it — go through one queue, in arrival order. The
// replica is driven by one goroutine at a time, the driver: whoever queues
// an input while nobody drives becomes the driver and processes the queue
// itself (drive), so an input on an idle node is handled on the goroutine
// that received it, with no handoff; while somebody drives, queueing is
// all there is to do. A driver takes the whole queue each round, feeds it
// to the replica, and dispatches one Ready, so a burst of bids is
// sequenced and forwarded as one batch (group commit). A helper goroutine
// ticks the replica and takes over driving from a gRPC handler that has
// driven for maxInlineRounds rounds, so that no client's stream waits long
// on its own handler.
type Node struct {
	opts  NodeOptions
	log   *slog.Logger
	start time.Time
	// clock0 is opts.Now() when the node was made: the replica's clock
	// (nowMs) counts from it.
	clock0 time.Time

	stop chan struct{} // closed by Stop
	done chan struct{} // closed when the helper has ended
	kick chan struct{} // capacity 1: hands the driver role to the helper

	// guard decides what each caller may do (auth.Guard).
	guard *auth.Guard

	transport *transport
	// forwards are the connections to other nodes for forwarded calls.
	forwards *conns.Cache
	server   *grpc.Server
	stopOnce sync.Once

	// incarnation is this run's number; membership is nil without masters.
	incarnation uint64
	membership  *membership
	bgCtx       context.Context // cancelled by Stop; ends the membership loops
	bgCancel    context.CancelFunc
	bg          sync.WaitGroup

	// mu guards inputs, driving and helperGone; room waits on it.
	mu     sync.Mutex
	room   sync.Cond // signalled when the driver takes the queue
	inputs []input   // queued for the replica, in arrival order
	// driving is set while a goroutine holds the driver role.
	driving bool
	// helperGone is set when no helper can take over (not started, or ended).
	helperGone bool

	// Owned by the driver.
	replica *Replica
	pending map[Handle]proposal
	nextH   Handle
	spare   []input // a drained queue, reused as the next one
	tick    func(*Replica)
	// stopped is set once Stop has answered every waiting client; later
	// requests are answered ErrUnavailable without reaching the replica.
	stopped bool
	// watches are the Auctions.Watch streams this node serves as tail.
	watches *watchHub

	// store is the node's data dir (nil: memory only). Driver only, but
	// for the snapshot goroutine (see takeSnapshot).
	store *storage.Store
	// snapSeq is the seq of the last snapshot (durable with a store),
	// prevSnapSeq the one before: the log is kept from it on.
	snapSeq, prevSnapSeq uint64
	// snapshotting is set while a snapshot is being written.
	snapshotting bool
	// storageErr is set once writing the data dir failed: the node then
	// answers nothing and stops heartbeating, so the master removes it.
	storageErr error
	// syncer writes applied updates to the store in the background (nil
	// without a data dir).
	syncer *syncer
	// heldChanges are watch changes waiting for their updates to be on
	// disk before watchers see them; driver only.
	heldChanges []heldChanges
	// dataBytes is the data dir's size as of the last tick that measured it.
	dataBytes atomic.Int64
	// recovered: the node started from a data dir that held updates.
	recovered bool
	// mem is the archive of a node without a data dir (nil with one: the
	// store is the archive); driver only.
	mem *memArchive
	// digest caches the state digest that status reports (see status).
	digest digestCache

	metrics *nodeMetrics // safe for concurrent use
}

// NewNode builds a node; Start serves it.
func NewNode(opts NodeOptions) (*Node, error) {
	if opts.ID == "" || opts.Addr == "" {
		return nil, fmt.Errorf("chain: node needs an id and an address")
	}
	if opts.Tick <= 0 {
		opts.Tick = 10 * time.Millisecond
	}
	if opts.HelloRetry <= 0 {
		opts.HelloRetry = 50 * time.Millisecond
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	n := &Node{
		clock0:     opts.Now(),
		opts:       opts,
		log:        opts.Logger,
		stop:       make(chan struct{}),
		done:       make(chan struct{}),
		kick:       make(chan struct{}, 1),
		helperGone: true,
		pending:    map[Handle]proposal{},
		watches:    newWatchHub(opts.WatchHistory, opts.MaxWatchStreams),
		mem:        newMemArchive(),
	}
	n.metrics = newNodeMetrics(n)
	n.guard = auth.NewGuard(auth.GuardOptions{TLS: opts.TLS != nil, Secret: []byte(opts.Secret),
		Log: opts.Logger.With("node", opts.ID)})
	n.room.L = &n.mu
	n.incarnation = opts.Incarnation
	if n.incarnation == 0 {
		n.incarnation = newIncarnation()
	}
	n.bgCtx, n.bgCancel = context.WithCancel(context.Background())
	// Every connection the node makes (to peers, to masters, for
	// forwarded calls) dials with its TLS identity first.
	if opts.TLS != nil {
		n.opts.DialOptions = append([]grpc.DialOption{opts.TLS.DialOption()}, opts.DialOptions...)
	}
	if len(opts.Masters) > 0 {
		if opts.Heartbeat <= 0 {
			opts.Heartbeat = 50 * time.Millisecond
			n.opts.Heartbeat = opts.Heartbeat
		}
		n.membership = newMembership(n, opts.Masters, opts.Heartbeat)
	}
	n.tick = func(r *Replica) {
		r.Tick(n.nowMs())
		if n.store != nil && r.ticks%100 == 0 {
			n.dataBytes.Store(n.store.Size())
		}
		if n.membership != nil && n.storageErr == nil {
			n.membership.publish(n.report(r))
		}
		n.checkWatchers(r)
	}
	n.replica = NewReplica(Options{ID: opts.ID, MaxBatch: opts.MaxBatch, Leased: n.membership != nil,
		AsyncDurable:    n.asyncDurable(),
		HelloRetryTicks: max(1, int(opts.HelloRetry/opts.Tick)), Logger: opts.Logger, Limits: opts.Limits,
		Archive: n.mem, SnapshotChunkBytes: opts.SnapshotChunkBytes})
	if n.opts.SnapshotEvery <= 0 {
		n.opts.SnapshotEvery = DefaultSnapshotEvery
	}
	if opts.DataDir != "" {
		saved, err := n.recover()
		if err != nil {
			return nil, err
		}
		if saved != nil && opts.Initial != nil && saved.GetEpoch() >= opts.Initial.GetEpoch() {
			// Without masters, the last configuration this node installed
			// (from gavel reconfigure) wins over the file's epoch 1.
			opts.Initial = saved
		}
	}
	n.transport = newTransport(opts.ID, opts.Logger, n.peerDown, n.opts.DialOptions...)
	n.forwards = conns.New(append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithStaticStreamWindowSize(streamWindow), grpc.WithStaticConnWindowSize(connWindow), client.ReconnectQuickly},
		n.opts.DialOptions...)...)
	if opts.Initial != nil {
		if err := n.replica.Reconfigure(opts.Initial); err != nil {
			return nil, fmt.Errorf("chain: initial configuration: %w", err)
		}
		n.metrics.reconfigs.Inc()
		n.transport.setAddrs(opts.Initial)
	}
	serverOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(maxMsgBytes), grpc.MaxSendMsgSize(maxMsgBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		grpc.StaticStreamWindowSize(streamWindow), grpc.StaticConnWindowSize(connWindow),
	}
	if opts.TLS != nil {
		serverOpts = append(serverOpts, opts.TLS.ServerOption(opts.Logger.With("node", opts.ID)))
	}
	n.server = grpc.NewServer(serverOpts...)
	if n.store != nil {
		n.dataBytes.Store(n.store.Size())
		n.syncer = newSyncer(n)
		n.bg.Add(1)
		go func() { defer n.bg.Done(); n.syncer.run(n.stop) }()
	}
	api.RegisterAuctionsServer(n.server, &auctionsServer{n: n})
	api.RegisterAdminServer(n.server, &adminServer{n: n})
	api.RegisterChainServer(n.server, &chainServer{n: n})
	return n, nil
}

// Start serves the node on lis and starts its helper; it returns at once.
func (n *Node) Start(lis net.Listener) error {
	n.start = time.Now()
	n.log.Info("node started", "node", n.opts.ID, "addr", n.opts.Addr, "listen", lis.Addr().String(),
		"epoch", n.replica.Epoch(), "role", n.replica.Role().String(), "incarnation", n.incarnation,
		"masters", len(n.opts.Masters))
	n.mu.Lock()
	n.helperGone = false
	n.mu.Unlock()
	go n.helper()
	if n.membership != nil {
		n.membership.run(n.bgCtx, &n.bg)
	}
	go func() {
		if err := n.server.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("grpc server stopped", "node", n.opts.ID, "err", err)
		}
	}()
	return nil
}

// Stop shuts the node down: in-flight client calls get Unavailable, then the
// helper, the transport and the server end.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		close(n.stop)
		n.bgCancel()
		if !n.start.IsZero() {
			<-n.done
		}
		n.bg.Wait() // the membership loops end with their calls' context
		if n.membership != nil {
			n.membership.close()
		}
		answered := make(chan struct{})
		n.enqueue(input{f: func(*Replica) {
			n.stopped = true
			n.watches.endAll(toStatus(ErrUnavailable))
			for h, p := range n.pending {
				delete(n.pending, h)
				p.to.deliver(p.cmd, Reply{Handle: h, Err: ErrUnavailable})
			}
			close(answered)
		}})
		<-answered
		// Every waiting client has been answered; replication streams
		// never end by themselves, so stop the server outright.
		n.transport.close()
		n.server.Stop()
		n.forwards.Close()
		if n.store != nil {
			n.store.Close()
		}
		n.log.Info("node stopped", "node", n.opts.ID)
	})
}

// helper ticks the replica and drives it when a handler hands it over.
func (n *Node) helper() {
	defer close(n.done)
	ticker := time.NewTicker(n.opts.Tick)
	defer ticker.Stop()
	for {
		select {
		case <-n.stop:
			n.mu.Lock()
			n.helperGone = true
			n.mu.Unlock()
			// A handover made before helperGone was set is ours to finish.
			select {
			case <-n.kick:
				n.drive(true)
			default:
			}
			return
		case <-n.kick:
			n.drive(true)
		case <-ticker.C:
			n.enqueueTick()
		}
	}
}

// enqueueTick queues a tick, or skips it when the queue is full: a busy
// node misses a tick and takes the next. IMPORTANT: the helper must never
// wait for room, because the driver may be handing its role to the helper
// at that very moment, and only the driver makes room.
func (n *Node) enqueueTick() {
	n.mu.Lock()
	if len(n.inputs) >= maxInputs {
		n.mu.Unlock()
		return
	}
	n.inputs = append(n.inputs, input{f: n.tick})
	if n.driving {
		n.mu.Unlock()
		return
	}
	n.driving = true
	n.mu.Unlock()
	n.drive(true)
}

// enqueueNoWait queues in for the replica without ever waiting: when
// nobody drives, it hands the driver role to the helper rather than take
// it. The syncer uses it: it must neither wait for the driver (which may
// be waiting for it in flush) nor become the driver.
func (n *Node) enqueueNoWait(in input) {
	n.mu.Lock()
	n.inputs = append(n.inputs, in)
	if n.driving || n.helperGone {
		n.mu.Unlock()
		return
	}
	n.driving = true
	n.mu.Unlock()
	n.kick <- struct{}{} // never blocks: only the holder of the driver role sends
}

// enqueue queues in for the replica. If nobody is driving, the caller
// becomes the driver and processes the queue before it returns; otherwise
// it returns at once. It waits only while the queue is full.
func (n *Node) enqueue(in input) {
	n.mu.Lock()
	for len(n.inputs) >= maxInputs && n.driving {
		n.room.Wait()
	}
	n.inputs = append(n.inputs, in)
	if n.driving {
		n.mu.Unlock()
		return
	}
	n.driving = true
	n.mu.Unlock()
	n.drive(false)
}

// drive runs rounds while inputs are queued, then gives up the driver
// role. A round takes the queue, feeds it to the replica, yields once so
// that goroutines made runnable by the same burst (the handlers of other
// streams) can queue their inputs, takes those too, and dispatches one
// Ready. A goroutine other than the helper hands the role to the helper
// after maxInlineRounds rounds, unless the helper has ended.
func (n *Node) drive(helper bool) {
	r := n.replica
	for round := 0; ; round++ {
		n.mu.Lock()
		if len(n.inputs) == 0 {
			n.driving = false
			n.mu.Unlock()
			return
		}
		if !helper && round == maxInlineRounds && !n.helperGone {
			n.kick <- struct{}{} // never blocks: only the one driver sends
			n.mu.Unlock()
			return
		}
		n.mu.Unlock()
		n.process(n.take())
		runtime.Gosched()
		if batch := n.take(); len(batch) > 0 {
			n.process(batch)
		}
		if r.HasReady() {
			n.dispatch(r.Ready())
		}
	}
}

// take returns the queued inputs and leaves an empty queue; driver only.
func (n *Node) take() []input {
	n.mu.Lock()
	batch := n.inputs
	n.inputs, n.spare = n.spare[:0], nil
	n.room.Broadcast()
	n.mu.Unlock()
	return batch
}

// process feeds inputs to the replica; driver only.
func (n *Node) process(batch []input) {
	r := n.replica
	for i := range batch {
		in := &batch[i]
		switch {
		case in.cmd != nil:
			n.sequence(proposal{cmd: in.cmd, to: in.to})
		case in.f != nil:
			in.f(r)
		default:
			for _, m := range in.msgs {
				r.Step(m)
			}
		}
	}
	clear(batch)
	n.spare = batch[:0]
}

// asyncDurable says whether the node forwards before its own fsync
// (Options.AsyncDurable): with a data dir, and with masters. A restart
// with masters is a new member that catches up from the tail; without
// them a node resumes its old place, as head too, which it may do only
// if it holds everything it forwarded, so it writes before it forwards.
func (n *Node) asyncDurable() bool { return n.opts.DataDir != "" && len(n.opts.Masters) > 0 }

// nowMs is the replica's clock (Tick, Propose, Read, leases), in unix ms:
// the wall clock when the node was made plus the monotonic time since, so
// that a step of the wall clock moves neither a lease nor a close.
func (n *Node) nowMs() int64 { return n.clock0.UnixMilli() + time.Since(n.clock0).Milliseconds() }

// sequence gives a proposal to the replica; driver only.
func (n *Node) sequence(p proposal) {
	if n.stopped || n.storageErr != nil {
		p.to.deliver(p.cmd, Reply{Err: ErrUnavailable})
		return
	}
	n.nextH++
	n.pending[n.nextH] = p
	n.replica.Propose(n.nextH, p.cmd, n.nowMs())
}

// dispatch hands a Ready's messages to the transport and its replies to
// their clients; driver only.
func (n *Node) dispatch(rd Ready) {
	if !n.persist(rd) {
		return
	}
	if len(rd.Messages) > 0 {
		n.transport.send(rd.Messages)
	}
	if len(rd.Applied) > 0 {
		changes := n.watches.record(rd.Applied, n.replica.StateGen(), n.replica.StateBase())
		if !n.asyncDurable() {
			n.watches.publish(changes, n.opts.ID, n.replica.Epoch(), n.opts.Now().UnixMilli())
		} else if len(changes) > 0 {
			// Watchers see a change only once it is on disk, as readers do.
			n.heldChanges = append(n.heldChanges, heldChanges{gen: n.replica.StateGen(),
				seq: rd.Applied[len(rd.Applied)-1].Update.GetSeq(), changes: changes})
		}
	}
	for _, rep := range rd.Replies {
		if p, ok := n.pending[rep.Handle]; ok {
			delete(n.pending, rep.Handle)
			p.to.deliver(p.cmd, rep)
		}
	}
}

// peerDown is called by the transport when a stream to or from peer breaks.
func (n *Node) peerDown(peer string) {
	n.enqueue(input{f: func(r *Replica) { r.PeerDown(peer) }})
}

// do runs f on the replica (as an input, in turn) and waits for it.
func (n *Node) do(ctx context.Context, f func(r *Replica)) error {
	select {
	case <-n.stop:
		return ErrUnavailable
	default:
	}
	done := make(chan struct{})
	n.enqueue(input{f: func(r *Replica) { f(r); close(done) }})
	select {
	case <-done:
		return nil
	case <-n.stop:
		return ErrUnavailable
	case <-ctx.Done():
		return ctx.Err()
	}
}

// propose gives cmd to the replica; its reply will go to to. It waits only
// while the input queue is full.
func (n *Node) propose(cmd *api.Command, to replyTo) {
	n.enqueue(input{cmd: cmd, to: to})
}

// submit proposes cmd and waits for its reply.
func (n *Node) submit(ctx context.Context, cmd *api.Command) (Reply, error) {
	reply := make(replyChan, 1)
	n.propose(cmd, reply)
	select {
	case rep := <-reply:
		return rep, nil
	case <-ctx.Done():
		// Forget the call, so that a chain that cannot commit does not
		// pile up the abandoned attempts of retrying clients.
		n.enqueue(input{f: func(r *Replica) {
			for h, p := range n.pending {
				if p.to == replyTo(reply) {
					delete(n.pending, h)
					r.Abandon(h)
				}
			}
		}})
		return Reply{}, ctx.Err()
	}
}

// setConfig installs cfg on the replica and learns its members' addresses.
func (n *Node) setConfig(ctx context.Context, cfg *api.ChainConfig) (uint64, error) {
	var (
		err   error
		epoch uint64
	)
	if derr := n.do(ctx, func(r *Replica) {
		err = r.Reconfigure(cfg)
		epoch = r.Epoch()
		if err == nil || errors.Is(err, ErrRemoved) {
			n.metrics.reconfigs.Inc()
			n.transport.setAddrs(cfg)
			n.saveConfig(cfg)
		}
	}); derr != nil {
		return 0, derr
	}
	return epoch, err
}

// status returns the replica's status and the current configuration.
func (n *Node) status(ctx context.Context) (*api.NodeStatus, error) {
	var (
		st       *api.NodeStatus
		snap     *api.StateSnapshot // the state, when its digest is not cached
		gen, seq uint64
	)
	if err := n.do(ctx, func(r *Replica) {
		st = r.Status()
		st.Incarnation, st.LeaseMs = n.incarnation, n.replica.LeaseLeft(n.nowMs())
		st.Durable = n.durable(r)
		gen, seq = r.StateGen(), r.Applied()
		if d, ok := n.digest.get(gen, seq); ok {
			st.StateDigest = d
		} else {
			snap = r.State().Snapshot()
		}
	}); err != nil {
		return nil, err
	}
	if snap != nil {
		// Encoded and hashed here, off the driver, once per seq.
		st.StateDigest = n.digest.put(gen, seq, snap)
	}
	st.Addr = n.opts.Addr
	st.DataDir, st.Sync = n.opts.DataDir, "none"
	if n.opts.Sync {
		st.Sync = "always"
	}
	if n.store != nil {
		st.DataBytes = uint64(n.store.Size())
	}
	st.UptimeMs = time.Since(n.start).Milliseconds()
	return st, nil
}

// digestCache is the state digest of one seq (of one state generation),
// which status reports: computed once per seq, off the driver.
type digestCache struct {
	mu       sync.Mutex // guards every field
	gen, seq uint64
	hex      string
}

// get returns the digest of (gen, seq) if it is the one cached.
func (c *digestCache) get(gen, seq uint64) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.hex, c.hex != "" && c.gen == gen && c.seq == seq
}

// put hashes snap, the state at (gen, seq), caches and returns its digest
// (the first 8 bytes of auction.State.Digest, in hex).
func (c *digestCache) put(gen, seq uint64, snap *api.StateSnapshot) string {
	d := auction.DigestOf(snap)
	h := hex.EncodeToString(d[:8])
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen > c.gen || (gen == c.gen && seq >= c.seq) {
		c.gen, c.seq, c.hex = gen, seq, h
	}
	return h
}

// memberAddr finds the address of the head (wantHead) or tail in cfg.
func memberAddr(cfg *api.ChainConfig, wantHead bool) (string, string) {
	if len(cfg.GetChain()) == 0 {
		return "", ""
	}
	m := cfg.Chain[len(cfg.Chain)-1]
	if wantHead {
		m = cfg.Chain[0]
	}
	return m.Id, m.Addr
}
