package master

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/internal/conns"
	"github.com/gavel-auction/gavel/pki"
)

// Peer is one master of the group.
type Peer struct {
	ID       string
	Addr     string // gRPC
	RaftAddr string
}

// RaftTiming tunes hashicorp/raft (see config.RaftConfig).
type RaftTiming struct {
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout, CommitTimeout time.Duration
	SnapshotThreshold                                                    uint64
}

// DefaultForgetAfter is Options.ForgetAfter's default.
const DefaultForgetAfter = time.Minute

// Options configure a Master.
type Options struct {
	// ID is this master's id; it must be one of Peers.
	ID    string
	Peers []Peer
	// DataDir holds the Raft log (raft.db) and snapshots.
	DataDir string
	// Heartbeat is the nodes' heartbeat period; FailureTimeout the silence
	// after which the leader removes a node; Lease how long a heartbeat's
	// lease lasts (must be below FailureTimeout - Raft.LeaderLeaseTimeout).
	Heartbeat, FailureTimeout, Lease time.Duration
	// ForgetAfter is how long the leader keeps the report of a node that
	// is not in the configuration and has stopped heartbeating (a removed
	// or replaced node that is gone); DefaultForgetAfter if 0, and never
	// less than FailureTimeout.
	ForgetAfter time.Duration
	Raft        RaftTiming
	Logger      *slog.Logger
	// RaftLog receives hashicorp/raft's own log lines (warnings and up);
	// nil discards them.
	RaftLog io.Writer
	// JSONLogs makes hashicorp/raft log in JSON, like the slog handler.
	JSONLogs bool
	// RaftListener, when set, is where the Raft transport accepts;
	// otherwise it listens on RaftBind, or on this master's RaftAddr.
	RaftListener net.Listener
	// RaftBind is the host:port the Raft transport listens on when it
	// differs from the advertised RaftAddr (for example 0.0.0.0:7301).
	RaftBind string
	// TLS, when set, runs every link of the master over mutual TLS with
	// this identity: its gRPC server and its Raft transport require a
	// certificate of the CA from whoever connects (and log each refused
	// connection), and its connections to other masters present its
	// certificate. Nil serves and dials in plaintext.
	TLS *pki.Identity
	// DialOptions are added to the master's gRPC connections to other
	// masters, after the credentials of TLS.
	DialOptions []grpc.DialOption
}

// forwardedKey marks a heartbeat a follower forwarded to the leader, so a
// stale leader hint cannot bounce it around.
const forwardedKey = "gavel-master-forwarded"

// Master is one replica of the master group: Raft, the gRPC Master
// service and, while it leads, the failure detector.
type Master struct {
	opts  Options
	log   *slog.Logger
	self  Peer
	start time.Time

	fsm       *fsm
	raft      *raft.Raft
	transport *raft.NetworkTransport
	store     *raftboltdb.BoltStore
	server    *grpc.Server

	stop     chan struct{}
	done     chan struct{} // closed when the leader loop ends
	kick     chan struct{} // capacity 1: a heartbeat asks the leader loop to run now
	stopOnce sync.Once
	watchers atomic.Int64
	// leadingNow mirrors leading for readers that must not take mu (the
	// FSM's commit log).
	leadingNow atomic.Bool

	// mu guards the leader's view below, shared by the heartbeat handlers
	// and the leader loop.
	mu sync.Mutex
	// leader is this master's view of the nodes while it acts as leader
	// (from its first barrier in a term until it notices the term is
	// over); nil otherwise.
	leader     *Leader
	leaderTerm uint64
	// silent: members (id -> incarnation) already logged as "heartbeat lost".
	silent map[string]uint64

	metrics *metrics // safe for concurrent use
	// guard checks who calls: with TLS, a heartbeat comes from the node
	// it names, or from a master forwarding it.
	guard *auth.Guard

	// conns are the gRPC connections to other masters.
	conns *conns.Cache
}

