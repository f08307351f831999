package client

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// sessionIdleLimit is how long a client session may go unused before the
// Client starts a new one. It is half the chain's client session TTL
// (auction.DefaultDedup.ClientTTLMs, one hour), so that the chain never
// forgets a session the Client still uses.
const sessionIdleLimit = 30 * time.Minute

// retryLimit bounds how long a bid or open is retried: less than the
// chain's client session TTL after the request was first sent, so a retry
// always finds its session remembered.
const retryLimit = sessionIdleLimit

// boundRetries returns ctx bounded by retryLimit, and its cancel. A ctx
// whose deadline comes sooner (the usual case) is returned as it is,
// without a timer of its own.
func boundRetries(ctx context.Context) (context.Context, context.CancelFunc) {
	if d, ok := ctx.Deadline(); ok && time.Until(d) <= retryLimit {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, retryLimit)
}

// requestSession numbers a Client's bids and opens for exactly-once
// retries by client session, as RIFL does: every request gets the next
// client_seq of the session, keeps it across its retries, and carries
// acked_below, the lowest client_seq whose call has not returned yet. The
// chain keeps the outcome of every request of the session at or above
// acked_below, however many requests the client sends meanwhile, and
// forgets the rest: their callers already have their answer.
type requestSession struct {
	mu       sync.Mutex // guards every field
	id       string     // session id: 128 random bits, hex
	next     uint64     // client_seq of the next request
	inFlight map[uint64]struct{}
	lastUsed time.Time
}

func newRequestSession() *requestSession {
	return &requestSession{id: newSessionID(), next: 1, inFlight: map[uint64]struct{}{}}
}

func newSessionID() string {
	var b [16]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand panics rather than return an error)
	return hex.EncodeToString(b[:])
}

// begin numbers a new request: its session id, client_seq and the
// acked_below to send with it.
func (s *requestSession) begin() (id string, seq, ackedBelow uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if len(s.inFlight) == 0 && !s.lastUsed.IsZero() && now.Sub(s.lastUsed) > sessionIdleLimit {
		s.id, s.next = newSessionID(), 1
	}
	s.lastUsed = now
	seq = s.next
	s.next++
	s.inFlight[seq] = struct{}{}
	ackedBelow = seq
	for q := range s.inFlight {
		ackedBelow = min(ackedBelow, q)
	}
	return s.id, seq, ackedBelow
}

// end records that the call of request seq returned: with its outcome,
// or with an error that told the caller the outcome is unknown (whose
// retry then goes by request id).
func (s *requestSession) end(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.inFlight, seq)
}
