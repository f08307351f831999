// Package checker checks gavel client histories for linearizability with
// porcupine (github.com/anishathalye/porcupine).
//
// It has three parts, usable by the in-memory chain simulation and by tests
// that drive real processes with many goroutine clients alike:
//
//   - Model, a porcupine model of ONE auction (histories are partitioned by
//     auction id, which porcupine's P-compositionality makes sound and fast);
//   - Recorder, a thread-safe recorder of client calls and returns;
//   - Check, which runs porcupine with a timeout and never fails silently:
//     a history that is illegal, malformed, or could not be decided in time
//     is an error, and the report can write porcupine's HTML visualization.
//
// The model encodes the contract of DESIGN.md section 3 as a client sees it:
//
//	open(min increment, starting price) -> success | exists
//	bid(bidder, amount)                 -> success | too low | closed | unknown auction | invalid
//	result()                            -> {open|closed, highest, bidder} | unknown auction
//
// and any of them may end "unknown": the client gave up waiting.
package checker

import (
	"fmt"
	"hash/fnv"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/anishathalye/porcupine"

	"github.com/gavel-auction/gavel/api"
)

// Limits of the contract (auction.MaxAmount and auction.MaxIDLen),
// restated rather than imported so that the model is an independent
// specification, not a copy of the implementation.
const (
	maxAmount = int64(1_000_000_000_000_000) // largest valid amount, in minor units
	maxIDLen  = 128                          // longest auction id, bidder or request id, in bytes
)

// Kind is the kind of a client operation.
type Kind uint8

// Operation kinds.
const (
	KindOpen Kind = iota + 1
	KindBid
	KindResult
)