// New opens (or creates) the master's Raft state in DataDir and starts its
// Raft node. A master with no state bootstraps the group from Peers; one
// with state rejoins with it.
func New(opts Options) (*Master, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ForgetAfter <= 0 {
		opts.ForgetAfter = DefaultForgetAfter
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), client.ReconnectQuickly}
	if opts.TLS != nil {
		dial = append(dial, opts.TLS.DialOption())
	}
	m := &Master{opts: opts, log: opts.Logger.With("master", opts.ID), stop: make(chan struct{}),
		done: make(chan struct{}), kick: make(chan struct{}, 1),
		silent: map[string]uint64{}, conns: conns.New(append(dial, opts.DialOptions...)...)}
	found := false
	for _, p := range opts.Peers {
		if p.ID == opts.ID {
			m.self, found = p, true
		}
	}
	if !found {
		return nil, fmt.Errorf("master: %q is not among the configured masters", opts.ID)
	}
	if err := os.MkdirAll(opts.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("master: data dir: %w", err)
	}
	m.metrics = newMetrics(m)
	m.guard = auth.NewGuard(auth.GuardOptions{TLS: opts.TLS != nil, Log: m.log})
	m.fsm = newFSM(m.log, m.onCommit)

	out := opts.RaftLog
	if out == nil {
		out = io.Discard
	}
	hlog := hclog.New(&hclog.LoggerOptions{Name: "raft", Level: hclog.Warn, Output: out, JSONFormat: opts.JSONLogs})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(opts.ID)
	rc.Logger = hlog
	rc.HeartbeatTimeout = opts.Raft.HeartbeatTimeout
	rc.ElectionTimeout = opts.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = opts.Raft.LeaderLeaseTimeout
	rc.CommitTimeout = opts.Raft.CommitTimeout
	if opts.Raft.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = opts.Raft.SnapshotThreshold
		rc.TrailingLogs = opts.Raft.SnapshotThreshold
	}
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("master: raft timing: %w", err)
	}

	store, err := raftboltdb.NewBoltStore(filepath.Join(opts.DataDir, "raft.db"))
	if err != nil {
		return nil, fmt.Errorf("master: opening %s: %w", filepath.Join(opts.DataDir, "raft.db"), err)
	}
	m.store = store
	snaps, err := raft.NewFileSnapshotStoreWithLogger(opts.DataDir, 2, hlog)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("master: snapshot store: %w", err)
	}
	bind := opts.RaftBind
	if bind == "" {
		bind = m.self.RaftAddr
	}
	var raftTLS *tls.Config
	if opts.TLS != nil {
		raftTLS = opts.TLS.PeerConfig()
	}
	ids := make([]string, len(opts.Peers))
	for i, p := range opts.Peers {
		ids[i] = p.ID
	}
	stream, err := newStreamLayer(opts.RaftListener, bind, m.self.RaftAddr, raftTLS, ids, m.log)
	if err != nil {
		store.Close()
		return nil, fmt.Errorf("master: raft transport on %s: %w", bind, err)
	}
	m.transport = raft.NewNetworkTransportWithLogger(stream, 3, 2*time.Second, hlog)
	existing, err := raft.HasExistingState(store, store, snaps)
	if err != nil {
		m.closeStores()
		return nil, fmt.Errorf("master: reading raft state: %w", err)
	}
	m.raft, err = raft.NewRaft(rc, m.fsm, store, store, snaps, m.transport)
	if err != nil {
		m.closeStores()
		return nil, fmt.Errorf("master: starting raft: %w", err)
	}
	if !existing {
		var servers []raft.Server
		for _, p := range opts.Peers {
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.RaftAddr)})
		}
		if err := m.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil &&
			!errors.Is(err, raft.ErrCantBootstrap) {
			m.raft.Shutdown()
			m.closeStores()
			return nil, fmt.Errorf("master: bootstrapping the raft group: %w", err)
		}
		m.log.Info("master group bootstrapped", "masters", len(servers), "data_dir", opts.DataDir)
	} else {
		m.log.Info("master rejoining with its raft state", "data_dir", opts.DataDir)
	}

	var serverOpts []grpc.ServerOption
	if opts.TLS != nil {
		serverOpts = append(serverOpts, opts.TLS.ServerOption(m.log))
	}
	m.server = grpc.NewServer(serverOpts...)
	api.RegisterMasterServer(m.server, &masterServer{m: m})
	return m, nil
}

