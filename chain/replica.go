// Package chain is gavel's chain replication (van Renesse & Schneider,
// OSDI 2004): the replica protocol core and its gRPC edge.
//
// The core, Replica, is a deterministic state machine in the style of
// etcd-io/raft: messages (Step), client requests (Propose, Read), time
// (Tick), configuration changes (Reconfigure) and link failures (PeerDown)
// go in; Ready hands back the messages to send, the replies to deliver and
// the updates that were applied. It owns no goroutine, reads no clock and
// touches no network, so tests drive it on an in-memory network (see
// harness_test.go) exactly as the gRPC edge (Node) drives it on real sockets.
//
// Protocol summary:
//   - The head sequences every bid and open (whatever its outcome), applies
//     it, appends it to its Sent list and forwards it to its successor.
//   - Each node applies updates in sequence order, keeps them in its Sent
//     list until acknowledged, and forwards them on.
//   - The tail's apply commits an update; it acknowledges the sequence
//     number upstream, and straight to the head as well; each node drops
//     acknowledged Sent entries and passes the ack on; the head answers the
//     client once its update is committed.
//   - Every configuration carries an epoch. In each epoch a node says Hello
//     to its predecessor with the last sequence number it holds; the
//     predecessor answers with its Sent entries after it, or with a
//     snapshot first if it no longer holds them. This one handshake covers
//     head, middle and tail removal, joins at the tail, and broken links.
package chain

import (
	"fmt"
	"log/slog"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
)

// Handle identifies one client request at the edge; replies carry it back.
type Handle uint64

// Reply answers one proposed request.
type Reply struct {
	Handle Handle
	Result auction.Result
	// Err is set when the request was not decided (ErrNotHead, ErrHeadChanged...).
	Err error
	// Epoch is the replica's epoch when the reply left it.
	Epoch uint64
}

// Applied is an update this replica applied, with its outcome; the edge
// uses it for watch streams and metrics.
type Applied struct {
	Update *api.Update
	Result auction.Result
	// Info is the auction right after the update, set at every node for
	// the changes watchers see (a successful bid, a close) and nil for
	// the others.
	Info *api.AuctionInfo
	// Committed is set when applying the update committed it: at the
	// tail. Only committed changes go out to watchers.
	Committed bool
}

// Ready is what a replica has produced since the previous call to Ready.
//
// The edge must make Applied durable before it sends Messages or
// delivers Replies: a forward, an ack or a reply then only ever speaks of
// updates on this node's stable storage. When StateReplaced is set the
// state was replaced wholesale (a snapshot installed) since the last
// Ready: the edge then persists the whole current state instead of
// Applied. The results of auctions that Applied retire go to the edge's
// Archive, with those of Archive's ops (see ArchiveOp), before anything is
// sent.
type Ready struct {
	Messages      []*api.ChainMessage
	Replies       []Reply
	Applied       []Applied
	Archive       []ArchiveOp
	StateReplaced bool
}

// Options configure a Replica.
type Options struct {
	ID string
	// MaxBatch caps the updates in one Forward message.
	MaxBatch int
	// HelloRetryTicks is how many ticks to wait before repeating an
	// unanswered Hello.
	HelloRetryTicks int
	// Leased makes the replica sequence (as head) and serve reads (as
	// tail) only while it holds a lease from the master (GrantLease). A
	// chain without a master has no lease to hold.
	Leased bool
	// AsyncDurable: the edge writes applied updates to stable storage in
	// the background and reports them with Persisted; until then the
	// replica forwards them but neither acknowledges them upstream nor,
	// as head, answers their clients. Without it, what the replica
	// applies counts as durable at once (the edge persists each Ready
	// before it sends it).
	AsyncDurable bool
	// Limits bound the replicated state: as head, the replica sequences
	// a Trim whenever the state is past them (or applies other limits).
	// The zero Limits bound nothing.
	Limits auction.Limits
	// Archive holds the results of auctions retired before the last
	// Ready (nil: none are kept; see Archive).
	Archive Archive
	// SnapshotChunkBytes caps the bytes of state or archive in one
	// snapshot chunk (DefaultSnapshotChunkBytes if 0).
	SnapshotChunkBytes int
	Logger             *slog.Logger
}

// Recovered is the durable history a replica restarts from: a state
// (from the last snapshot, with the write-ahead log replayed on it) and
// the log entries it retains, which end at the state's sequence number.
type Recovered struct {
	State *auction.State
	// Log holds the retained updates, contiguous, ending at State.Seq();
	// it may start before the snapshot the state was built from.
	Log []*api.Update
	// Complete is set when the history is known to hold everything this
	// node ever forwarded, acknowledged or answered: it was written with
	// sync always and its log ended in a whole record. Only a complete
	// history lets the node serve as head or tail of its old
	// configuration before it has linked to a predecessor.
	Complete bool
}

// link is the predecessor's view of one downstream peer: the successor, or
// a joining node attached to the tail.
type link struct {
	id      string
	learner bool   // a joining node, not (yet) part of the chain
	ready   bool   // handshake done in this epoch: forward from next on
	next    uint64 // next sequence number to send
	// holds is the highest sequence number the peer is known to hold
	// (from its Hello and acks, or from its place in the old chain).
	holds uint64
	// snap is the snapshot in transfer to the peer (snapshot.go); no
	// update goes to it before the last chunk.
	snap *snapshotOut
}

// waiter is a client request at the head waiting for its update to commit.
type waiter struct {
	seq    uint64
	handle Handle
	result auction.Result
}

