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
	"crypto/sha256"
	"errors"
	"fmt"
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
	// DefaultDedupWindow is how many request outcomes are remembered per
	// client when New is given no window.
	DefaultDedupWindow = 256
	// openClient is the session under which auction opens are deduplicated.
	openClient = "\x00open"
)

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
	bidders       map[string]struct{}
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
		Bidders: uint64(len(a.bidders)), OpenedAtMs: a.OpenedAtMs,
	}
}

// minNext is the smallest amount that can succeed next.
func (a *Auction) minNext() int64 {
	if a.Bidder == "" {
		return max(a.StartingPrice, 1)
	}
	return a.Highest + a.MinIncrement // both <= MaxAmount: no overflow
}

// session remembers a client's latest request outcomes, oldest first.
type session struct {
	byID  map[string]*api.DedupEntry
	order []string
}

// State is the whole replicated auction state.
type State struct {
	seq uint64
	// lastEpoch is the epoch of the update at seq (Update.Epoch).
	lastEpoch uint64
	timeMs    int64
	auctions  map[string]*Auction
	open      map[string]*Auction // the subset still open, for Due
	sessions  map[string]*session
	window    int
}

// New returns an empty state that remembers dedupWindow request outcomes
// per client (DefaultDedupWindow if dedupWindow <= 0).
func New(dedupWindow int) *State {
	if dedupWindow <= 0 {
		dedupWindow = DefaultDedupWindow
	}
	return &State{
		auctions: map[string]*Auction{},
		open:     map[string]*Auction{},
		sessions: map[string]*session{},
		window:   dedupWindow,
	}
}

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

// Lookup returns the recorded outcome of a client's request, if the state
// still remembers it. Opens are looked up with client "".
func (s *State) Lookup(client, requestID string) (Result, bool) {
	if requestID == "" {
		return Result{}, false
	}
	if client == "" {
		client = openClient
	}
	sess, ok := s.sessions[client]
	if !ok {
		return Result{}, false
	}
	e, ok := sess.byID[requestID]
	if !ok {
		return Result{}, false
	}
	return Result{Outcome: e.Outcome, Reason: e.Reason, Seq: e.Seq, Auction: e.Auction,
		Amount: e.Amount, Duplicate: true, Detail: "duplicate request: original outcome"}, true
}

func (s *State) remember(client, requestID string, r Result) {
	if requestID == "" {
		return
	}
	sess, ok := s.sessions[client]
	if !ok {
		sess = &session{byID: map[string]*api.DedupEntry{}}
		s.sessions[client] = sess
	}
	if len(sess.order) >= s.window {
		delete(sess.byID, sess.order[0])
		sess.order = sess.order[1:]
	}
	sess.byID[requestID] = &api.DedupEntry{RequestId: requestID, Seq: r.Seq, Outcome: r.Outcome,
		Reason: r.Reason, Amount: r.Amount, Auction: r.Auction}
	sess.order = append(sess.order, requestID)
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
	return nil
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
	switch op := u.GetCommand().GetOp().(type) {
	case *api.Command_Bid:
		return s.applyBid(u.Seq, op.Bid), nil
	case *api.Command_Open:
		return s.applyOpen(u.Seq, op.Open), nil
	case *api.Command_Close:
		return s.applyClose(u.Seq, op.Close.GetAuction()), nil
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
	if prev, ok := s.Lookup(b.Bidder, b.RequestId); ok && b.Bidder != "" {
		return prev
	}
	r := s.decideBid(seq, b)
	if b.Bidder != "" {
		s.remember(b.Bidder, b.RequestId, r)
	}
	return r
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
	a.bidders[b.Bidder] = struct{}{} // the first bid registers the bidder
	if a.Closed {
		return exception(seq, b, api.Reason_CLOSED, fmt.Sprintf("auction %q is closed", b.Auction))
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
	if prev, ok := s.Lookup("", o.GetRequestId()); ok {
		return prev
	}
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
	s.remember(openClient, o.GetRequestId(), r)
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
	delete(s.open, id)
	return Result{Outcome: api.Outcome_SUCCESS, Seq: seq, Auction: id, Amount: a.Highest,
		Closed: true, Detail: "closed"}
}

// Snapshot returns the whole state, in a deterministic order.
func (s *State) Snapshot() *api.StateSnapshot {
	snap := &api.StateSnapshot{Seq: s.seq, TimeMs: s.timeMs, LastEpoch: s.lastEpoch}
	ids := make([]string, 0, len(s.auctions))
	for id := range s.auctions {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		a := s.auctions[id]
		rec := &api.AuctionRecord{Info: a.Info(), Bidders: make([]string, 0, len(a.bidders))}
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
			ps.Entries = append(ps.Entries, proto.Clone(sess.byID[id]).(*api.DedupEntry))
		}
		snap.Sessions = append(snap.Sessions, ps)
	}
	return snap
}

// Restore builds a state from a snapshot.
func Restore(snap *api.StateSnapshot, dedupWindow int) (*State, error) {
	s := New(dedupWindow)
	s.seq, s.timeMs, s.lastEpoch = snap.GetSeq(), snap.GetTimeMs(), snap.GetLastEpoch()
	for _, rec := range snap.GetAuctions() {
		in := rec.GetInfo()
		if in == nil || !validName(in.Auction) || s.auctions[in.Auction] != nil {
			return nil, fmt.Errorf("%w: bad or duplicate auction record", ErrBadSnapshot)
		}
		a := &Auction{ID: in.Auction, Item: in.Item, Closed: in.State == api.AuctionState_CLOSED_STATE,
			Highest: in.Highest, Bidder: in.Bidder, OpenedAtMs: in.OpenedAtMs, ClosesAtMs: in.ClosesAtMs,
			MinIncrement: in.MinIncrement, StartingPrice: in.StartingPrice, SoftCloseMs: in.SoftCloseMs,
			Version: in.Version, Bids: in.Bids, bidders: make(map[string]struct{}, len(rec.Bidders))}
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
		for len(sess.order) > s.window {
			delete(sess.byID, sess.order[0])
			sess.order = sess.order[1:]
		}
		s.sessions[ps.Client] = sess
	}
	return s, nil
}

// Digest is a hash of the whole state; replicas that applied the same
// updates have the same digest.
func (s *State) Digest() [32]byte {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(s.Snapshot())
	if err != nil {
		panic(fmt.Sprintf("auction: marshal snapshot: %v", err)) // cannot happen for well-formed messages
	}
	return sha256.Sum256(b)
}
