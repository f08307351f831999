package auction

import (
	"cmp"
	"fmt"
	"math"
	"slices"

	"github.com/gavel-auction/gavel/api"
)

// This file keeps the state bounded: closed auctions are retired after a
// retention period, the bidders' request-id tables hold a bounded number
// of request ids all together, and an auction registers a bounded number
// of bidders. The limits are replicated state: the head sequences a Trim
// with the limits of its configuration, and every replica adopts them and
// trims at the same update. Apply never reads a clock: "retention has run
// out" is decided by the Trim's update time.

// Limits bound the replicated state; 0 is "no limit" for each (see
// api.Limits).
type Limits struct {
	// RetentionMs is how long, in update time, a closed auction stays in
	// the state before a Trim retires it.
	RetentionMs int64
	// MaxRequestIDs bounds the request ids remembered in the bidders'
	// request-id tables, all together; a Trim forgets the oldest past it.
	MaxRequestIDs int
	// MaxBidders bounds the distinct bidders one auction registers; a bid
	// of a new bidder past it is refused with TOO_MANY_BIDDERS.
	MaxBidders int
}

// MaxTrimItems is the most auctions one Trim retires and the most request
// ids it forgets, so that applying one update stays cheap; the head
// sequences another Trim for whatever is left.
const MaxTrimItems = 4096

// proto returns l on the wire (nil for no limits at all).
func (l Limits) proto() *api.Limits {
	if l == (Limits{}) {
		return nil
	}
	return &api.Limits{RetentionMs: l.RetentionMs, MaxRequestIds: uint64(l.MaxRequestIDs), MaxBidders: uint64(l.MaxBidders)}
}

// limitsOf reads limits off the wire; out-of-range values mean no limit.
func limitsOf(p *api.Limits) Limits {
	count := func(v uint64) int { return int(min(v, math.MaxInt32)) }
	return Limits{RetentionMs: max(0, p.GetRetentionMs()), MaxRequestIDs: count(p.GetMaxRequestIds()),
		MaxBidders: count(p.GetMaxBidders())}
}

// TrimCommand is the command of a Trim that sets limits l.
func TrimCommand(l Limits) *api.Command {
	p := l.proto()
	if p == nil {
		p = &api.Limits{}
	}
	return &api.Command{Op: &api.Command_Trim{Trim: &api.Trim{Limits: p}}}
}

// Limits returns the limits the state applies (as the last Trim set them).
func (s *State) Limits() Limits { return s.limits }

// TrimDue reports whether a Trim with limits l, sequenced at nowMs, would
// change anything: set other limits, retire an auction or forget a
// request id. The head asks it at every tick.
func (s *State) TrimDue(l Limits, nowMs int64) bool {
	if l != s.limits {
		return true
	}
	if a, ok := s.closed.front(); ok && l.RetentionMs > 0 && a.ClosedAtMs+l.RetentionMs <= max(nowMs, s.timeMs) {
		return true
	}
	return l.MaxRequestIDs > 0 && s.requestIDs > l.MaxRequestIDs
}

// applyTrim adopts a Trim's limits and trims the state to them.
func (s *State) applyTrim(seq uint64, t *api.Trim) Result {
	s.limits = limitsOf(t.GetLimits())
	r := Result{Outcome: api.Outcome_SUCCESS, Seq: seq}
	for s.limits.RetentionMs > 0 && len(r.Retired) < MaxTrimItems {
		a, ok := s.closed.front()
		if !ok || a.ClosedAtMs+s.limits.RetentionMs > s.timeMs {
			break
		}
		s.closed.pop()
		delete(s.auctions, a.ID)
		s.retired++
		info := a.Info()
		info.Retired = true
		r.Retired = append(r.Retired, info)
	}
	for s.limits.MaxRequestIDs > 0 && s.requestIDs > s.limits.MaxRequestIDs && r.Forgotten < MaxTrimItems {
		s.forgetOldestRequest()
		r.Forgotten++
	}
	r.Detail = fmt.Sprintf("trimmed: %d auctions retired, %d request ids forgotten", len(r.Retired), r.Forgotten)
	return r
}