// Replica is one chain node's protocol state. It is not safe for
// concurrent use: one goroutine at a time (Node's driver, or a test)
// drives it.
type Replica struct {
	id   string
	opts Options
	log  *slog.Logger

	cfg *api.ChainConfig // nil until the first configuration
	// role is REMOVED once a configuration leaves the replica out, and
	// stays so, whatever later configurations say, until one names it
	// joining: a removed node never serves again in its old place.
	role api.Role

	state     *auction.State // its Seq is the last update applied (Applied)
	committed uint64         // highest sequence number known applied by the tail

	// sent holds updates applied here that some downstream peer may still
	// need, or that the retention rule keeps (everything after retainAfter),
	// contiguous and in order; sent[0].Seq == sentStart(). It is this
	// node's in-memory log: a peer whose Hello reports a position in it
	// gets only what it lacks.
	sent []*api.Update
	// retainAfter: updates after it stay in sent (Compact raises it).
	retainAfter uint64
	// baseEpoch is the epoch of the update at sentStart()-1, when known
	// (baseKnown).
	baseEpoch uint64
	baseKnown bool
	// incomplete is set by Restore for a history that may lack updates
	// this node forwarded or acknowledged (see Recovered.Complete).
	incomplete bool

	upstream      string // predecessor (or, when joining, the tail); "" for the head
	upEstablished bool   // upstream answered our Hello in this epoch
	lastHelloTick uint64
	// caughtUp: this replica holds every update ever committed. A chain
	// member keeps it for as long as it stays in the chain (every later
	// commit passes through it); a node that joins gets it once it has
	// applied all that a caught-up predecessor had applied when it sent a
	// Forward (see stepForward). Only a
	// caught-up tail serves reads and only a caught-up head sequences.
	caughtUp bool
	ackDirty bool // an Ack upstream is due
	// durable is the last seq on this node's stable storage (Persisted,
	// with Options.AsyncDurable; else the last applied). An ack upstream
	// never exceeds it, nor does a reply at the head: a client hears of
	// an update only once it is on the disk of every chain member.
	durable uint64

	down    []*link // successor first, then learners
	waiters []waiter

	ticks uint64
	// leaseUntil is when the master's lease runs out, in the clock of
	// Tick, Propose and Read (with Options.Leased); 0: none held.
	leaseUntil int64
	// readLeaseOverrunMs is a deliberate bug for the simulation's own
	// test: the tail serves reads that long past its lease. Always 0
	// otherwise.
	readLeaseOverrunMs int64
	// stateGen counts the times state was replaced (a snapshot, a reset
	// on rejoining): history kept outside the replica is void after one.
	stateGen uint64
	// stateBase is the seq the current state started from (a snapshot's).
	stateBase uint64

	// retiring are the results of auctions retired since the last Ready,
	// not yet in the archive, by auction id.
	retiring map[string]*api.AuctionInfo
	// snapIn is the snapshot being received from the predecessor.
	snapIn    *snapshotIn
	snapStats SnapshotStats

	// Outputs, drained by Ready.
	msgs       []*api.ChainMessage
	replies    []Reply
	out        []Applied
	archiveOps []ArchiveOp
	replaced   bool
}

