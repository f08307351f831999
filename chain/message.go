package chain

import (
	"fmt"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/pki"
)

// CheckMessage returns an error wrapping ErrBadMessage, saying what is
// wrong, unless m could come from a replica of this package: a sender
// with a valid id, a body, and a body that is consistent in itself. A
// Forward's updates are contiguous, of the message's epoch or an earlier
// one, and held by the sender (at most its pred_applied, of which its
// pred_committed is no more); a snapshot comes with a handshake only, at
// most pred_applied, and updates after it start right after it. A Hello
// knows committed no further than it holds. It looks at m alone:
// Replica.Step adds what only the receiver can check.
func CheckMessage(m *api.ChainMessage) error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadMessage, fmt.Sprintf(format, args...))
	}
	switch {
	case m == nil:
		return bad("no message")
	case !pki.ValidID(m.GetFrom()):
		return bad("sender %q is not a node id", m.GetFrom())
	case m.GetEpoch() == 0:
		return bad("epoch 0")
	}
	switch body := m.GetBody().(type) {
	case *api.ChainMessage_Forward:
		f := body.Forward
		if f == nil {
			return bad("empty forward")
		}
		if f.GetPredCommitted() > f.GetPredApplied() {
			return bad("forward: pred_committed %d above pred_applied %d", f.GetPredCommitted(), f.GetPredApplied())
		}
		next := uint64(0)
		if c := f.GetChunk(); c != nil {
			if c.GetSeq() > f.GetPredApplied() {
				return bad("forward: snapshot chunk at %d above pred_applied %d", c.GetSeq(), f.GetPredApplied())
			}
			if c.GetLast() {
				next = c.GetSeq() + 1
			}
		}
		for i, u := range f.GetUpdates() {
			switch {
			case u == nil:
				return bad("forward: update %d missing", i)
			case u.GetSeq() == 0:
				return bad("forward: update %d has seq 0", i)
			case next != 0 && u.GetSeq() != next:
				return bad("forward: update %d has seq %d, want %d (contiguous)", i, u.GetSeq(), next)
			case u.GetSeq() > f.GetPredApplied():
				return bad("forward: update seq %d above pred_applied %d", u.GetSeq(), f.GetPredApplied())
			case u.GetEpoch() > m.GetEpoch():
				return bad("forward: update %d of epoch %d in a message of epoch %d", u.GetSeq(), u.GetEpoch(), m.GetEpoch())
			}
			next = u.GetSeq() + 1
		}
	case *api.ChainMessage_Ack:
		if body.Ack == nil {
			return bad("empty ack")
		}
	case *api.ChainMessage_Hello:
		h := body.Hello
		if h == nil {
			return bad("empty hello")
		}
		if h.GetCommitted() > h.GetLastSeq() {
			return bad("hello: committed %d above last_seq %d", h.GetCommitted(), h.GetLastSeq())
		}
	case *api.ChainMessage_SnapshotAck:
		if body.SnapshotAck == nil {
			return bad("empty snapshot ack")
		}
	default:
		return bad("no body")
	}
	return nil
}