// String names the kind as porcupine's visualization shows it.
func (k Kind) String() string {
	switch k {
	case KindOpen:
		return "open"
	case KindBid:
		return "bid"
	case KindResult:
		return "result"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Input is the input of one client operation on one auction.
type Input struct {
	Kind    Kind
	Auction string
	// Bidder and Amount describe a bid.
	Bidder string
	Amount int64
	// RequestID is the request id of a bid or an open. Retries of one
	// request carry the same id; a client should record a request and all
	// its retries as ONE operation. If it records them as several
	// operations, the model holds them to exactly-once: every operation
	// with the same (bidder, request id) must report the same outcome, and
	// only the first one can change the state.
	RequestID string
	// MinIncrement and StartingPrice describe an open.
	MinIncrement  int64
	StartingPrice int64

	// dedup is set by the model's partition function on operations whose
	// (bidder, request id) occurs more than once in the history; only
	// those are tracked in the model state, which keeps states small.
	dedup bool
}

// OpenInput is an open of auction with the given parameters.
func OpenInput(auction string, minIncrement, startingPrice int64, requestID string) Input {
	return Input{Kind: KindOpen, Auction: auction, MinIncrement: minIncrement,
		StartingPrice: startingPrice, RequestID: requestID}
}

// BidInput is a bid.
func BidInput(auction, bidder string, amount int64, requestID string) Input {
	return Input{Kind: KindBid, Auction: auction, Bidder: bidder, Amount: amount, RequestID: requestID}
}

// ResultInput is a read of an auction's state.
func ResultInput(auction string) Input {
	return Input{Kind: KindResult, Auction: auction}
}

// Outcome is how an operation ended, as its client saw it.
type Outcome uint8

// Outcomes. The zero value is OutcomeUnknown, so a forgotten Return reads
// as "the client gave up", which constrains nothing.
const (
	// OutcomeUnknown: the client gave up; the request may or may not have
	// taken effect.
	OutcomeUnknown Outcome = iota
	// OutcomeSuccess: the bid became the highest, the auction was opened,
	// or (for a result) the auction's state was read.
	OutcomeSuccess
	// OutcomeTooLow: FAIL / TOO_LOW.
	OutcomeTooLow
	// OutcomeClosed: EXCEPTION / CLOSED.
	OutcomeClosed
	// OutcomeUnknownAuction: EXCEPTION / UNKNOWN_AUCTION (or a read of an
	// auction that does not exist).
	OutcomeUnknownAuction
	// OutcomeInvalid: EXCEPTION / INVALID_AMOUNT, INVALID_BIDDER or
	// INVALID_REQUEST: refused before sequencing, no effect.
	OutcomeInvalid
	// OutcomeExists: EXCEPTION / AUCTION_EXISTS.
	OutcomeExists
	// OutcomeOther: any other outcome. The model accepts it nowhere, so a
	// client that maps a reply it does not understand to it gets a loud
	// linearizability failure instead of a silent pass.
	OutcomeOther
)

var outcomeNames = [...]string{"unknown", "success", "too low", "closed", "unknown auction",
	"invalid", "exists", "other"}

// String names the outcome as porcupine's visualization shows it.
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", uint8(o))
}

// OutcomeOf maps a reply's Outcome and Reason to the model's Outcome.
func OutcomeOf(o api.Outcome, r api.Reason) Outcome {
	switch {
	case o == api.Outcome_SUCCESS:
		return OutcomeSuccess
	case o == api.Outcome_FAIL && r == api.Reason_TOO_LOW:
		return OutcomeTooLow
	case o != api.Outcome_EXCEPTION:
		return OutcomeOther
	}
	switch r {
	case api.Reason_CLOSED:
		return OutcomeClosed
	case api.Reason_UNKNOWN_AUCTION:
		return OutcomeUnknownAuction
	case api.Reason_INVALID_AMOUNT, api.Reason_INVALID_BIDDER, api.Reason_INVALID_REQUEST:
		return OutcomeInvalid
	case api.Reason_AUCTION_EXISTS:
		return OutcomeExists
	case api.Reason_UNAVAILABLE:
		// The service could not serve the request in time: the client
		// does not know whether it took effect.
		return OutcomeUnknown
	}
	return OutcomeOther
}

// Output is the output of one operation.
type Output struct {
	Outcome Outcome
	// Closed, Highest and Bidder are a result's view of the auction (only
	// with OutcomeSuccess on a KindResult operation).
	Closed  bool
	Highest int64
	Bidder  string
}

// BidOutput is the output of a bid or open that got a reply.
func BidOutput(o api.Outcome, r api.Reason) Output {
	return Output{Outcome: OutcomeOf(o, r)}
}

// ResultOutput is the output of a result that read info.
func ResultOutput(info *api.AuctionInfo) Output {
	return Output{Outcome: OutcomeSuccess, Closed: info.GetState() == api.AuctionState_CLOSED_STATE,
		Highest: info.GetHighest(), Bidder: info.GetBidder()}
}

// UnknownOutput is the output of an operation whose client gave up.
func UnknownOutput() Output { return Output{Outcome: OutcomeUnknown} }

// state is the model's state of one auction. Step never mutates a state: it
// returns a modified copy (decided is an immutable list, shared).
type state struct {
	exists  bool
	closed  bool
	highest int64
	bidder  string
	minInc  int64
	start   int64
	decided *decision // outcomes of tracked requests, newest first
	nDec    int
	hDec    uint64 // XOR of the decisions' hashes: order-independent
}

// decision is the recorded outcome of a tracked request.
type decision struct {
	key     string
	outcome Outcome
	next    *decision
}

func (s state) lookup(key string) (Outcome, bool) {
	for d := s.decided; d != nil; d = d.next {
		if d.key == key {
			return d.outcome, true
		}
	}
	return 0, false
}

func (s state) remember(key string, o Outcome) state {
	s.decided = &decision{key: key, outcome: o, next: s.decided}
	s.nDec++
	s.hDec ^= decisionHash(key, o)
	return s
}

func decisionHash(key string, o Outcome) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{byte(o)})
	return h.Sum64()
}

// minNext is the smallest amount that can succeed next: the first bid
// needs at least the starting price (and more than 0), later ones the
// highest plus the minimum increment.
func (s state) minNext() int64 {
	if s.bidder == "" {
		return max(s.start, 1)
	}
	return s.highest + s.minInc
}

func dedupKey(in Input) string {
	if !in.dedup || in.RequestID == "" {
		return ""
	}
	if in.Kind == KindOpen {
		return "open\x00" + in.RequestID
	}
	return "bid\x00" + in.Bidder + "\x00" + in.RequestID
}

func validName(s string) bool { return s != "" && len(s) <= maxIDLen && utf8.ValidString(s) }

func validBid(in Input) bool {
	return validName(in.Auction) && validName(in.Bidder) && in.Amount > 0 && in.Amount <= maxAmount &&
		len(in.RequestID) <= maxIDLen && utf8.ValidString(in.RequestID)
}