// Stats are counts of what the state holds, for metrics and status.
type Stats struct {
	// Open and Closed count the auctions in the state; Retired those
	// retired so far.
	Open, Closed int
	Retired      uint64
	// RequestIDs are the request ids remembered in the bidders' tables,
	// BidderTables those tables, Clients the client sessions.
	RequestIDs, BidderTables, Clients int
}

// Stats returns what the state holds now.
func (s *State) Stats() Stats {
	return Stats{Open: len(s.open), Closed: len(s.auctions) - len(s.open), Retired: s.retired,
		RequestIDs: s.requestIDs, BidderTables: len(s.sessions), Clients: len(s.clients)}
}

// Retired is the number of auctions retired so far.
func (s *State) Retired() uint64 { return s.retired }

// reqRef names one remembered request id in the order they were
// remembered: the table it is in and the seq of the update that decided
// it (which no other remembered request shares).
type reqRef struct {
	table string
	seq   uint64
}

// forgetOldestRequest forgets the oldest request id still remembered.
// The oldest one of all is the oldest of its own table: refs whose entry
// the table's own window already dropped are skipped.
func (s *State) forgetOldestRequest() {
	for {
		ref, ok := s.reqs.front()
		if !ok {
			return
		}
		s.reqs.pop()
		sess := s.sessions[ref.table]
		if sess == nil || len(sess.order) == 0 || sess.byID[sess.order[0]].Seq != ref.seq {
			continue
		}
		s.dropOldest(ref.table, sess)
		return
	}
}

// dropOldest forgets the oldest request id of a table, and the table once
// it is empty.
func (s *State) dropOldest(table string, sess *session) {
	delete(sess.byID, sess.order[0])
	sess.order = sess.order[1:]
	s.requestIDs--
	if len(sess.order) == 0 {
		delete(s.sessions, table)
	}
}

// noteRequest records a newly remembered request id in the global order;
// the order is rebuilt from the tables when stale refs outnumber live ones.
func (s *State) noteRequest(table string, seq uint64) {
	s.requestIDs++
	s.reqs.push(reqRef{table: table, seq: seq})
	if s.reqs.len() > 2*s.requestIDs+1024 {
		s.rebuildRequestOrder()
	}
}

// rebuildRequestOrder rebuilds the global order of remembered request ids
// from the tables (Restore, and compaction).
func (s *State) rebuildRequestOrder() {
	refs := make([]reqRef, 0, s.requestIDs)
	for table, sess := range s.sessions {
		for _, id := range sess.order {
			refs = append(refs, reqRef{table: table, seq: sess.byID[id].Seq})
		}
	}
	slices.SortFunc(refs, func(a, b reqRef) int { return cmp.Compare(a.seq, b.seq) })
	s.reqs = fifo[reqRef]{items: refs}
	s.requestIDs = len(refs)
}

// rebuildClosedOrder rebuilds the queue of closed auctions, in the order
// they closed (Restore).
func (s *State) rebuildClosedOrder() {
	var closed []*Auction
	for _, a := range s.auctions {
		if a.Closed {
			closed = append(closed, a)
		}
	}
	slices.SortFunc(closed, func(a, b *Auction) int {
		return cmp.Or(cmp.Compare(a.closedSeq, b.closedSeq), cmp.Compare(a.ID, b.ID))
	})
	s.closed = fifo[*Auction]{items: closed}
}

// fifo is a queue on a slice that is compacted as its head advances.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }

func (q *fifo[T]) push(v T) { q.items = append(q.items, v) }

func (q *fifo[T]) front() (T, bool) {
	if q.head == len(q.items) {
		var zero T
		return zero, false
	}
	return q.items[q.head], true
}

func (q *fifo[T]) pop() {
	var zero T
	q.items[q.head] = zero
	q.head++
	if q.head == len(q.items) {
		q.items, q.head = q.items[:0], 0
	} else if q.head >= 1024 && q.head*2 >= len(q.items) {
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
}
