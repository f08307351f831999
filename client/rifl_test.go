package client

import (
	"context"
	"testing"
	"time"
)

// Rule: requests are numbered from 1; acked_below is the lowest number
// whose call has not returned; an idle session is replaced by a new one.
func TestRequestSession(t *testing.T) {
	s := newRequestSession()
	id, s1, a1 := s.begin()
	_, s2, a2 := s.begin()
	_, s3, a3 := s.begin()
	if s1 != 1 || s2 != 2 || s3 != 3 || a1 != 1 || a2 != 1 || a3 != 1 {
		t.Fatalf("seqs %d %d %d, acked_below %d %d %d", s1, s2, s3, a1, a2, a3)
	}
	s.end(s2)
	if _, s4, a4 := s.begin(); s4 != 4 || a4 != 1 {
		t.Fatalf("with 1 in flight: seq %d acked_below %d", s4, a4)
	}
	s.end(s1)
	if _, s5, a5 := s.begin(); s5 != 5 || a5 != 3 {
		t.Fatalf("with 3 the oldest in flight: seq %d acked_below %d", s5, a5)
	}
	for _, q := range []uint64{3, 4, 5} {
		s.end(q)
	}
	s.lastUsed = time.Now().Add(-sessionIdleLimit - time.Second)
	if id2, seq, acked := s.begin(); id2 == id || seq != 1 || acked != 1 {
		t.Fatalf("after an idle period: session %q (was %q), seq %d, acked_below %d", id2, id, seq, acked)
	}
}

// boundRetries gives a context without a deadline the retry limit, and
// leaves one whose deadline comes sooner as it is.
func TestBoundRetries(t *testing.T) {
	short, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if got, done := boundRetries(short); got != short {
		t.Errorf("a context with a 1s deadline was wrapped")
	} else {
		done()
	}
	got, done := boundRetries(context.Background())
	defer done()
	if d, ok := got.Deadline(); !ok || time.Until(d) > retryLimit {
		t.Errorf("deadline %v %v, want one within %v", d, ok, retryLimit)
	}
}