// step is the sequential specification of one auction.
//
// Closing. Closing is decided by the chain, not by any clock the client
// could see, so the model lets an open auction close at ANY point. It does
// so lazily: the first operation that observes "closed" (a bid refused as
// closed, a result that reads closed) closes the model just before itself;
// from then on no bid may succeed and every result must read closed. This
// is equivalent to guessing the close point: any linearization with the
// close at point X can move the close to just before the first operation
// that observes it, because the operations in between did not observe it
// (an unknown bid there that the real history refused as closed can be
// linearized at the end of the history instead, see below).
//
// Unknown outcomes. An operation whose client gave up has return time
// "infinity" (math.MaxInt64), so porcupine may linearize it anywhere after
// its call. The model applies such an operation if and only if it would
// succeed at its linearization point. That is sound and complete for a
// state machine whose outcomes are a function of the state:
//   - if the request was never sequenced (lost with a crashed head, never
//     sent), porcupine can linearize it after every other operation, where
//     whatever it does is observed by nobody;
//   - if it was sequenced, the state at its sequence point decided it, and
//     it changed the state exactly when it succeeded there — which is what
//     the model does at the same linearization point.
//
// So the model never has to guess whether a given-up request happened; the
// checker's search over linearization points does it.
func step(s state, in Input, out Output) (bool, state) {
	switch in.Kind {
	case KindOpen:
		return stepOpen(s, in, out)
	case KindBid:
		return stepBid(s, in, out)
	case KindResult:
		return stepResult(s, out)
	}
	return false, s
}

func stepOpen(s state, in Input, out Output) (bool, state) {
	key := dedupKey(in)
	if o, ok := s.lookup(key); ok && key != "" {
		return out.Outcome == OutcomeUnknown || out.Outcome == o, s
	}
	if out.Outcome == OutcomeInvalid {
		// The model does not know every open parameter (duration, item,
		// soft close), so it takes "invalid" at its word: the open had no
		// effect, and any later operation that shows otherwise fails.
		return true, s
	}
	would := OutcomeSuccess
	if s.exists {
		would = OutcomeExists
	}
	if out.Outcome != OutcomeUnknown && out.Outcome != would {
		return false, s
	}
	if would == OutcomeSuccess {
		s.exists = true
		s.minInc = max(in.MinIncrement, 1) // a bid must beat the highest
		s.start = in.StartingPrice
	}
	if key != "" {
		s = s.remember(key, would)
	}
	return true, s
}

func stepBid(s state, in Input, out Output) (bool, state) {
	key := dedupKey(in)
	if o, ok := s.lookup(key); ok && key != "" {
		// A retry recorded as its own operation: the original outcome,
		// and no second application.
		return out.Outcome == OutcomeUnknown || out.Outcome == o, s
	}
	if !validBid(in) {
		// Refused before sequencing: no effect, nothing remembered.
		return out.Outcome == OutcomeUnknown || out.Outcome == OutcomeInvalid, s
	}
	var would Outcome
	switch {
	case !s.exists:
		would = OutcomeUnknownAuction
	case s.closed:
		would = OutcomeClosed
	case out.Outcome == OutcomeClosed:
		// The chain closed the auction just before this bid.
		s.closed = true
		would = OutcomeClosed
	case in.Amount < s.minNext():
		would = OutcomeTooLow
	default:
		would = OutcomeSuccess
	}
	if out.Outcome != OutcomeUnknown && out.Outcome != would {
		return false, s
	}
	if would == OutcomeSuccess {
		s.highest, s.bidder = in.Amount, in.Bidder
	}
	if key != "" {
		s = s.remember(key, would)
	}
	return true, s
}

func stepResult(s state, out Output) (bool, state) {
	switch out.Outcome {
	case OutcomeUnknown:
		return true, s
	case OutcomeUnknownAuction:
		return !s.exists, s
	case OutcomeSuccess:
		if !s.exists || (s.closed && !out.Closed) {
			return false, s
		}
		if out.Closed {
			s.closed = true // the chain closed it at or before this read
		}
		return out.Highest == s.highest && out.Bidder == s.bidder, s
	}
	return false, s
}

