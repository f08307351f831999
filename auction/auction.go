// Package auction is gavel's replicated state machine: many auctions, bids
// with exactly-once outcomes, and replicated closes.
//
// State is deterministic. It reads no clock, draws no random number and does
// no I/O: the only inputs are sequenced updates (api.Update), whose time was
// stamped by the chain head. Every replica that applies the same updates in
// the same order reaches the same state and computes the same outcomes, which
// is what lets the chain answer a client from the head's evaluation while the
// tail's copy decides reads.
//
// State is not safe for concurrent use; the chain replica that owns it calls
// it from one goroutine.
package auction

import (
	"cmp"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sort"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
)

// Limits on client-supplied values. Amounts are integers in minor units.
const (
	// MaxAmount is the largest amount a bid, price or increment may have;
	// keeping amounts far below MaxInt64 means no sum can overflow.
	MaxAmount = int64(1_000_000_000_000_000)
	// MaxIDLen bounds auction ids, bidder names and request ids (bytes).
	MaxIDLen = 128
	// MaxItemLen bounds an auction's item text (bytes).
	MaxItemLen = 1024
	// openClient is the request-id table under which opens without a
	// client session are deduplicated.
	openClient = "\x00open"
)

// DedupParams are the parameters that decide whether a request is a
// duplicate. They are part of the replicated state: New starts from
// DefaultDedup, every snapshot records them and Restore adopts the
// snapshot's, so that a node's own settings never decide a duplicate.
type DedupParams struct {
	// RequestWindow is how many request ids are remembered per bidder
	// (and for opens without a client session), oldest forgotten first.
	RequestWindow int
	// MaxPending is how many unacknowledged outcomes one client session
	// may hold; a request beyond it is refused with TOO_MANY_PENDING.
	MaxPending int
	// ClientTTLMs is how long (in update time) a client session may be
	// idle before it is forgotten.
	ClientTTLMs int64
}

// DefaultDedup are the dedup parameters of a new state.
var DefaultDedup = DedupParams{RequestWindow: 256, MaxPending: 65536, ClientTTLMs: 3600_000}

func (p DedupParams) valid() bool {
	return p.RequestWindow > 0 && p.MaxPending > 0 && p.ClientTTLMs > 0
}

// Validation errors: a request that fails one of them is refused before it
// is sequenced, and changes nothing.
var (
	// ErrInvalidAmount is returned when an amount is zero, negative or above MaxAmount.
	ErrInvalidAmount = errors.New("amount must be a positive integer of at most 10^15 minor units")
	// ErrInvalidBidder is returned when a bidder name is empty, too long or not UTF-8.
	ErrInvalidBidder = errors.New("bidder must be a non-empty UTF-8 name of at most 128 bytes")
	// ErrInvalidAuction is returned when an auction id is empty, too long or not UTF-8.
	ErrInvalidAuction = errors.New("auction id must be non-empty UTF-8 of at most 128 bytes")
	// ErrInvalidRequestID is returned when a request id is too long or not UTF-8.
	ErrInvalidRequestID = errors.New("request id must be UTF-8 of at most 128 bytes")
	// ErrInvalidSession is returned when a request's client session fields are malformed.
	ErrInvalidSession = errors.New("client session must be UTF-8 of at most 128 bytes, with client_seq >= 1 and acked_below <= client_seq")
	// ErrInvalidOpen is returned when an open request has a bad duration, price, increment or item.
	ErrInvalidOpen = errors.New("invalid auction parameters")
	// ErrBadSequence is returned by Apply when an update's sequence number does not follow the state's.
	ErrBadSequence = errors.New("update out of sequence")
	// ErrBadSnapshot is returned by Restore for a snapshot that is not self-consistent.
	ErrBadSnapshot = errors.New("malformed state snapshot")
	// ErrUnknownAuction is returned by reads of an auction id that does not exist.
	ErrUnknownAuction = errors.New("unknown auction")
)

// Result is the outcome of applying one update.
type Result struct {
	Outcome api.Outcome
	Reason  api.Reason
	Detail  string
	// Seq is the sequence number of the update that decided the outcome
	// (for a duplicate request: the original update's).
	Seq     uint64
	Auction string
	Amount  int64
	// Duplicate is set when the update repeated an already-decided request.
	Duplicate bool
	// Previous is the bidder who led before a successful bid ("" if none).
	Previous string
	// Extended is set when a successful bid pushed the closing time back.
	Extended bool
	// Closed is set when the update closed the auction.
	Closed bool
	// Retired are the final results of the auctions a Trim retired, which
	// the edge keeps in its archive; Forgotten counts the request ids it
	// forgot.
	Retired   []*api.AuctionInfo
	Forgotten int
}

