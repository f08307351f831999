package chain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/gavel-auction/gavel/api"
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
	// MaxBatch caps the updates in one Forward; DedupWindow is how many
	// request outcomes are remembered per bidder.
	MaxBatch, DedupWindow int
	Logger                *slog.Logger
	// Now is the clock the head stamps updates with (time.Now if nil).
	Now func() time.Time
}

// replyTo receives the reply to a proposal. deliver runs on the loop
// goroutine: it must not block.
type replyTo interface {
	deliver(cmd *api.Command, rep Reply)
}

// replyChan is the replyTo of one waiting call; its capacity is 1.
type replyChan chan Reply

func (c replyChan) deliver(_ *api.Command, rep Reply) { c <- rep }

// proposal is a client request waiting for the loop; its reply goes to to.
type proposal struct {
	cmd *api.Command
	to  replyTo
}

// Node runs one Replica behind gRPC: the client API (Auctions), the admin
// API (Admin) and the replication streams (Chain).
//
// One goroutine, the loop, owns the replica. Everything else — gRPC
// handlers, the transport — talks to it through channels: proposals,
// inbound message batches, and control closures that the loop runs on the
// replica (reads, configuration changes, status, link failures). The loop
// takes one input, then drains whatever else is waiting before it asks the
// replica for Ready, so a burst of bids is sequenced and forwarded as one
// batch (group commit).
type Node struct {
	opts  NodeOptions
	log   *slog.Logger
	start time.Time

	proposals chan proposal
	inbound   chan []*api.ChainMessage
	control   chan func(*Replica)
	stop      chan struct{}
	done      chan struct{}

	transport *transport
	forwarder *forwarder
	server    *grpc.Server
	stopOnce  sync.Once

	// Owned by the loop goroutine.
	replica *Replica
	pending map[Handle]proposal
	nextH   Handle
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
		opts:      opts,
		log:       opts.Logger,
		proposals: make(chan proposal, 4096),
		inbound:   make(chan []*api.ChainMessage, 1024),
		control:   make(chan func(*Replica), 256),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
		pending:   map[Handle]proposal{},
	}
	n.replica = NewReplica(Options{ID: opts.ID, DedupWindow: opts.DedupWindow, MaxBatch: opts.MaxBatch,
		HelloRetryTicks: max(1, int(opts.HelloRetry/opts.Tick)), Logger: opts.Logger})
	n.transport = newTransport(opts.ID, opts.Logger, n.peerDown)
	n.forwarder = newForwarder()
	if opts.Initial != nil {
		if err := n.replica.Reconfigure(opts.Initial); err != nil {
			return nil, fmt.Errorf("chain: initial configuration: %w", err)
		}
		n.transport.setAddrs(opts.Initial)
	}
	n.server = grpc.NewServer(
		grpc.MaxRecvMsgSize(maxMsgBytes), grpc.MaxSendMsgSize(maxMsgBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
	)
	api.RegisterAuctionsServer(n.server, &auctionsServer{n: n})
	api.RegisterAdminServer(n.server, &adminServer{n: n})
	api.RegisterChainServer(n.server, &chainServer{n: n})
	return n, nil
}

// Start serves the node on lis and starts its loop; it returns at once.
func (n *Node) Start(lis net.Listener) error {
	n.start = time.Now()
	n.log.Info("node started", "node", n.opts.ID, "addr", n.opts.Addr, "listen", lis.Addr().String(),
		"epoch", n.replica.Epoch(), "role", n.replica.Role().String())
	go n.loop()
	go func() {
		if err := n.server.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			n.log.Error("grpc server stopped", "node", n.opts.ID, "err", err)
		}
	}()
	return nil
}

// Stop shuts the node down: in-flight client calls get Unavailable, then the
// loop, the transport and the server end.
func (n *Node) Stop() {
	n.stopOnce.Do(func() {
		close(n.stop)
		if !n.start.IsZero() {
			<-n.done
		}
		// Every waiting client has been answered by the loop; replication
		// streams never end by themselves, so stop the server outright.
		n.transport.close()
		n.server.Stop()
		n.forwarder.close()
		n.log.Info("node stopped", "node", n.opts.ID)
	})
}