func (m *Master) closeStores() {
	if m.transport != nil {
		m.transport.Close()
	}
	m.store.Close()
}

// Start serves the Master service on lis and starts the leader loop.
func (m *Master) Start(lis net.Listener) {
	m.start = time.Now()
	m.log.Info("master started", "addr", m.self.Addr, "raft_addr", m.self.RaftAddr,
		"heartbeat", m.opts.Heartbeat, "failure_timeout", m.opts.FailureTimeout, "lease", m.opts.Lease)
	go m.leaderLoop()
	go func() {
		if err := m.server.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			m.log.Error("grpc server stopped", "err", err)
		}
	}()
}

// Stop shuts the master down: the leader loop, the gRPC server, Raft and
// its stores, in bounded time.
func (m *Master) Stop() {
	m.stopOnce.Do(func() {
		close(m.stop)
		if !m.start.IsZero() {
			<-m.done
		}
		stopped := make(chan struct{})
		go func() { m.server.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(time.Second):
			m.server.Stop() // watch streams do not end by themselves
		}
		if err := m.raft.Shutdown().Error(); err != nil {
			m.log.Warn("raft shutdown", "err", err)
		}
		m.closeStores()
		m.conns.Close()
		m.log.Info("master stopped")
	})
}

// Config returns the configuration this master has applied.
func (m *Master) Config() Config { return m.fsm.config() }

// IsLeader reports whether this master is acting as leader.
func (m *Master) IsLeader() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.leader != nil && m.raft.State() == raft.Leader
}

// term returns the current Raft term.
func (m *Master) term() uint64 {
	t, _ := strconv.ParseUint(m.raft.Stats()["term"], 10, 64)
	return t
}

// onCommit logs each committed change; the leader logs at info level,
// followers at debug, so a merged log tells each change once.
func (m *Master) onCommit(cmd Command, cfg Config) {
	m.metrics.reconfigs.Inc()
	level := slog.LevelDebug
	if m.leadingNow.Load() {
		level = slog.LevelInfo
	}
	msg := map[Op]string{OpJoin: "join started: node added as joining", OpRemove: "node removed from the chain",
		OpAppend: "join complete: node appended as tail", OpRebuild: "chain rebuilt after a whole-chain outage"}[cmd.Op]
	if cmd.Op == OpJoin && len(cfg.Chain) == 1 && cfg.Chain[0].ID == cmd.Member.ID && len(cfg.Joining) == 0 && cfg.Epoch == 1 {
		msg = "chain started: first node is head and tail"
	}
	m.log.Log(context.Background(), level, msg, "node", cmd.Member.ID, "incarnation", cmd.Member.Incarnation,
		"reason", cmd.Reason, "epoch", cfg.Epoch, "config", cfg.String())
	m.log.Log(context.Background(), level, "new epoch committed; configuration pushed to watchers",
		"epoch", cfg.Epoch, "config", cfg.String(), "watchers", m.watchers.Load())
}

// ---------------------------------------------------------------------------
// The leader loop: failure detection, joins and appends.

func (m *Master) leaderLoop() {
	defer close(m.done)
	period := max(m.opts.Heartbeat/2, 5*time.Millisecond)
	ticker := time.NewTicker(period)
	defer ticker.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-ticker.C:
		case <-m.kick:
		}
		if !m.checkLeadership() {
			continue
		}
		m.step()
	}
}