// Auction is one auction's replicated state.
type Auction struct {
	ID            string
	Item          string
	Closed        bool
	Highest       int64
	Bidder        string // highest bidder; the winner once closed
	OpenedAtMs    int64
	ClosesAtMs    int64
	MinIncrement  int64
	StartingPrice int64
	SoftCloseMs   int64
	Version       uint64 // seq of the last update applied to this auction
	Bids          uint64 // bids sequenced, any outcome
	ClosedAtMs    int64  // update time of the close (0 while open)
	bidders       map[string]struct{}
	closedSeq     uint64 // seq of the close (0 while open)
}

// Info returns the public view of the auction.
func (a *Auction) Info() *api.AuctionInfo {
	st := api.AuctionState_OPEN
	if a.Closed {
		st = api.AuctionState_CLOSED_STATE
	}
	return &api.AuctionInfo{
		Auction: a.ID, Item: a.Item, State: st, Highest: a.Highest, Bidder: a.Bidder,
		ClosesAtMs: a.ClosesAtMs, MinIncrement: a.MinIncrement, StartingPrice: a.StartingPrice,
		SoftCloseMs: a.SoftCloseMs, Version: a.Version, Bids: a.Bids,
		Bidders: uint64(len(a.bidders)), OpenedAtMs: a.OpenedAtMs, ClosedAtMs: a.ClosedAtMs,
	}
}

// minNext is the smallest amount that can succeed next.
func (a *Auction) minNext() int64 {
	if a.Bidder == "" {
		return max(a.StartingPrice, 1)
	}
	return a.Highest + a.MinIncrement // both <= MaxAmount: no overflow
}

// session remembers a bidder's latest request ids' outcomes, oldest first.
type session struct {
	byID  map[string]*api.DedupEntry
	order []string
}

// clientSession is one client session's unacknowledged outcomes (RIFL):
// the entry of every remembered request with client_seq >= ackedBelow.
type clientSession struct {
	ackedBelow uint64
	lastMs     int64
	entries    []*api.DedupEntry // by ClientSeq ascending
}

// find returns the index of the first entry with ClientSeq >= seq.
func (cs *clientSession) find(seq uint64) int {
	i, _ := slices.BinarySearchFunc(cs.entries, seq, func(e *api.DedupEntry, seq uint64) int {
		return cmp.Compare(e.ClientSeq, seq)
	})
	return i
}

// get returns the entry of client_seq seq.
func (cs *clientSession) get(seq uint64) (*api.DedupEntry, bool) {
	if i := cs.find(seq); i < len(cs.entries) && cs.entries[i].ClientSeq == seq {
		return cs.entries[i], true
	}
	return nil, false
}

// put adds an entry (client seqs mostly arrive in order: usually an append).
func (cs *clientSession) put(e *api.DedupEntry) {
	cs.entries = slices.Insert(cs.entries, cs.find(e.ClientSeq), e)
}

// State is the whole replicated auction state.
type State struct {
	seq uint64
	// lastEpoch is the epoch of the update at seq (Update.Epoch).
	lastEpoch uint64
	timeMs    int64
	auctions  map[string]*Auction
	open      map[string]*Auction       // the subset still open, for Due
	sessions  map[string]*session       // request-id tables, by bidder (and openClient)
	clients   map[string]*clientSession // client sessions, by client id
	dedup     DedupParams
	// nextSweepMs is the update time at which idle client sessions are
	// next looked for and forgotten.
	nextSweepMs int64
	// limits are the bounds the last Trim set (bounds.go).
	limits Limits
	// closed are the closed auctions still in the state, in the order
	// they closed: the next to retire first.
	closed fifo[*Auction]
	// reqs orders the remembered request ids of every table, oldest
	// first (with refs to ids a table's own window dropped since);
	// requestIDs counts the ids remembered.
	reqs       fifo[reqRef]
	requestIDs int
	// retired counts the auctions retired so far.
	retired uint64
}