func stateEqual(a, b state) bool {
	if a.exists != b.exists || a.closed != b.closed || a.highest != b.highest || a.bidder != b.bidder ||
		a.minInc != b.minInc || a.start != b.start || a.nDec != b.nDec || a.hDec != b.hDec {
		return false
	}
	if a.decided == b.decided {
		return true
	}
	for d := a.decided; d != nil; d = d.next {
		if o, ok := b.lookup(d.key); !ok || o != d.outcome {
			return false
		}
	}
	return true
}

func stateHash(s state) uint64 {
	h := fnv.New64a()
	fmt.Fprintf(h, "%t|%t|%d|%s|%d|%d", s.exists, s.closed, s.highest, s.bidder, s.minInc, s.start)
	return h.Sum64() ^ s.hDec
}

func describeState(s state) string {
	switch {
	case !s.exists:
		return "not opened"
	case s.bidder == "":
		if s.closed {
			return "closed, no bids"
		}
		return fmt.Sprintf("open, no bids (start %d, +%d)", s.start, s.minInc)
	case s.closed:
		return fmt.Sprintf("closed: %s won with %d", s.bidder, s.highest)
	}
	return fmt.Sprintf("open: %d by %s (+%d)", s.highest, s.bidder, s.minInc)
}

func describeOperation(in Input, out Output) string {
	var b strings.Builder
	switch in.Kind {
	case KindOpen:
		fmt.Fprintf(&b, "open(+%d, start %d)", in.MinIncrement, in.StartingPrice)
	case KindBid:
		fmt.Fprintf(&b, "bid(%s, %d)", in.Bidder, in.Amount)
	case KindResult:
		b.WriteString("result()")
	default:
		fmt.Fprintf(&b, "%v", in)
	}
	b.WriteString(" -> ")
	switch {
	case in.Kind == KindResult && out.Outcome == OutcomeSuccess:
		st := "open"
		if out.Closed {
			st = "closed"
		}
		if out.Bidder == "" {
			fmt.Fprintf(&b, "%s, no bids", st)
		} else {
			fmt.Fprintf(&b, "%s, %d by %s", st, out.Highest, out.Bidder)
		}
	default:
		b.WriteString(out.Outcome.String())
	}
	if in.RequestID != "" && in.Kind != KindResult {
		fmt.Fprintf(&b, " [%s]", in.RequestID)
	}
	return b.String()
}

// partition splits a history by auction id (operations on different
// auctions commute) and marks the operations whose request id repeats.
func partition(history []porcupine.Operation) [][]porcupine.Operation {
	index := map[string]int{}
	var parts [][]porcupine.Operation
	for _, op := range history {
		in, _ := op.Input.(Input)
		i, ok := index[in.Auction]
		if !ok {
			i = len(parts)
			index[in.Auction] = i
			parts = append(parts, nil)
		}
		parts[i] = append(parts[i], op)
	}
	for _, part := range parts {
		count := map[string]int{}
		for _, op := range part {
			if in, ok := op.Input.(Input); ok && in.Kind != KindResult && in.RequestID != "" {
				in.dedup = true
				count[dedupKey(in)]++
			}
		}
		for i, op := range part {
			if in, ok := op.Input.(Input); ok && in.Kind != KindResult && in.RequestID != "" {
				in.dedup = true
				if count[dedupKey(in)] > 1 {
					op.Input = in
					part[i] = op
				}
			}
		}
	}
	return parts
}

// Model is the porcupine model of one auction, with a partition function
// that splits a history of many auctions by auction id. Inputs must be
// Input values and outputs Output values (Check verifies that).
func Model() porcupine.Model {
	return porcupine.Model{
		Partition: partition,
		Init:      func() interface{} { return state{} },
		Step: func(st, in, out interface{}) (bool, interface{}) {
			return step(st.(state), in.(Input), out.(Output))
		},
		Equal: func(a, b interface{}) bool { return stateEqual(a.(state), b.(state)) },
		Hash:  func(st interface{}) uint64 { return stateHash(st.(state)) },
		DescribeOperation: func(in, out interface{}) string {
			return describeOperation(in.(Input), out.(Output))
		},
		DescribeState: func(st interface{}) string { return describeState(st.(state)) },
	}
}

// pending is the return time of an operation whose client gave up.
const pending = int64(math.MaxInt64)