// checkLeadership notices the start and end of this master's terms as
// leader and reports whether it leads now.
func (m *Master) checkLeadership() bool {
	isLeader := m.raft.State() == raft.Leader
	term := uint64(0)
	if isLeader {
		term = m.term()
	}
	m.mu.Lock()
	wasLeading, oldTerm := m.leader != nil, m.leaderTerm
	m.mu.Unlock()
	if wasLeading && (!isLeader || term != oldTerm) {
		m.mu.Lock()
		m.leader = nil
		m.mu.Unlock()
		m.leadingNow.Store(false)
		m.log.Warn("master leadership lost", "term", oldTerm, "epoch", m.fsm.config().Epoch)
	}
	if !isLeader {
		return false
	}
	if wasLeading && term == oldTerm {
		return true
	}
	// A new term: make sure every earlier entry is applied here, then start
	// with a clean slate — every node gets a full failure timeout.
	if err := m.raft.Barrier(m.opts.FailureTimeout * 4).Error(); err != nil {
		m.log.Warn("master leader barrier failed", "term", term, "err", err)
		return false
	}
	m.mu.Lock()
	m.leader, m.leaderTerm = NewLeader(time.Now()), term
	clear(m.silent)
	m.mu.Unlock()
	m.leadingNow.Store(true)
	cfg := m.fsm.config()
	m.log.Info("master leader elected", "term", term, "epoch", cfg.Epoch, "config", cfg.String(),
		"removals_after", m.opts.FailureTimeout)
	return true
}

// step runs one round of the leader's policy: it logs silences and proposes
// at most one command.
func (m *Master) step() {
	now := time.Now()
	m.mu.Lock()
	if m.leader == nil {
		m.mu.Unlock()
		return // the term ended meanwhile
	}
	cfg := m.fsm.config()
	m.logSilences(cfg, now)
	cmd, ok := m.leader.Decide(cfg, now, m.opts.FailureTimeout)
	m.forget(cfg, now)
	m.mu.Unlock()
	if !ok {
		return
	}
	if cmd.Op == OpAppend {
		m.log.Info("join caught up: joining node linked to the tail", "node", cmd.Member.ID, "epoch", cfg.Epoch)
	}
	f := m.raft.Apply(cmd.Encode(), m.opts.FailureTimeout*4)
	if err := f.Error(); err != nil {
		// The outcome is unknown (the entry may still commit): the epoch
		// condition makes a repeat harmless, so the next round decides anew.
		m.log.Warn("master proposal failed", "op", cmd.Op, "node", cmd.Member.ID, "epoch", cfg.Epoch, "err", err)
		return
	}
	if res, ok := f.Response().(applyResult); ok && res.err != nil {
		m.log.Info("master proposal changed nothing", "op", cmd.Op, "node", cmd.Member.ID, "epoch", res.cfg.Epoch, "why", res.err)
	}
	// A removal is done once the node is out of the configuration.
	m.mu.Lock()
	if m.leader != nil {
		m.leader.Settled(m.fsm.config())
	}
	m.mu.Unlock()
}

// forget drops what the leader knows of nodes that are gone: their
// reports (Leader.Forget) and their "heartbeat lost" marks. Called with
// mu held.
func (m *Master) forget(cfg Config, now time.Time) {
	if n := m.leader.Forget(cfg, now, max(m.opts.ForgetAfter, m.opts.FailureTimeout)); n > 0 {
		m.metrics.forgotten.Add(float64(n))
		m.log.Info("forgot nodes that are gone", "nodes", n, "after", m.opts.ForgetAfter, "epoch", cfg.Epoch)
	}
	for id := range m.silent {
		if i, j := cfg.find(id); i < 0 && j < 0 {
			delete(m.silent, id)
		}
	}
}