// NewReplica returns a replica with empty state and no configuration.
func NewReplica(opts Options) *Replica {
	if opts.MaxBatch <= 0 {
		opts.MaxBatch = 1024
	}
	if opts.HelloRetryTicks <= 0 {
		opts.HelloRetryTicks = 5
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SnapshotChunkBytes <= 0 {
		opts.SnapshotChunkBytes = DefaultSnapshotChunkBytes
	}
	return &Replica{
		id:        opts.ID,
		opts:      opts,
		log:       opts.Logger,
		state:     auction.New(),
		baseKnown: true,
		retiring:  map[string]*api.AuctionInfo{},
	}
}

// Restore gives a replica that has no configuration yet the history it
// recovered from its data dir. Its first configuration then decides: a
// chain member says Hello with the last update it holds and gets only
// what it lacks; the head of a rebuilt chain sequences on it.
func (r *Replica) Restore(rec Recovered) error {
	if r.cfg != nil {
		return fmt.Errorf("chain %s: restore after the first configuration", r.id)
	}
	seq := rec.State.Seq()
	if n := len(rec.Log); n > 0 {
		if rec.Log[n-1].GetSeq() != seq || rec.Log[0].GetSeq()+uint64(n-1) != seq {
			return fmt.Errorf("chain %s: recovered log %d..%d does not end at the state's seq %d",
				r.id, rec.Log[0].GetSeq(), rec.Log[n-1].GetSeq(), seq)
		}
	}
	r.state, r.sent = rec.State, rec.Log
	r.durable = seq // read back from the data dir
	r.stateGen, r.stateBase = r.stateGen+1, seq
	if len(rec.Log) > 0 {
		r.stateBase = rec.Log[0].GetSeq() - 1
	}
	r.retainAfter = r.sentStart() - 1
	r.baseKnown = len(rec.Log) == 0
	r.baseEpoch = rec.State.LastEpoch()
	r.incomplete = !rec.Complete
	return nil
}

// Compact lets the replica forget retained updates up to seq (the edge
// calls it once a snapshot covering them is durable). Updates a
// downstream peer still needs stay.
func (r *Replica) Compact(seq uint64) {
	if seq > r.retainAfter {
		r.retainAfter = min(seq, r.Applied())
		r.trimSent()
	}
}

// Log returns the retained updates (tests and status only; callers must
// not modify them).
func (r *Replica) Log() []*api.Update { return r.sent }

// epochAt returns the epoch of the update at seq, if this replica knows
// it: seq 0, an update in its log, the one just before it, or its last.
func (r *Replica) epochAt(seq uint64) (uint64, bool) {
	start := r.sentStart()
	switch {
	case seq == 0:
		return 0, true
	case seq == r.Applied():
		return r.state.LastEpoch(), true
	case seq >= start && seq <= r.Applied():
		return r.sent[seq-start].GetEpoch(), true
	case seq == start-1 && r.baseKnown:
		return r.baseEpoch, true
	}
	return 0, false
}

// ID is the replica's node id.
func (r *Replica) ID() string { return r.id }

// Role is the replica's role in the current configuration.
func (r *Replica) Role() api.Role { return r.role }

// Epoch is the current configuration's epoch (0 before the first).
func (r *Replica) Epoch() uint64 { return r.cfg.GetEpoch() }

// Config is the current configuration (nil before the first). Callers must
// not modify it.
func (r *Replica) Config() *api.ChainConfig { return r.cfg }

// Applied is the last applied sequence number: the state's.
func (r *Replica) Applied() uint64 { return r.state.Seq() }

// Committed is the highest sequence number this replica knows committed.
func (r *Replica) Committed() uint64 { return r.committed }

// State gives read access to the auction state (tests and status only).
func (r *Replica) State() *auction.State { return r.state }

// Readable reports whether the replica, as tail, may serve reads now.
func (r *Replica) Readable() bool { return r.isTail() && r.caughtUp }

// StateGen counts the times the replica's state was replaced wholesale
// (a snapshot installed, a reset when rejoining); whatever the edge keeps
// about earlier updates is void once it changes.
func (r *Replica) StateGen() uint64 { return r.stateGen }

// StateBase is the sequence number the current state started from: a
// snapshot's, or 0; the edge knows nothing of updates at or before it.
func (r *Replica) StateBase() uint64 { return r.stateBase }

// Linked reports whether the predecessor (for a joining node, the tail)
// has answered this replica's Hello in the current epoch; the head, which
// has no predecessor, is always linked.
func (r *Replica) Linked() bool { return r.upstream == "" || r.upEstablished }

// CaughtUp reports whether the replica holds every committed update.
func (r *Replica) CaughtUp() bool { return r.caughtUp }

// Status reports the replica's state for operators.
func (r *Replica) Status() *api.NodeStatus {
	return &api.NodeStatus{Id: r.id, Role: r.role, Config: r.cfg, Applied: r.Applied(),
		Committed: r.committed, Sent: uint64(len(r.sent)), Readable: r.Readable(),
		Auctions: uint64(r.state.Len()), CaughtUp: r.caughtUp, Retired: r.state.Retired()}
}

// GrantLease extends the replica's lease to untilMs, in the clock of
// Tick, Propose and Read: the edge calls it with a heartbeat's send time
// plus the lease the master's reply grants. A shorter lease than the one
// held changes nothing.
func (r *Replica) GrantLease(untilMs int64) {
	if untilMs > r.leaseUntil && !r.isRemoved() {
		r.leaseUntil = untilMs
	}
}

// Persisted tells the replica (with Options.AsyncDurable) that the
// updates up to seq of state generation gen (StateGen when they were
// handed over) are on stable storage; a report about a state since
// replaced is ignored. Acks and replies held for them go out with the
// next Ready.
func (r *Replica) Persisted(gen, seq uint64) {
	if gen != r.stateGen {
		return
	}
	seq = min(seq, r.Applied())
	if seq <= r.durable {
		return
	}
	r.durable = seq
	r.ackDirty = r.upstream != ""
	r.release()
}

// Durable is the last seq this replica counts as on stable storage.
func (r *Replica) Durable() uint64 { return r.durable }

// LeaseLeft is the lease time left at nowMs, in ms: -1 for a replica that
// needs none (Options.Leased unset), 0 once it has run out.
func (r *Replica) LeaseLeft(nowMs int64) int64 {
	if !r.opts.Leased {
		return -1
	}
	return max(0, r.leaseUntil-nowMs)
}

// leaseErr is ErrNoLease when the replica needs a lease and holds none at
// nowMs.
func (r *Replica) leaseErr(nowMs int64) error {
	if r.LeaseLeft(nowMs) == 0 {
		return ErrNoLease
	}
	return nil
}

// isHeadRole reports whether a replica in role sequences: the head, or a
// single node.
func isHeadRole(role api.Role) bool { return role == api.Role_HEAD || role == api.Role_SINGLE }

func (r *Replica) isHead() bool    { return isHeadRole(r.role) }
func (r *Replica) isTail() bool    { return r.role == api.Role_TAIL || r.role == api.Role_SINGLE }
func (r *Replica) isRemoved() bool { return r.role == api.Role_REMOVED }

func (r *Replica) logger() *slog.Logger {
	return r.log.With("node", r.id, "epoch", r.Epoch(), "role", r.role.String())
}

// ---------------------------------------------------------------------------
// Client requests.

// Propose submits a bid or an open at the head; nowMs is the head's clock.
// The reply comes out of Ready once the update is committed (or at once for
// a request that is invalid, or a node that is not the head, or one
// without the lease it needs).
func (r *Replica) Propose(h Handle, cmd *api.Command, nowMs int64) {
	if !r.isHead() {
		r.replies = append(r.replies, Reply{Handle: h, Err: r.notHeadErr()})
		return
	}
	if err := r.leaseErr(nowMs); err != nil {
		r.replies = append(r.replies, Reply{Handle: h, Err: err})
		return
	}
	if !r.caughtUp {
		// A head that may lack committed updates must not build on them.
		r.replies = append(r.replies, Reply{Handle: h, Err: ErrNotReady})
		return
	}
	switch op := cmd.GetOp().(type) {
	case *api.Command_Bid:
		if err := auction.ValidateBid(op.Bid); err != nil {
			r.rejectInvalid(h, op.Bid.GetAuction(), op.Bid.GetAmount(), err)
			return
		}
	case *api.Command_Open:
		if err := auction.ValidateOpen(op.Open); err != nil {
			r.rejectInvalid(h, op.Open.GetAuction(), 0, err)
			return
		}
	default:
		r.rejectInvalid(h, "", 0, fmt.Errorf("%w: a client may only bid or open", auction.ErrInvalidOpen))
		return
	}
	if prev, ok := r.state.Precheck(cmd); ok {
		if prev.Duplicate {
			// A retry: answer with the original outcome once it is committed.
			r.wait(prev.Seq, h, prev)
		} else {
			// Refused by the dedup rules (a reused id, an acknowledged or
			// expired request): nothing to sequence.
			r.replies = append(r.replies, Reply{Handle: h, Result: prev})
		}
		return
	}
	if r.proposeRetired(h, cmd) {
		return
	}
	if bid := cmd.GetBid(); bid != nil {
		if _, ok := r.state.Get(bid.Auction); !ok {
			// The head's state and archive hold every open ever
			// sequenced, so the auction exists nowhere: answer now,
			// sequence nothing.
			r.replies = append(r.replies, Reply{Handle: h, Result: auction.Result{
				Outcome: api.Outcome_EXCEPTION, Reason: api.Reason_UNKNOWN_AUCTION, Auction: bid.Auction,
				Amount: bid.Amount, Detail: fmt.Sprintf("no auction %q", bid.Auction)}})
			return
		}
	}
	if bid := cmd.GetBid(); bid != nil && r.state.IsDue(bid.Auction, nowMs) {
		r.sequence(&api.Command{Op: &api.Command_Close{Close: &api.CloseAuction{Auction: bid.Auction}}}, nowMs)
	}
	res := r.sequence(cmd, nowMs)
	r.wait(res.Seq, h, res)
}

func (r *Replica) notHeadErr() error {
	switch {
	case r.isRemoved():
		return ErrRemoved
	case r.cfg == nil:
		return ErrNoConfig
	}
	return ErrNotHead
}

func (r *Replica) rejectInvalid(h Handle, auctionID string, amount int64, err error) {
	r.replies = append(r.replies, Reply{Handle: h, Result: auction.Result{
		Outcome: api.Outcome_EXCEPTION, Reason: auction.ReasonOf(err), Detail: err.Error(),
		Auction: auctionID, Amount: amount}})
}

// sequence stamps, applies and queues a new update at the head.
func (r *Replica) sequence(cmd *api.Command, nowMs int64) auction.Result {
	u := &api.Update{Seq: r.Applied() + 1, Epoch: r.Epoch(), TimeMs: max(nowMs, r.state.TimeMs()), Command: cmd}
	return r.apply(u)
}

// wait parks a client until seq is committed (or answers at once).
func (r *Replica) wait(seq uint64, h Handle, res auction.Result) {
	if seq <= r.answerable() {
		r.replies = append(r.replies, Reply{Handle: h, Result: res})
		return
	}
	w := waiter{seq: seq, handle: h, result: res}
	i := len(r.waiters)
	r.waiters = append(r.waiters, w)
	for i > 0 && r.waiters[i-1].seq > seq { // retries may wait on older updates
		r.waiters[i] = r.waiters[i-1]
		i--
	}
	r.waiters[i] = w
}

// answerable is the last seq whose clients may hear of it: committed (on
// the disk of every node downstream, and applied by the tail) and on this
// node's disk too.
func (r *Replica) answerable() uint64 { return min(r.committed, r.durable) }

// release answers every waiter whose update is answerable.
func (r *Replica) release() {
	n := 0
	for n < len(r.waiters) && r.waiters[n].seq <= r.answerable() {
		w := r.waiters[n]
		r.replies = append(r.replies, Reply{Handle: w.handle, Result: w.result})
		n++
	}
	if n > 0 {
		r.waiters = append(r.waiters[:0], r.waiters[n:]...)
	}
}

// Abandon forgets a request whose client stopped waiting: no reply for h
// will come out of Ready. The update itself, if sequenced, still commits.
func (r *Replica) Abandon(h Handle) {
	for i, w := range r.waiters {
		if w.handle == h {
			r.waiters = append(r.waiters[:i], r.waiters[i+1:]...)
			return
		}
	}
}

// failWaiters answers every waiting client with err.
func (r *Replica) failWaiters(err error) {
	for _, w := range r.waiters {
		r.replies = append(r.replies, Reply{Handle: w.handle, Err: err})
	}
	r.waiters = r.waiters[:0]
}

// Read returns an auction's committed state at nowMs, the tail's clock;
// only a readable tail that holds the lease it needs serves it.
func (r *Replica) Read(id string, nowMs int64) (*api.AuctionInfo, error) {
	if err := r.readErr(nowMs); err != nil {
		return nil, err
	}
	a, ok := r.state.Get(id)
	if !ok {
		info, ok, err := r.archived(id)
		switch {
		case err != nil:
			return nil, fmt.Errorf("%w: reading the archive: %v", ErrUnavailable, err)
		case !ok:
			return nil, auction.ErrUnknownAuction
		}
		return info, nil
	}
	return a.Info(), nil
}

// List returns every auction's committed state at nowMs, like Read.
func (r *Replica) List(nowMs int64) ([]*api.AuctionInfo, error) {
	if err := r.readErr(nowMs); err != nil {
		return nil, err
	}
	return r.state.List(), nil
}

// ServeErr says why the replica may not serve reads at nowMs (nil: it
// may): not a caught-up tail, or no lease.
func (r *Replica) ServeErr(nowMs int64) error { return r.readErr(nowMs) }

func (r *Replica) readErr(nowMs int64) error {
	switch {
	case r.isRemoved():
		return ErrRemoved
	case r.cfg == nil:
		return ErrNoConfig
	case !r.isTail():
		return ErrNotTail
	case !r.caughtUp:
		return ErrNotReady
	}
	return r.leaseErr(nowMs - r.readLeaseOverrunMs)
}

// ---------------------------------------------------------------------------
// Applying updates and the Sent list.

// apply applies the next update, records it for downstream peers and, at
// the tail, commits it.
func (r *Replica) apply(u *api.Update) auction.Result {
	res, err := r.state.Apply(u)
	if err != nil {
		// Callers check the sequence; reaching this is a protocol bug.
		panic(fmt.Sprintf("chain %s: %v", r.id, err))
	}
	r.sent = append(r.sent, u)
	if !r.opts.AsyncDurable {
		r.durable = u.Seq
	}
	for _, info := range res.Retired {
		r.retiring[info.Auction] = info
	}
	ap := Applied{Update: u, Result: res, Committed: r.isTail()}
	if res.Closed || (res.Outcome == api.Outcome_SUCCESS && u.Command.GetBid() != nil && !res.Duplicate) {
		if a, ok := r.state.Get(res.Auction); ok {
			ap.Info = a.Info()
		}
	}
	r.out = append(r.out, ap)
	if r.isTail() {
		r.commit(r.Applied())
	}
	return res
}

// commit raises the committed sequence number and answers waiting clients.
func (r *Replica) commit(seq uint64) {
	seq = min(seq, r.Applied())
	if seq <= r.committed {
		return
	}
	r.committed = seq
	r.ackDirty = r.upstream != ""
	r.release()
	r.trimSent()
}

func (r *Replica) sentStart() uint64 {
	if len(r.sent) == 0 {
		return r.Applied() + 1
	}
	return r.sent[0].Seq
}

// trimSent drops Sent entries that no downstream peer can still need: the
// successor needs nothing committed; a learner needs what it has not acked.
func (r *Replica) trimSent() {
	keepAfter := min(r.Applied(), r.retainAfter)
	for _, l := range r.down {
		switch {
		case !l.learner:
			// The successor may be replaced by its own successor, which
			// is only known to hold what is committed.
			keepAfter = min(keepAfter, r.committed, l.holds)
		case l.ready:
			// A learner that has not said Hello gets a snapshot when it does.
			keepAfter = min(keepAfter, l.holds)
		}
	}
	n := 0
	for n < len(r.sent) && r.sent[n].Seq <= keepAfter {
		n++
	}
	if n > 0 {
		r.baseEpoch, r.baseKnown = r.sent[n-1].GetEpoch(), true
	}
	if n == len(r.sent) {
		// IMPORTANT: never reuse the array: messages in flight alias it.
		r.sent = nil
	} else if n > 0 {
		r.sent = r.sent[n:]
	}
}

func (r *Replica) findDown(id string) *link {
	for _, l := range r.down {
		if l.id == id {
			return l
		}
	}
	return nil
}

// ---------------------------------------------------------------------------
// Messages between replicas.

func (r *Replica) send(to string, m *api.ChainMessage) {
	m.Epoch, m.From, m.To = r.Epoch(), r.id, to
	r.msgs = append(r.msgs, m)
}

// Step processes one message from another replica. Messages from another
// epoch, or from a node that is not this replica's neighbour in the
// current epoch, are dropped: a removed (zombie) node cannot get anything
// applied or acknowledged. So are malformed messages (CheckMessage), and
// messages to another node or acknowledging more than this replica has
// applied, with a warning: they change nothing.
func (r *Replica) Step(m *api.ChainMessage) {
	if r.cfg == nil || r.isRemoved() || m.GetEpoch() != r.Epoch() {
		return
	}
	if err := r.checkStep(m); err != nil {
		r.logger().Warn("replication message dropped", "from", m.GetFrom(), "err", err)
		return
	}
	switch body := m.GetBody().(type) {
	case *api.ChainMessage_Forward:
		if m.From == r.upstream && r.upstream != "" {
			r.stepForward(body.Forward)
		}
	case *api.ChainMessage_Ack:
		r.stepAck(m.From, body.Ack.GetSeq())
	case *api.ChainMessage_Hello:
		if l := r.findDown(m.From); l != nil {
			r.stepHello(l, body.Hello)
		}
	case *api.ChainMessage_SnapshotAck:
		if l := r.findDown(m.From); l != nil {
			r.stepSnapshotAck(l, body.SnapshotAck)
		}
	}
}

// checkStep returns why m, of the current epoch, must be dropped: it is
// malformed (CheckMessage), addressed to another node, or acknowledges
// updates this replica has not applied.
func (r *Replica) checkStep(m *api.ChainMessage) error {
	if err := CheckMessage(m); err != nil {
		return err
	}
	if m.GetTo() != r.id {
		return fmt.Errorf("%w: addressed to %q", ErrBadMessage, m.GetTo())
	}
	if a := m.GetAck(); a != nil && a.GetSeq() > r.Applied() {
		return fmt.Errorf("%w: ack of %d, above the %d applied here", ErrBadMessage, a.GetSeq(), r.Applied())
	}
	return nil
}

// stepForward takes a Forward from the predecessor: a middle node, the
// tail, or a joining node (whose predecessor is the tail).
func (r *Replica) stepForward(f *api.Forward) {
	switch r.role {
	case api.Role_JOINING:
		r.stepForwardJoiner(f)
	case api.Role_TAIL:
		r.stepForwardTail(f)
	default:
		r.stepForwardMiddle(f)
	}
}

// stepForwardMiddle is what a middle node does with a Forward: it applies
// the updates and learns from its predecessor what is committed.
func (r *Replica) stepForwardMiddle(f *api.Forward) {
	if !r.applyForward(f) {
		return
	}
	// Everything the predecessor knows committed that we hold is committed.
	r.commit(min(f.GetPredCommitted(), r.Applied()))
	r.catchUp(f)
}

// stepForwardTail is what the tail does with a Forward: it applies the
// updates, and everything it holds is committed.
func (r *Replica) stepForwardTail(f *api.Forward) {
	if !r.applyForward(f) {
		return
	}
	r.commit(r.Applied())
	r.catchUp(f)
}

// stepForwardJoiner is what a joining node does with a Forward: it applies
// the updates and owes the tail an ack of what it holds. It is not in the
// chain: it commits nothing.
func (r *Replica) stepForwardJoiner(f *api.Forward) {
	if !r.applyForward(f) {
		return
	}
	r.ackDirty = r.ackDirty || f.GetHandshake() || len(f.GetUpdates()) > 0
}

// applyForward installs a Forward's snapshot, if any, and applies its
// updates in sequence. It reports false when it stopped short: a snapshot
// refused, or a gap in the sequence (then it says Hello again).
func (r *Replica) applyForward(f *api.Forward) bool {
	if f.GetHandshake() || f.GetChunk() != nil {
		if c := f.GetChunk(); c != nil && !r.stepChunk(c, f.GetHandshake()) {
			return false // more chunks to come (or a transfer dropped)
		}
		if f.GetChunk() == nil {
			r.snapIn = nil // answered without a snapshot
		}
		r.upEstablished = true
	}
	for _, u := range f.GetUpdates() {
		switch {
		case u.GetSeq() <= r.Applied():
			continue // a resend of something we hold
		case u.GetSeq() == r.Applied()+1:
			r.apply(u)
		default:
			// A gap: messages were lost on a broken link. Ask again, once;
			// Tick repeats the Hello if it goes unanswered.
			if r.upEstablished {
				r.logger().Warn("gap in update stream", "applied", r.Applied(), "got", u.GetSeq(), "from", r.upstream)
				r.upEstablished = false
				r.sendHello()
			}
			return false
		}
	}
	return true
}

// catchUp marks a chain member caught up once it holds everything its
// caught-up predecessor had applied when it sent f. The predecessor's
// committed number is not enough: a tail of an earlier epoch may have
// committed (and served reads of) updates alone, after the configuration
// that appended its successor, and been removed before word of those
// commits came back up the chain; the predecessor holds those updates
// (prefix order), not the knowledge that they committed.
func (r *Replica) catchUp(f *api.Forward) {
	if !r.caughtUp && f.GetPredCaughtUp() && r.Applied() >= max(f.GetPredCommitted(), f.GetPredApplied()) {
		r.caughtUp = true
		r.logger().Info("caught up: holds every committed update", "applied", r.Applied(),
			"serving_reads", r.isTail())
		// Downstream peers that linked before may be waiting for this news.
		for _, l := range r.down {
			if l.ready {
				r.forwardTo(l, &api.Forward{})
			}
		}
	}
}

func (r *Replica) installSnapshot(snap *api.StateSnapshot) bool {
	if snap.GetSeq() < r.Applied() {
		if r.role != api.Role_JOINING {
			r.logger().Error("refusing snapshot older than own state", "snapshot_seq", snap.GetSeq(), "applied", r.Applied())
			return false
		}
		// A joining node's own history is no authority: the tail sends a
		// snapshot when that history is not a prefix of the chain's.
		r.logger().Warn("discarding own history: it is not the chain's", "applied", r.Applied(),
			"snapshot_seq", snap.GetSeq(), "from", r.upstream)
	}
	st, err := auction.Restore(snap)
	if err != nil {
		r.logger().Error("refusing snapshot", "err", err)
		return false
	}
	r.state = st
	r.durable = st.Seq()
	if r.opts.AsyncDurable {
		r.durable = 0 // until the edge has written the snapshot (Persisted)
	}
	r.stateGen, r.stateBase = r.stateGen+1, st.Seq()
	r.sent, r.retainAfter = nil, st.Seq()
	r.baseEpoch, r.baseKnown = st.LastEpoch(), true
	r.committed = min(r.committed, r.Applied())
	// Updates applied before the snapshot, in this Ready, belong to the
	// history it replaces.
	r.out, r.replaced = nil, true
	clear(r.retiring)
	for _, l := range r.down {
		// A transfer of the state replaced starts over with this one.
		l.snap = nil
	}
	r.logger().Info("snapshot installed", "seq", r.Applied(), "auctions", st.Len(), "from", r.upstream)
	return true
}

// stepAck processes an acknowledgement from downstream: from the
// successor (at the head and a middle node), from a learner (at the
// tail), or from the tail straight to the head.
func (r *Replica) stepAck(from string, seq uint64) {
	switch l := r.findDown(from); {
	case l == nil:
		if r.role == api.Role_HEAD && from == r.cfg.Chain[len(r.cfg.Chain)-1].Id {
			r.stepTailAck(seq)
		}
	case l.learner:
		r.stepLearnerAck(l, seq)
	default:
		r.stepSuccessorAck(l, seq)
	}
}

// stepSuccessorAck takes the successor's ack of what it knows committed.
func (r *Replica) stepSuccessorAck(l *link, seq uint64) {
	l.holds = max(l.holds, min(seq, r.Applied()))
	r.commit(seq)
}

// stepLearnerAck takes a joining node's ack of what it holds: the tail
// then keeps only what the node still lacks. It commits nothing.
func (r *Replica) stepLearnerAck(l *link, seq uint64) {
	l.holds = max(l.holds, min(seq, r.Applied()))
	r.trimSent()
}

// stepTailAck takes, at the head, the tail's direct ack: everything the
// tail applied is committed.
func (r *Replica) stepTailAck(seq uint64) {
	r.commit(seq)
}

// stepHello answers a downstream peer's Hello: the generic link handshake.
func (r *Replica) stepHello(l *link, h *api.Hello) {
	last := h.GetLastSeq()
	epoch, known := r.epochAt(last)
	diverged := last > r.Applied() || (known && epoch != h.GetLastEpoch())
	if diverged && !l.learner {
		r.logger().Error("successor's history is not a prefix of this node's; link refused",
			"peer", l.id, "peer_last", last, "peer_last_epoch", h.GetLastEpoch(), "applied", r.Applied())
		return
	}
	if !l.learner {
		r.commit(h.GetCommitted())
	}
	l.holds = last
	l.ready = true
	l.next = last + 1
	l.snap = nil
	fwd := &api.Forward{Handshake: true}
	// A joining node whose last update is not the one this node holds at
	// that seq (a removed head's unforwarded bids, say) starts over from
	// a snapshot; so does one that needs updates no longer retained.
	snapshot := l.next < r.sentStart() || (l.learner && (diverged || !known))
	if snapshot {
		l.holds = 0
	}
	if diverged {
		r.logger().Warn("joining node's history diverges from the chain's; it gets a snapshot",
			"peer", l.id, "peer_last", last, "peer_last_epoch", h.GetLastEpoch(), "applied", r.Applied())
	}
	if snapshot {
		r.startSnapshot(l)
	}
	r.logger().Info("link handshake", "peer", l.id, "peer_last", last,
		"resend", r.Applied()-l.next+1, "snapshot", snapshot)
	r.forwardTo(l, fwd)
	r.trimSent()
}

// forwardTo sends the updates the peer has not been sent yet, in batches,
// the first of which is first (a handshake reply, or nil for a new one).
func (r *Replica) forwardTo(l *link, first *api.Forward) {
	for l.snap != nil || l.next < r.sentStart() {
		if l.snap == nil {
			// Entries the peer needs are gone: restart it with a snapshot.
			if r.startSnapshot(l); l.snap == nil {
				return // none could be taken: the peer asks again
			}
			first = &api.Forward{Handshake: true}
		}
		r.sendChunks(l, first)
		if l.snap != nil {
			return // updates follow the last chunk
		}
		first = nil
	}
	start := r.sentStart()
	for first != nil || l.next <= r.Applied() {
		f := first
		if f == nil {
			f = &api.Forward{}
		}
		first = nil
		if l.next <= r.Applied() {
			from := int(l.next - start)
			to := min(from+r.opts.MaxBatch, len(r.sent))
			f.Updates = r.sent[from:to:to]
			l.next = r.sent[to-1].Seq + 1
		}
		r.sendForward(l, f)
	}
}

// sendForward sends f to l with this replica's progress.
func (r *Replica) sendForward(l *link, f *api.Forward) {
	f.PredCommitted, f.PredCaughtUp, f.PredApplied = r.committed, r.caughtUp, r.Applied()
	r.send(l.id, &api.ChainMessage{Body: &api.ChainMessage_Forward{Forward: f}})
}

func (r *Replica) sendHello() {
	r.lastHelloTick = r.ticks
	r.send(r.upstream, &api.ChainMessage{Body: &api.ChainMessage_Hello{Hello: &api.Hello{
		LastSeq: r.Applied(), Committed: min(r.committed, r.durable), LastEpoch: r.state.LastEpoch()}}})
}

// PeerDown tells the replica that the link to a peer broke, so messages in
// either direction may have been lost. A link to the predecessor is opened
// again with a Hello; a downstream peer does the same from its side.
func (r *Replica) PeerDown(peer string) {
	if peer == r.upstream && r.upstream != "" && !r.isRemoved() {
		r.upEstablished = false
		r.snapIn = nil // chunks may be lost: the transfer starts over
		r.sendHello()
	}
	if l := r.findDown(peer); l != nil && l.snap != nil {
		// Chunks may be lost, and no update may follow a snapshot the
		// peer lacks: nothing more goes to it until its next Hello.
		l.snap, l.ready = nil, false
	}
}

// Tick advances time: it repeats unanswered Hellos and, at a head that
// holds the lease it needs, sequences the close of auctions whose closing
// time has passed, and a Trim when the state is past Options.Limits.
func (r *Replica) Tick(nowMs int64) {
	r.ticks++
	wait := uint64(r.opts.HelloRetryTicks)
	if r.snapIn != nil {
		wait *= snapshotPatience
	}
	if r.upstream != "" && !r.upEstablished && !r.isRemoved() && r.ticks-r.lastHelloTick >= wait {
		r.sendHello()
	}
	if r.isHead() && r.caughtUp && r.leaseErr(nowMs) == nil {
		for _, id := range r.state.Due(nowMs) {
			r.sequence(&api.Command{Op: &api.Command_Close{Close: &api.CloseAuction{Auction: id}}}, nowMs)
		}
		if r.state.TrimDue(r.opts.Limits, nowMs) {
			r.sequence(auction.TrimCommand(r.opts.Limits), nowMs)
		}
	}
}

// HasReady reports whether Ready would return anything.
func (r *Replica) HasReady() bool {
	if len(r.msgs) > 0 || len(r.replies) > 0 || len(r.out) > 0 || len(r.archiveOps) > 0 ||
		(r.ackDirty && r.upstream != "") {
		return true
	}
	for _, l := range r.down {
		if r.sendable(l) {
			return true
		}
	}
	return false
}

// Ready returns, and forgets, everything produced since the last call:
// forwards of newly applied updates (one batch per peer), a coalesced ack
// upstream, client replies and applied updates.
func (r *Replica) Ready() Ready {
	for _, l := range r.down {
		if r.sendable(l) {
			r.forwardTo(l, nil)
		}
	}
	if r.ackDirty && r.upstream != "" {
		r.ackUpstream()
	}
	r.ackDirty = false
	for i := range r.replies {
		r.replies[i].Epoch = r.Epoch()
	}
	rd := Ready{Messages: r.msgs, Replies: r.replies, Applied: r.out, Archive: r.archiveOps, StateReplaced: r.replaced}
	r.msgs, r.replies, r.out, r.archiveOps, r.replaced = nil, nil, nil, nil, false
	clear(r.retiring)
	return rd
}

// ackUpstream sends the ack that is due to the predecessor.
func (r *Replica) ackUpstream() {
	switch r.role {
	case api.Role_JOINING:
		// Not in the chain: it acks what it holds, not what is committed.
		r.sendAck(r.upstream, min(r.Applied(), r.durable))
	case api.Role_TAIL:
		r.ackUpstreamTail()
	default: // a middle node
		r.sendAck(r.upstream, min(r.committed, r.durable))
	}
}

// ackUpstreamTail is the tail's ack: what it committed goes upstream and,
// as a shortcut for the head's clients, straight to the head as well: one
// hop instead of one per middle node. The chained ack still trims every
// Sent list.
//
// With Options.AsyncDurable there is no shortcut: an ack then also says
// that every node it passed through has the updates on disk, which the
// head must know before it answers, and only the chained ack can say so.
func (r *Replica) ackUpstreamTail() {
	seq := min(r.committed, r.durable)
	r.sendAck(r.upstream, seq)
	if head := r.cfg.Chain[0].Id; head != r.upstream && !r.opts.AsyncDurable {
		r.sendAck(head, seq)
	}
}

func (r *Replica) sendAck(to string, seq uint64) {
	r.send(to, &api.ChainMessage{Body: &api.ChainMessage_Ack{Ack: &api.Ack{Seq: seq}}})
}

// ---------------------------------------------------------------------------
// Reconfiguration.

// Reconfigure installs a configuration with a higher epoch. The replica
// takes its role from it, drops every link and opens the one to its new
// predecessor with a Hello.
func (r *Replica) Reconfigure(cfg *api.ChainConfig) error {
	if err := ValidateConfig(cfg); err != nil {
		return err
	}
	if cfg.Epoch <= r.Epoch() {
		return fmt.Errorf("%w: have epoch %d, got %d", ErrStaleEpoch, r.Epoch(), cfg.Epoch)
	}
	pos, joining := position(cfg, r.id)
	if r.isRemoved() && !joining {
		r.cfg = cfg
		return ErrRemoved
	}
	oldRole, oldCfg, oldDown := r.role, r.cfg, r.down
	r.resetCaughtUp(oldRole, pos, joining)
	r.cfg, r.down, r.upEstablished = cfg, nil, false
	switch {
	case joining:
		r.becomeJoiner(oldRole)
	case pos < 0:
		r.becomeRemoved()
		return nil
	default:
		r.becomeMember(pos, oldCfg, oldDown)
	}
	if !r.isHead() && isHeadRole(oldRole) {
		r.failWaiters(ErrHeadChanged)
	}
	r.trimSent()
	n := len(cfg.Chain)
	r.logger().Info("configuration installed", "previous_role", oldRole.String(),
		"head", cfg.Chain[0].Id, "tail", cfg.Chain[n-1].Id, "length", n,
		"joining", len(cfg.Joining), "predecessor", r.upstream, "applied", r.Applied())
	if r.upstream != "" {
		r.sendHello()
	}
	return nil
}

// resetCaughtUp decides, before a new configuration is installed, whether
// the replica may count itself caught up in it; a chain member that stays
// in the chain keeps what it had.
func (r *Replica) resetCaughtUp(oldRole api.Role, pos int, joining bool) {
	switch {
	case joining || oldRole == api.Role_JOINING:
		// Joining, or just appended: caught up only after the handshake.
		r.caughtUp = false
	case oldRole == api.Role_ROLE_UNSPECIFIED:
		// A first configuration: the head defines the history; every other
		// member catches up from its predecessor, even when all are empty.
		// A head restarted with an incomplete history (a torn log, or one
		// written without sync) may lack what it forwarded: it refuses to
		// sequence until reconfigured.
		r.caughtUp = pos == 0 && !r.incomplete
		if pos == 0 && r.incomplete {
			r.logger().Warn("restarted head with an incomplete history: refusing to sequence", "applied", r.Applied())
		}
	}
}

// becomeJoiner makes the replica a joining node, linked to the tail.
func (r *Replica) becomeJoiner(oldRole api.Role) {
	if oldRole != api.Role_JOINING {
		// A (re)joining node keeps its history: its Hello tells the tail
		// the last update it holds, and the tail resends what follows or,
		// when that history diverged from the chain's (it was the head
		// and sequenced bids it never forwarded), sends a snapshot.
		r.committed = 0
	}
	r.role = api.Role_JOINING
	r.upstream = r.cfg.Chain[len(r.cfg.Chain)-1].Id
}

// becomeRemoved takes the replica out of the chain: it has no neighbour,
// no lease and no waiting client left.
func (r *Replica) becomeRemoved() {
	r.role, r.upstream, r.sent = api.Role_REMOVED, "", nil
	// The log starts after what is applied: its base is the last update.
	r.baseEpoch, r.baseKnown = r.state.LastEpoch(), true
	r.leaseUntil = 0 // held for a position the node no longer has
	r.failWaiters(ErrRemoved)
	chain := r.cfg.Chain
	r.logger().Warn("removed from the chain", "head", chain[0].Id, "tail", chain[len(chain)-1].Id)
}

// becomeMember gives the replica its place at pos in the chain: its
// predecessor (none at the head) and its successor (none at the tail).
func (r *Replica) becomeMember(pos int, oldCfg *api.ChainConfig, oldDown []*link) {
	chain := r.cfg.Chain
	r.role = roleAt(pos, len(chain))
	r.upstream = ""
	if pos > 0 {
		r.upstream = chain[pos-1].Id
	}
	if pos < len(chain)-1 {
		r.down = append(r.down, r.newLink(chain[pos+1].Id, false, oldCfg, oldDown))
	}
	if r.isTail() {
		r.becomeTail(oldCfg, oldDown)
	}
}

// becomeTail links the tail (or a single node) to the joining nodes, which
// learn from it, and commits everything it holds: at the tail, applied is
// committed.
func (r *Replica) becomeTail(oldCfg *api.ChainConfig, oldDown []*link) {
	for _, m := range r.cfg.Joining {
		r.down = append(r.down, r.newLink(m.Id, true, oldCfg, oldDown))
	}
	r.commit(r.Applied())
}

// newLink makes the link to a downstream peer for a new epoch. What the
// peer is known to hold carries over: a former learner keeps its acked
// position, a former chain member holds at least everything committed.
func (r *Replica) newLink(id string, learner bool, oldCfg *api.ChainConfig, oldDown []*link) *link {
	l := &link{id: id, learner: learner}
	for _, o := range oldDown {
		if o.id == id {
			l.holds = o.holds
			if !o.learner {
				l.holds = max(l.holds, r.committed)
			}
			return l
		}
	}
	if oldCfg != nil {
		if pos, _ := position(oldCfg, id); pos >= 0 {
			l.holds = r.committed
		}
	}
	return l
}

// position finds id in cfg: its index in the chain (-1 if absent) and
// whether it is joining.
func position(cfg *api.ChainConfig, id string) (int, bool) {
	for i, m := range cfg.Chain {
		if m.Id == id {
			return i, false
		}
	}
	for _, m := range cfg.Joining {
		if m.Id == id {
			return -1, true
		}
	}
	return -1, false
}

func roleAt(pos, n int) api.Role {
	switch {
	case n == 1:
		return api.Role_SINGLE
	case pos == 0:
		return api.Role_HEAD
	case pos == n-1:
		return api.Role_TAIL
	}
	return api.Role_MIDDLE
}

// ValidateConfig checks a configuration: a positive epoch, a non-empty
// chain, and every member with a unique non-empty id.
func ValidateConfig(cfg *api.ChainConfig) error {
	if cfg == nil || cfg.Epoch == 0 || len(cfg.Chain) == 0 {
		return fmt.Errorf("%w: needs an epoch above 0 and at least one chain member", ErrBadConfig)
	}
	seen := map[string]bool{}
	for _, m := range append(append([]*api.Member{}, cfg.Chain...), cfg.Joining...) {
		if m.GetId() == "" || seen[m.Id] {
			return fmt.Errorf("%w: empty or duplicate member id %q", ErrBadConfig, m.GetId())
		}
		seen[m.Id] = true
	}
	return nil
}