// New returns an empty state with the DefaultDedup parameters.
func New() *State { return NewWithDedup(DefaultDedup) }

// NewWithDedup returns an empty state with the given dedup parameters
// (DefaultDedup's for any that is not positive).
func NewWithDedup(p DedupParams) *State {
	if p.RequestWindow <= 0 {
		p.RequestWindow = DefaultDedup.RequestWindow
	}
	if p.MaxPending <= 0 {
		p.MaxPending = DefaultDedup.MaxPending
	}
	if p.ClientTTLMs <= 0 {
		p.ClientTTLMs = DefaultDedup.ClientTTLMs
	}
	return &State{
		auctions: map[string]*Auction{},
		open:     map[string]*Auction{},
		sessions: map[string]*session{},
		clients:  map[string]*clientSession{},
		dedup:    p,
	}
}

// Dedup returns the state's dedup parameters.
func (s *State) Dedup() DedupParams { return s.dedup }

// Clients is the number of client sessions the state remembers.
func (s *State) Clients() int { return len(s.clients) }

// Seq is the sequence number of the last applied update.
func (s *State) Seq() uint64 { return s.seq }

// LastEpoch is the epoch in which the update at Seq was sequenced (0 for
// an empty state).
func (s *State) LastEpoch() uint64 { return s.lastEpoch }

// TimeMs is the time stamped on the last applied update.
func (s *State) TimeMs() int64 { return s.timeMs }

// Get returns the auction with the given id.
func (s *State) Get(id string) (*Auction, bool) {
	a, ok := s.auctions[id]
	return a, ok
}

// Len is the number of auctions.
func (s *State) Len() int { return len(s.auctions) }

// List returns every auction's public view, sorted by id.
func (s *State) List() []*api.AuctionInfo {
	out := make([]*api.AuctionInfo, 0, len(s.auctions))
	for _, a := range s.auctions {
		out = append(out, a.Info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Auction < out[j].Auction })
	return out
}

