package master

import (
	"fmt"
	"time"
	"unicode/utf8"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/pki"
)

// Leader is the master leader's view of the nodes in one term: the latest
// heartbeat of each, and the members it has decided to remove. It is the
// policy's state without Raft, clock or network: the caller passes the
// time and the committed configuration in, and carries the commands and
// replies out. The Master runs one per term it leads (guarded by its mu);
// the chain's simulation runs the same code on simulated time.
//
// The lease rule it keeps: a member's heartbeat is answered with a lease
// (which the node counts from when it sent the heartbeat) unless the
// leader has decided to remove it; the leader removes a member only after
// failureTimeout of silence, counted from the leader's own start at the
// latest. With lease < failureTimeout (less the Raft leader lease and the
// clock-rate drift), every lease a removed member holds has run out
// before the configuration without it can take effect.
type Leader struct {
	// since is when this leader took office: every member gets a full
	// failure timeout from it before it is removed.
	since   time.Time
	reports map[string]Report
	// removing: node id -> incarnation the leader has decided to remove;
	// such a node gets no lease, whatever it sends.
	removing map[string]uint64
}

// NewLeader returns the view of a leader that took office at since, having
// heard from nobody yet.
func NewLeader(since time.Time) *Leader {
	return &Leader{since: since, reports: map[string]Report{}, removing: map[string]uint64{}}
}

// Since is when the leader took office.
func (l *Leader) Since() time.Time { return l.since }

// Report returns the latest heartbeat of node id, if any.
func (l *Leader) Report(id string) (Report, bool) {
	r, ok := l.reports[id]
	return r, ok
}

// Doomed reports whether the leader has decided to remove node id.
func (l *Leader) Doomed(id string) bool {
	_, ok := l.removing[id]
	return ok
}

// HeartbeatResult is the leader's answer to one heartbeat.
type HeartbeatResult struct {
	// Member: the heartbeat's incarnation is in the configuration.
	Member bool
	// Lease granted, counted from when the node sent the heartbeat; zero
	// for a non-member or a member being removed.
	Lease time.Duration
	// Wake asks for a policy round now: a node that is not a member (new,
	// restarted, back after removal), or a joining node that just linked.
	Wake bool
}

// Heartbeat records req, received at now under configuration cfg, and
// answers it with at most lease. A malformed request (CheckHeartbeat) is
// recorded nowhere and answered with the zero result.
func (l *Leader) Heartbeat(cfg Config, req *api.HeartbeatRequest, now time.Time, lease time.Duration) HeartbeatResult {
	if CheckHeartbeat(req) != nil {
		return HeartbeatResult{}
	}
	doomed := false
	if inc, ok := l.removing[req.Id]; ok && inc == req.Incarnation {
		doomed = true
	}
	prev, known := l.reports[req.Id]
	if !doomed {
		since := now
		if known && prev.Incarnation == req.Incarnation {
			since = prev.Since
		}
		l.reports[req.Id] = Report{
			Member: Member{ID: req.Id, Addr: req.Addr, Incarnation: req.Incarnation},
			Role:   req.Role, Epoch: req.Epoch, Applied: req.Applied, Committed: req.Committed,
			CaughtUp: req.CaughtUp, Linked: req.Linked, Durable: req.Durable, At: now, Since: since,
		}
	}
	res := HeartbeatResult{Member: cfg.Has(req.Id, req.Incarnation)}
	if res.Member && !doomed {
		res.Lease = lease
	}
	res.Wake = !res.Member || (known && !prev.Linked && req.Linked)
	return res
}

// Decide is the policy (the package's Decide) on the leader's reports; a
// removal it returns dooms the member at once, so that no heartbeat
// renews its lease while the removal commits.
func (l *Leader) Decide(cfg Config, now time.Time, failureTimeout time.Duration) (Command, bool) {
	cmd, ok := Decide(cfg, l.reports, now, l.since, failureTimeout)
	if ok && cmd.Op == OpRemove {
		l.removing[cmd.Member.ID] = cmd.Member.Incarnation
	}
	return cmd, ok
}

// Forget drops the reports of nodes that are gone: neither in cfg (chain
// or joining) nor heard from for `after`, which must exceed the failure
// timeout (Decide ignores older reports of non-members). It returns how
// many it dropped. A node that comes back is a new report, and joins.
func (l *Leader) Forget(cfg Config, now time.Time, after time.Duration) int {
	n := 0
	for id, r := range l.reports {
		if i, j := cfg.find(id); i < 0 && j < 0 && now.Sub(r.At) > after {
			delete(l.reports, id)
			n++
		}
	}
	return n
}

// Reports is the number of nodes the leader holds a report of.
func (l *Leader) Reports() int { return len(l.reports) }

// Settled forgets the removals that cfg has carried out.
func (l *Leader) Settled(cfg Config) {
	for id, inc := range l.removing {
		if !cfg.Has(id, inc) {
			delete(l.removing, id)
		}
	}
}

// maxAddrLen bounds a heartbeat's address: host:port of a DNS name.
const maxAddrLen = 300

// CheckHeartbeat returns an error wrapping ErrBadHeartbeat, saying what is
// wrong, unless req could come from a node: an id a certificate can name
// (pki.ValidID), an address as config.yaml's (config.CheckAddr), and a
// role the protocol defines.
func CheckHeartbeat(req *api.HeartbeatRequest) error {
	switch {
	case req == nil:
		return fmt.Errorf("%w: no request", ErrBadHeartbeat)
	case !pki.ValidID(req.GetId()):
		return fmt.Errorf("%w: node id %q: want 1 to 64 letters, digits, '.', '_' and '-'", ErrBadHeartbeat, req.GetId())
	case len(req.GetAddr()) > maxAddrLen:
		return fmt.Errorf("%w: addr longer than %d bytes", ErrBadHeartbeat, maxAddrLen)
	case !utf8.ValidString(req.GetAddr()):
		return fmt.Errorf("%w: addr is not UTF-8", ErrBadHeartbeat)
	}
	if err := config.CheckAddr(req.GetAddr()); err != nil {
		return fmt.Errorf("%w: %v", ErrBadHeartbeat, err)
	}
	if _, ok := api.Role_name[int32(req.GetRole())]; !ok {
		return fmt.Errorf("%w: unknown role %d", ErrBadHeartbeat, req.GetRole())
	}
	return nil
}