// loop is the goroutine that owns the replica.
func (n *Node) loop() {
	defer close(n.done)
	ticker := time.NewTicker(n.opts.Tick)
	defer ticker.Stop()
	r := n.replica
	for {
		select {
		case <-n.stop:
			for h, p := range n.pending {
				p.to.deliver(p.cmd, Reply{Handle: h, Err: ErrUnavailable})
			}
			return
		case p := <-n.proposals:
			n.sequence(p)
		case msgs := <-n.inbound:
			n.step(msgs)
		case f := <-n.control:
			f(r)
		case <-ticker.C:
			r.Tick(n.opts.Now().UnixMilli())
		}
		// Group commit: take everything already waiting before producing Ready.
	drain:
		for i := 0; i < 4096; i++ {
			select {
			case p := <-n.proposals:
				n.sequence(p)
			case msgs := <-n.inbound:
				n.step(msgs)
			case f := <-n.control:
				f(r)
			default:
				break drain
			}
		}
		if r.HasReady() {
			n.dispatch(r.Ready())
		}
	}
}

// sequence gives a proposal to the replica.
func (n *Node) sequence(p proposal) {
	n.nextH++
	n.pending[n.nextH] = p
	n.replica.Propose(n.nextH, p.cmd, n.opts.Now().UnixMilli())
}

func (n *Node) step(msgs []*api.ChainMessage) {
	for _, m := range msgs {
		n.replica.Step(m)
	}
}

func (n *Node) dispatch(rd Ready) {
	if len(rd.Messages) > 0 {
		n.transport.send(rd.Messages)
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
	select {
	case n.control <- func(r *Replica) { r.PeerDown(peer) }:
	case <-n.stop:
	}
}

// do runs f on the loop goroutine and waits for it.
func (n *Node) do(ctx context.Context, f func(r *Replica)) error {
	done := make(chan struct{})
	select {
	case n.control <- func(r *Replica) { f(r); close(done) }:
	case <-n.stop:
		return ErrUnavailable
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-done:
		return nil
	case <-n.stop:
		return ErrUnavailable
	case <-ctx.Done():
		return ctx.Err()
	}
}

// propose hands cmd to the loop; its reply will go to to. It blocks only
// while the loop is too far behind (the proposals queue is full).
func (n *Node) propose(ctx context.Context, cmd *api.Command, to replyTo) error {
	select {
	case n.proposals <- proposal{cmd: cmd, to: to}:
		return nil
	case <-n.stop:
		return ErrUnavailable
	case <-ctx.Done():
		return ctx.Err()
	}
}

// submit proposes cmd and waits for its reply.
func (n *Node) submit(ctx context.Context, cmd *api.Command) (Reply, error) {
	reply := make(replyChan, 1)
	if err := n.propose(ctx, cmd, reply); err != nil {
		return Reply{}, err
	}
	select {
	case rep := <-reply:
		return rep, nil
	case <-ctx.Done():
		return Reply{}, ctx.Err()
	}
}

// setConfig installs cfg on the loop and learns its members' addresses.
func (n *Node) setConfig(ctx context.Context, cfg *api.ChainConfig) (uint64, error) {
	var (
		err   error
		epoch uint64
	)
	if derr := n.do(ctx, func(r *Replica) {
		err = r.Reconfigure(cfg)
		epoch = r.Epoch()
		if err == nil || errors.Is(err, ErrRemoved) {
			n.transport.setAddrs(cfg)
		}
	}); derr != nil {
		return 0, derr
	}
	return epoch, err
}

// status returns the replica's status and the current configuration.
func (n *Node) status(ctx context.Context) (*api.NodeStatus, error) {
	var st *api.NodeStatus
	if err := n.do(ctx, func(r *Replica) { st = r.Status() }); err != nil {
		return nil, err
	}
	st.Addr = n.opts.Addr
	st.UptimeMs = time.Since(n.start).Milliseconds()
	return st, nil
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