// logSilences logs each member whose heartbeats stopped for half the
// failure timeout, once per silence. Called with mu held.
func (m *Master) logSilences(cfg Config, now time.Time) {
	for _, list := range [][]Member{cfg.Chain, cfg.Joining} {
		for _, mem := range list {
			r, ok := m.leader.Report(mem.ID)
			last := m.leader.Since()
			if ok && r.Incarnation == mem.Incarnation && r.At.After(last) {
				last = r.At
			}
			if inc, logged := m.silent[mem.ID]; now.Sub(last) > m.opts.FailureTimeout/2 && (!logged || inc != mem.Incarnation) {
				m.silent[mem.ID] = mem.Incarnation
				m.log.Warn("heartbeat lost", "node", mem.ID, "epoch", cfg.Epoch,
					"silent_ms", now.Sub(last).Milliseconds(), "removal_in_ms", (m.opts.FailureTimeout - now.Sub(last)).Milliseconds())
			}
		}
	}
}

// heartbeat records a node's report and answers it; leader only.
func (m *Master) heartbeat(req *api.HeartbeatRequest) (*api.HeartbeatReply, error) {
	now := time.Now()
	m.mu.Lock()
	if m.leader == nil || m.raft.State() != raft.Leader {
		m.mu.Unlock()
		return nil, ErrNotLeader
	}
	cfg := m.fsm.config()
	res := m.leader.Heartbeat(cfg, req, now, m.opts.Lease)
	if inc, logged := m.silent[req.Id]; logged && inc == req.Incarnation && !m.leader.Doomed(req.Id) {
		delete(m.silent, req.Id)
		m.log.Info("heartbeat back", "node", req.Id, "epoch", cfg.Epoch)
	}
	m.mu.Unlock()
	if res.Wake {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
	return &api.HeartbeatReply{Config: cfg.Proto(), LeaseMs: res.Lease.Milliseconds(), LeaderId: m.self.ID,
		LeaderAddr: m.self.Addr, Member: res.Member}, nil
}

// leaderConn returns a connection to the current Raft leader's gRPC
// address, or ErrNotLeader when none is known.
func (m *Master) leaderConn() (*grpc.ClientConn, string, error) {
	_, id := m.raft.LeaderWithID()
	if id == "" || string(id) == m.self.ID {
		return nil, "", ErrNotLeader
	}
	var addr string
	for _, p := range m.opts.Peers {
		if p.ID == string(id) {
			addr = p.Addr
		}
	}
	if addr == "" {
		return nil, "", ErrNotLeader
	}
	c, err := m.conns.Get(addr)
	if err != nil {
		return nil, "", err
	}
	return c, string(id), nil
}

// reports is the number of node reports the leader holds; false when this
// master is not acting as leader.
func (m *Master) reports() (int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.leader == nil {
		return 0, false
	}
	return m.leader.Reports(), true
}

// nodeHealth is the leader's view of every node it has heard from.
func (m *Master) nodeHealth() []*api.NodeHealth {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.leader == nil {
		return nil
	}
	cfg := m.fsm.config()
	now := time.Now()
	var out []*api.NodeHealth
	add := func(mem Member) {
		h := &api.NodeHealth{Id: mem.ID, Addr: mem.Addr, Incarnation: mem.Incarnation, LastHeartbeatMs: -1}
		if r, ok := m.leader.Report(mem.ID); ok && r.Incarnation == mem.Incarnation {
			h.Role, h.Epoch, h.Applied, h.Committed, h.CaughtUp = r.Role, r.Epoch, r.Applied, r.Committed, r.CaughtUp
			h.LastHeartbeatMs = now.Sub(r.At).Milliseconds()
			h.Leased = !m.leader.Doomed(mem.ID) && now.Sub(r.At) < m.opts.Lease
		}
		out = append(out, h)
	}
	for _, mem := range cfg.Chain {
		add(mem)
	}
	for _, mem := range cfg.Joining {
		add(mem)
	}
	return out
}

// ---------------------------------------------------------------------------
// The gRPC service.

type masterServer struct {
	api.UnimplementedMasterServer
	m *Master
}

// Heartbeat answers at the leader, and is forwarded there by followers.
//
// With TLS a heartbeat speaks for the node whose certificate sent it
// (role node, the request's id), or comes from a master that forwards
// one it checked so; any other is refused (PermissionDenied, logged) and
// recorded nowhere. A malformed request (CheckHeartbeat) is refused with
// InvalidArgument, also unrecorded.
func (s *masterServer) Heartbeat(ctx context.Context, req *api.HeartbeatRequest) (*api.HeartbeatReply, error) {
	if err := CheckHeartbeat(req); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	fwd := len(md.Get(forwardedKey)) > 0
	p, err := s.m.guard.Peer(ctx)
	if err != nil {
		return nil, err
	}
	if s.m.guard.TLS() && !(p == pki.Peer{Role: pki.RoleNode, ID: req.GetId()}) && !(fwd && p.Is(pki.RoleMaster)) {
		why := fmt.Sprintf("a heartbeat for node %q from a certificate of %s: a node heartbeats only for itself", req.GetId(), p)
		if p.Is(pki.RoleMaster) {
			why = fmt.Sprintf("master %s sent a heartbeat for node %q without forwarding one", p.ID, req.GetId())
		}
		return nil, s.m.guard.Refuse(ctx, codes.PermissionDenied, p, why, "node", req.GetId(), "incarnation", req.GetIncarnation())
	}
	rep, err := s.m.heartbeat(req)
	if err == nil {
		return rep, nil
	}
	if fwd {
		return nil, status.Errorf(codes.Unavailable, "master %s is not the leader", s.m.self.ID)
	}
	conn, leader, cerr := s.m.leaderConn()
	if cerr != nil {
		return nil, status.Errorf(codes.Unavailable, "master %s: no leader known (election in progress?)", s.m.self.ID)
	}
	fctx := metadata.AppendToOutgoingContext(ctx, forwardedKey, s.m.self.ID)
	rep, err = api.NewMasterClient(conn).Heartbeat(fctx, req)
	if err != nil {
		return nil, status.Errorf(status.Code(err), "forwarded to leader %s: %v", leader, status.Convert(err).Message())
	}
	return rep, nil
}

// Watch streams this master's configuration: the current one if newer
// than after_epoch, then the latest one after each change (epochs
// superseded while a send was under way are skipped).
func (s *masterServer) Watch(req *api.WatchRequest, stream grpc.ServerStreamingServer[api.ChainConfig]) error {
	if _, err := s.m.guard.Peer(stream.Context()); err != nil {
		return err
	}
	s.m.watchers.Add(1)
	defer s.m.watchers.Add(-1)
	after := req.GetAfterEpoch()
	for {
		cfg, changed := s.m.fsm.current()
		if cfg.Epoch > after {
			if err := stream.Send(cfg.Proto()); err != nil {
				return err
			}
			after = cfg.Epoch
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		case <-s.m.stop:
			return status.Error(codes.Unavailable, "master stopping")
		}
	}
}

// Status reports this master's Raft state and configuration; the leader
// adds its view of every node.
func (s *masterServer) Status(ctx context.Context, _ *api.MasterStatusRequest) (*api.MasterStatus, error) {
	if _, err := s.m.guard.Peer(ctx); err != nil {
		return nil, err
	}
	m := s.m
	stats := m.raft.Stats()
	parse := func(k string) uint64 { v, _ := strconv.ParseUint(stats[k], 10, 64); return v }
	st := &api.MasterStatus{Id: m.self.ID, Addr: m.self.Addr, RaftState: m.raft.State().String(),
		Term: parse("term"), LastIndex: parse("last_log_index"), AppliedIndex: parse("applied_index"),
		Config: m.fsm.config().Proto(), Nodes: m.nodeHealth(), UptimeMs: time.Since(m.start).Milliseconds()}
	if _, id := m.raft.LeaderWithID(); id != "" {
		st.LeaderId = string(id)
		for _, p := range m.opts.Peers {
			if p.ID == string(id) {
				st.LeaderAddr = p.Addr
			}
		}
	}
	return st, nil
}