// Due returns the ids of open auctions whose closing time is at or before
// nowMs, sorted, so the head can sequence their close.
func (s *State) Due(nowMs int64) []string {
	var ids []string
	for id, a := range s.open {
		if a.ClosesAtMs <= nowMs {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

// IsDue reports whether the auction is open and its closing time has passed.
func (s *State) IsDue(id string, nowMs int64) bool {
	a, ok := s.open[id]
	return ok && a.ClosesAtMs <= nowMs
}

// request is the identity of a client request for deduplication.
type request struct {
	open       bool
	auction    string
	bidder     string // "" for an open
	amount     int64  // 0 for an open
	requestID  string
	client     string
	clientSeq  uint64
	ackedBelow uint64
}

func bidRequest(b *api.PlaceBid) request {
	return request{auction: b.GetAuction(), bidder: b.GetBidder(), amount: b.GetAmount(), requestID: b.GetRequestId(),
		client: b.GetClient(), clientSeq: b.GetClientSeq(), ackedBelow: b.GetAckedBelow()}
}

func openRequest(o *api.OpenAuction) request {
	return request{open: true, auction: o.GetAuction(), requestID: o.GetRequestId(),
		client: o.GetClient(), clientSeq: o.GetClientSeq(), ackedBelow: o.GetAckedBelow()}
}

// table is the request-id table a request is deduplicated in.
func (q request) table() string {
	if q.open {
		return openClient
	}
	return q.bidder
}

// matches reports whether a remembered entry is for this same request.
func (q request) matches(e *api.DedupEntry) bool {
	return e.Open == q.open && e.Auction == q.auction && e.Bidder == q.bidder && e.Amount == q.amount
}

func duplicate(e *api.DedupEntry) Result {
	return Result{Outcome: e.Outcome, Reason: e.Reason, Seq: e.Seq, Auction: e.Auction,
		Amount: e.Amount, Duplicate: true, Detail: "duplicate request: original outcome"}
}

func refused(q request, reason api.Reason, detail string) Result {
	return Result{Outcome: api.Outcome_EXCEPTION, Reason: reason, Auction: q.auction, Amount: q.amount, Detail: detail}
}

// Precheck decides a bid or open that needs no new update: a duplicate of
// a remembered request (Result.Duplicate, with the original Seq) or a
// request refused by the dedup rules (Seq 0). It changes nothing. Apply
// makes the same decision; the head calls Precheck so that it neither
// sequences a retry nor a request it would refuse.
func (s *State) Precheck(cmd *api.Command) (Result, bool) {
	switch op := cmd.GetOp().(type) {
	case *api.Command_Bid:
		return s.check(bidRequest(op.Bid))
	case *api.Command_Open:
		return s.check(openRequest(op.Open))
	}
	return Result{}, false
}

// check applies the dedup rules to a request, in order:
//  1. its client session remembers its client_seq: the original outcome,
//     or REQUEST_MISMATCH if that seq was another request;
//  2. the client acknowledged it already (client_seq < acked_below): STALE_REQUEST;
//  3. its bidder's request-id table remembers its request id: the
//     original outcome, or REQUEST_MISMATCH;
//  4. its session holds MaxPending outcomes: TOO_MANY_PENDING.
//
// Otherwise the request is new: decided is false. A session unknown to
// the state is a new session: a session is forgotten only after
// ClientTTLMs without a remembered request, and a client retries a
// request for less than that (the client library for half of it).
func (s *State) check(q request) (res Result, decided bool) {
	var cs *clientSession
	if q.client != "" {
		cs = s.clients[q.client]
		if cs != nil {
			if e, ok := cs.get(q.clientSeq); ok {
				if !q.matches(e) {
					return refused(q, api.Reason_REQUEST_MISMATCH, fmt.Sprintf(
						"client_seq %d of session %q was a different request (%s)", q.clientSeq, q.client, describe(e))), true
				}
				return duplicate(e), true
			}
			if q.clientSeq < max(cs.ackedBelow, q.ackedBelow) {
				return refused(q, api.Reason_STALE_REQUEST, fmt.Sprintf(
					"client_seq %d of session %q was acknowledged by the client; its outcome is no longer kept",
					q.clientSeq, q.client)), true
			}
		}
	}
	if q.requestID != "" {
		if sess, ok := s.sessions[q.table()]; ok {
			if e, ok := sess.byID[q.requestID]; ok {
				if !q.matches(e) {
					return refused(q, api.Reason_REQUEST_MISMATCH, fmt.Sprintf(
						"request id %q was used by a different request (%s)", q.requestID, describe(e))), true
				}
				return duplicate(e), true
			}
		}
	}
	if cs != nil {
		if len(cs.entries)-cs.find(q.ackedBelow) >= s.dedup.MaxPending {
			return refused(q, api.Reason_TOO_MANY_PENDING, fmt.Sprintf(
				"client session %q holds %d unacknowledged outcomes, the most kept per session", q.client, s.dedup.MaxPending)), true
		}
	}
	return Result{}, false
}

func describe(e *api.DedupEntry) string {
	if e.Open {
		return fmt.Sprintf("open of %q", e.Auction)
	}
	return fmt.Sprintf("bid of %d on %q by %q", e.Amount, e.Auction, e.Bidder)
}

// acknowledge forgets the outcomes a client has acknowledged receiving.
func (s *State) acknowledge(q request) {
	cs := s.clients[q.client]
	if cs == nil || q.ackedBelow <= cs.ackedBelow {
		return
	}
	cs.ackedBelow = q.ackedBelow
	cs.entries = slices.Delete(cs.entries, 0, cs.find(q.ackedBelow))
}

// sweep forgets the client sessions idle for ClientTTLMs, at most every
// ClientTTLMs/8 of update time.
func (s *State) sweep() {
	if s.timeMs < s.nextSweepMs {
		return
	}
	for id, cs := range s.clients {
		if s.timeMs-cs.lastMs >= s.dedup.ClientTTLMs {
			delete(s.clients, id)
		}
	}
	s.nextSweepMs = s.timeMs + max(s.dedup.ClientTTLMs/8, 1)
}

// decideRequest runs the dedup rules for a request and, for a new one,
// decide; it records the outcome for later retries.
func (s *State) decideRequest(q request, decide func() Result) Result {
	if q.client != "" {
		s.acknowledge(q)
	}
	if r, ok := s.check(q); ok {
		return r
	}
	r := decide()
	s.remember(q, r)
	return r
}

// Lookup returns the recorded outcome of a request id in a bidder's
// request-id table, if the state still remembers it. Opens are looked up
// with bidder "".
func (s *State) Lookup(bidder, requestID string) (Result, bool) {
	if requestID == "" {
		return Result{}, false
	}
	if bidder == "" {
		bidder = openClient
	}
	sess, ok := s.sessions[bidder]
	if !ok {
		return Result{}, false
	}
	e, ok := sess.byID[requestID]
	if !ok {
		return Result{}, false
	}
	return duplicate(e), true
}

// remember records a decided request's outcome in its client session and
// its request-id table.
func (s *State) remember(q request, r Result) {
	e := &api.DedupEntry{RequestId: q.requestID, Seq: r.Seq, Outcome: r.Outcome, Reason: r.Reason,
		Amount: q.amount, Auction: q.auction, Bidder: q.bidder, ClientSeq: q.clientSeq, Open: q.open}
	if q.client != "" {
		cs := s.clients[q.client]
		if cs == nil {
			cs = &clientSession{ackedBelow: q.ackedBelow}
			s.clients[q.client] = cs
		}
		cs.put(e)
		cs.lastMs = s.timeMs
	}
	if q.requestID == "" || (!q.open && q.bidder == "") {
		return
	}
	sess, ok := s.sessions[q.table()]
	if !ok {
		sess = &session{byID: map[string]*api.DedupEntry{}}
		s.sessions[q.table()] = sess
	}
	if len(sess.order) >= s.dedup.RequestWindow {
		delete(sess.byID, sess.order[0])
		sess.order = sess.order[1:]
		s.requestIDs--
	}
	sess.byID[q.requestID] = e
	sess.order = append(sess.order, q.requestID)
	s.noteRequest(q.table(), r.Seq)
}

func validName(s string) bool {
	return s != "" && len(s) <= MaxIDLen && utf8.ValidString(s)
}

// ValidateBid checks a bid without looking at any state.
func ValidateBid(b *api.PlaceBid) error {
	switch {
	case b == nil:
		return ErrInvalidAuction
	case !validName(b.Auction):
		return ErrInvalidAuction
	case !validName(b.Bidder):
		return ErrInvalidBidder
	case b.Amount <= 0 || b.Amount > MaxAmount:
		return ErrInvalidAmount
	case len(b.RequestId) > MaxIDLen || !utf8.ValidString(b.RequestId):
		return ErrInvalidRequestID
	}
	return validSession(b.Client, b.ClientSeq, b.AckedBelow)
}

// validSession checks a request's client session fields.
func validSession(client string, seq, ackedBelow uint64) error {
	if client == "" {
		if seq != 0 || ackedBelow != 0 {
			return ErrInvalidSession
		}
		return nil
	}
	if len(client) > MaxIDLen || !utf8.ValidString(client) || seq == 0 || ackedBelow > seq {
		return ErrInvalidSession
	}
	return nil
}

// ValidateOpen checks an open request without looking at any state.
func ValidateOpen(o *api.OpenAuction) error {
	switch {
	case o == nil:
		return ErrInvalidAuction
	case !validName(o.Auction):
		return ErrInvalidAuction
	case len(o.Item) > MaxItemLen || !utf8.ValidString(o.Item):
		return fmt.Errorf("%w: item must be UTF-8 of at most %d bytes", ErrInvalidOpen, MaxItemLen)
	case o.DurationMs <= 0 && o.ClosesAtMs <= 0:
		return fmt.Errorf("%w: duration must be positive", ErrInvalidOpen)
	case o.DurationMs > 366*24*3600*1000:
		return fmt.Errorf("%w: duration must be at most a year", ErrInvalidOpen)
	case o.MinIncrement < 0 || o.MinIncrement > MaxAmount:
		return fmt.Errorf("%w: min increment must be between 0 and 10^15", ErrInvalidOpen)
	case o.StartingPrice < 0 || o.StartingPrice > MaxAmount:
		return fmt.Errorf("%w: starting price must be between 0 and 10^15", ErrInvalidOpen)
	case o.SoftCloseMs < 0 || o.SoftCloseMs > 24*3600*1000:
		return fmt.Errorf("%w: soft close must be between 0 and 24h", ErrInvalidOpen)
	case len(o.RequestId) > MaxIDLen || !utf8.ValidString(o.RequestId):
		return ErrInvalidRequestID
	}
	return validSession(o.Client, o.ClientSeq, o.AckedBelow)
}

// ReasonOf maps a validation error to the Reason a client sees.
func ReasonOf(err error) api.Reason {
	switch {
	case err == nil:
		return api.Reason_REASON_NONE
	case errors.Is(err, ErrInvalidAmount):
		return api.Reason_INVALID_AMOUNT
	case errors.Is(err, ErrInvalidBidder):
		return api.Reason_INVALID_BIDDER
	default:
		return api.Reason_INVALID_REQUEST
	}
}

// Apply applies the next update and returns its outcome. The update must
// carry sequence number Seq()+1; anything else is refused with
// ErrBadSequence and changes nothing.
func (s *State) Apply(u *api.Update) (Result, error) {
	if u.GetSeq() != s.seq+1 {
		return Result{}, fmt.Errorf("%w: have %d, got %d", ErrBadSequence, s.seq, u.GetSeq())
	}
	s.seq, s.lastEpoch = u.Seq, u.GetEpoch()
	s.timeMs = max(s.timeMs, u.TimeMs)
	s.sweep()
	switch op := u.GetCommand().GetOp().(type) {
	case *api.Command_Bid:
		return s.applyBid(u.Seq, op.Bid), nil
	case *api.Command_Open:
		return s.applyOpen(u.Seq, op.Open), nil
	case *api.Command_Close:
		return s.applyClose(u.Seq, op.Close.GetAuction()), nil
	case *api.Command_Trim:
		return s.applyTrim(u.Seq, op.Trim), nil
	default:
		// An empty command still consumes its sequence number.
		return Result{Outcome: api.Outcome_EXCEPTION, Reason: api.Reason_INVALID_REQUEST,
			Seq: u.Seq, Detail: "empty command"}, nil
	}
}

func exception(seq uint64, b *api.PlaceBid, reason api.Reason, detail string) Result {
	return Result{Outcome: api.Outcome_EXCEPTION, Reason: reason, Detail: detail, Seq: seq,
		Auction: b.GetAuction(), Amount: b.GetAmount()}
}

func (s *State) applyBid(seq uint64, b *api.PlaceBid) Result {
	if err := ValidateBid(b); err != nil {
		return exception(seq, b, ReasonOf(err), err.Error()) // not remembered: nothing to deduplicate
	}
	return s.decideRequest(bidRequest(b), func() Result { return s.decideBid(seq, b) })
}

func (s *State) decideBid(seq uint64, b *api.PlaceBid) Result {
	if err := ValidateBid(b); err != nil {
		return exception(seq, b, ReasonOf(err), err.Error())
	}
	a, ok := s.auctions[b.Auction]
	if !ok {
		return exception(seq, b, api.Reason_UNKNOWN_AUCTION, fmt.Sprintf("no auction %q", b.Auction))
	}
	a.Version = seq
	a.Bids++
	_, known := a.bidders[b.Bidder]
	full := !known && s.limits.MaxBidders > 0 && len(a.bidders) >= s.limits.MaxBidders
	if !known && !full {
		a.bidders[b.Bidder] = struct{}{} // the first bid registers the bidder
	}
	if a.Closed {
		return exception(seq, b, api.Reason_CLOSED, fmt.Sprintf("auction %q is closed", b.Auction))
	}
	if full {
		return exception(seq, b, api.Reason_TOO_MANY_BIDDERS, fmt.Sprintf(
			"auction %q has registered %d bidders, the most one auction takes; %q is not one of them",
			b.Auction, len(a.bidders), b.Bidder))
	}
	if need := a.minNext(); b.Amount < need {
		return Result{Outcome: api.Outcome_FAIL, Reason: api.Reason_TOO_LOW, Seq: seq,
			Auction: b.Auction, Amount: b.Amount,
			Detail: fmt.Sprintf("too low: the next bid must be at least %d", need)}
	}
	r := Result{Outcome: api.Outcome_SUCCESS, Seq: seq, Auction: b.Auction, Amount: b.Amount,
		Previous: a.Bidder, Detail: "highest bid"}
	a.Highest, a.Bidder = b.Amount, b.Bidder
	if a.SoftCloseMs > 0 && a.ClosesAtMs-s.timeMs < a.SoftCloseMs {
		a.ClosesAtMs = s.timeMs + a.SoftCloseMs
		r.Extended = true
	}
	return r
}

func (s *State) applyOpen(seq uint64, o *api.OpenAuction) Result {
	if err := validSession(o.GetClient(), o.GetClientSeq(), o.GetAckedBelow()); err != nil {
		return Result{Outcome: api.Outcome_EXCEPTION, Reason: api.Reason_INVALID_REQUEST, Seq: seq,
			Auction: o.GetAuction(), Detail: err.Error()}
	}
	return s.decideRequest(openRequest(o), func() Result { return s.decideOpen(seq, o) })
}

func (s *State) decideOpen(seq uint64, o *api.OpenAuction) Result {
	r := Result{Outcome: api.Outcome_SUCCESS, Seq: seq, Auction: o.GetAuction(), Detail: "opened"}
	closesAt := o.GetClosesAtMs()
	if closesAt <= 0 {
		closesAt = s.timeMs + o.GetDurationMs()
	}
	if err := ValidateOpen(o); err != nil {
		r.Outcome, r.Reason, r.Detail = api.Outcome_EXCEPTION, api.Reason_INVALID_REQUEST, err.Error()
	} else if _, exists := s.auctions[o.Auction]; exists {
		r.Outcome, r.Reason, r.Detail = api.Outcome_EXCEPTION, api.Reason_AUCTION_EXISTS,
			fmt.Sprintf("auction %q already exists", o.Auction)
	} else {
		a := &Auction{ID: o.Auction, Item: o.Item, OpenedAtMs: s.timeMs, ClosesAtMs: closesAt,
			MinIncrement: max(o.MinIncrement, 1), StartingPrice: o.StartingPrice,
			SoftCloseMs: o.SoftCloseMs, Version: seq, bidders: map[string]struct{}{}}
		s.auctions[a.ID] = a
		s.open[a.ID] = a
	}
	return r
}

func (s *State) applyClose(seq uint64, id string) Result {
	a, ok := s.open[id]
	if !ok {
		return Result{Outcome: api.Outcome_EXCEPTION, Reason: api.Reason_CLOSED, Seq: seq, Auction: id,
			Detail: "not open"}
	}
	a.Closed = true
	a.Version = seq
	a.ClosedAtMs, a.closedSeq = s.timeMs, seq
	delete(s.open, id)
	s.closed.push(a)
	return Result{Outcome: api.Outcome_SUCCESS, Seq: seq, Auction: id, Amount: a.Highest,
		Closed: true, Detail: "closed"}
}

// Snapshot returns the whole state, in a deterministic order. It shares
// the state's dedup entries, which never change once made: the snapshot
// may be encoded on another goroutine while the state goes on, but
// callers must not modify it.
func (s *State) Snapshot() *api.StateSnapshot {
	snap := &api.StateSnapshot{Seq: s.seq, TimeMs: s.timeMs, LastEpoch: s.lastEpoch}
	ids := make([]string, 0, len(s.auctions))
	for id := range s.auctions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		a := s.auctions[id]
		rec := &api.AuctionRecord{Info: a.Info(), Bidders: make([]string, 0, len(a.bidders)), ClosedSeq: a.closedSeq}
		for b := range a.bidders {
			rec.Bidders = append(rec.Bidders, b)
		}
		sort.Strings(rec.Bidders)
		snap.Auctions = append(snap.Auctions, rec)
	}
	clients := make([]string, 0, len(s.sessions))
	for c := range s.sessions {
		clients = append(clients, c)
	}
	sort.Strings(clients)
	for _, c := range clients {
		sess := s.sessions[c]
		ps := &api.Session{Client: c}
		for _, id := range sess.order {
			ps.Entries = append(ps.Entries, sess.byID[id])
		}
		snap.Sessions = append(snap.Sessions, ps)
	}
	ids = ids[:0]
	for c := range s.clients {
		ids = append(ids, c)
	}
	sort.Strings(ids)
	for _, c := range ids {
		cs := s.clients[c]
		pc := &api.ClientSession{Client: c, AckedBelow: cs.ackedBelow, LastMs: cs.lastMs}
		pc.Entries = slices.Clone(cs.entries)
		snap.Clients = append(snap.Clients, pc)
	}
	snap.Dedup = &api.DedupParams{RequestWindow: uint32(s.dedup.RequestWindow), MaxPending: uint32(s.dedup.MaxPending),
		ClientTtlMs: s.dedup.ClientTTLMs}
	snap.NextSweepMs = s.nextSweepMs
	snap.Limits, snap.Retired = s.limits.proto(), s.retired
	return snap
}

// Restore builds a state from a snapshot, with the snapshot's dedup
// parameters (DefaultDedup for a snapshot that records none).
func Restore(snap *api.StateSnapshot) (*State, error) {
	p := DefaultDedup
	if d := snap.GetDedup(); d != nil {
		p = DedupParams{RequestWindow: int(d.RequestWindow), MaxPending: int(d.MaxPending), ClientTTLMs: d.ClientTtlMs}
		if !p.valid() {
			return nil, fmt.Errorf("%w: dedup parameters %+v", ErrBadSnapshot, p)
		}
	}
	s := NewWithDedup(p)
	s.seq, s.timeMs, s.lastEpoch = snap.GetSeq(), snap.GetTimeMs(), snap.GetLastEpoch()
	s.nextSweepMs = snap.GetNextSweepMs()
	s.limits, s.retired = limitsOf(snap.GetLimits()), snap.GetRetired()
	for _, rec := range snap.GetAuctions() {
		in := rec.GetInfo()
		if in == nil || !validName(in.Auction) || s.auctions[in.Auction] != nil {
			return nil, fmt.Errorf("%w: bad or duplicate auction record", ErrBadSnapshot)
		}
		a := &Auction{ID: in.Auction, Item: in.Item, Closed: in.State == api.AuctionState_CLOSED_STATE,
			Highest: in.Highest, Bidder: in.Bidder, OpenedAtMs: in.OpenedAtMs, ClosesAtMs: in.ClosesAtMs,
			MinIncrement: in.MinIncrement, StartingPrice: in.StartingPrice, SoftCloseMs: in.SoftCloseMs,
			Version: in.Version, Bids: in.Bids, ClosedAtMs: in.ClosedAtMs, closedSeq: rec.ClosedSeq,
			bidders: make(map[string]struct{}, len(rec.Bidders))}
		for _, b := range rec.Bidders {
			a.bidders[b] = struct{}{}
		}
		s.auctions[a.ID] = a
		if !a.Closed {
			s.open[a.ID] = a
		}
	}
	for _, ps := range snap.GetSessions() {
		sess := &session{byID: map[string]*api.DedupEntry{}}
		for _, e := range ps.Entries {
			if _, dup := sess.byID[e.RequestId]; dup || e.RequestId == "" {
				return nil, fmt.Errorf("%w: bad session entry for %q", ErrBadSnapshot, ps.Client)
			}
			sess.byID[e.RequestId] = proto.Clone(e).(*api.DedupEntry)
			sess.order = append(sess.order, e.RequestId)
		}
		for len(sess.order) > s.dedup.RequestWindow {
			delete(sess.byID, sess.order[0])
			sess.order = sess.order[1:]
		}
		s.sessions[ps.Client] = sess
	}
	for _, pc := range snap.GetClients() {
		if pc.Client == "" || s.clients[pc.Client] != nil {
			return nil, fmt.Errorf("%w: bad or duplicate client session %q", ErrBadSnapshot, pc.Client)
		}
		cs := &clientSession{ackedBelow: pc.AckedBelow, lastMs: pc.LastMs, entries: make([]*api.DedupEntry, 0, len(pc.Entries))}
		last := uint64(0)
		for _, e := range pc.Entries {
			if e.ClientSeq <= last || e.ClientSeq < pc.AckedBelow {
				return nil, fmt.Errorf("%w: bad entry in client session %q", ErrBadSnapshot, pc.Client)
			}
			last = e.ClientSeq
			cs.entries = append(cs.entries, proto.Clone(e).(*api.DedupEntry))
		}
		s.clients[pc.Client] = cs
	}
	s.rebuildClosedOrder()
	s.rebuildRequestOrder()
	return s, nil
}

// Digest is a hash of the whole state; replicas that applied the same
// updates have the same digest.
func (s *State) Digest() [32]byte { return DigestOf(s.Snapshot()) }

// DigestOf is the Digest of the state snap is a snapshot of; it may run on
// another goroutine than the state's.
func DigestOf(snap *api.StateSnapshot) [32]byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap)
	if err != nil {
		panic(fmt.Sprintf("auction: marshal snapshot: %v", err)) // cannot happen for well-formed messages
	}
	return sha256.Sum256(b)
}
