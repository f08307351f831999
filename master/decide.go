package master

import (
	"maps"
	"slices"
	"time"

	"github.com/gavel-auction/gavel/api"
)

// Report is the leader's record of a node's latest heartbeat.
type Report struct {
	Member
	Role      api.Role
	Epoch     uint64 // the node's installed epoch
	Applied   uint64
	Committed uint64
	CaughtUp  bool
	// Linked: the node's predecessor (for a joining node, the tail)
	// answered its Hello in its epoch, so it holds a snapshot or the stream.
	Linked bool
	At     time.Time // when the leader received it
}

// Decide is the leader's policy: the next command to propose, given the
// configuration, each node's latest heartbeat (by node id), the time, and
// when this leader took office. In order:
//
//  1. remove a member whose heartbeats stopped for failureTimeout (counting
//     from leaderSince at the latest: a new leader gives every node a full
//     timeout, and lets every lease of its predecessor run out, before it
//     removes anyone) — never the chain's last member, and not a member
//     whose process restarted at the same address (rule 2 replaces it);
//  2. add a node that heartbeats but is not a member (a new node, a
//     restarted one, or one that was removed and came back) as joining; a
//     restarted member's old entry leaves the chain in the same step;
//  3. append a joining node whose link to the tail is established in the
//     current epoch, making it the new tail.
//
// It proposes only what Apply would accept, so a stuck condition (the last
// member dead) does not fill the log.
func Decide(c Config, reports map[string]Report, now, leaderSince time.Time, failureTimeout time.Duration) (Command, bool) {
	alive := func(m Member) bool {
		seen := leaderSince
		if r, ok := reports[m.ID]; ok && r.Incarnation == m.Incarnation && r.At.After(seen) {
			seen = r.At
		}
		return now.Sub(seen) <= failureTimeout
	}
	// replaced: a newer run of m's process, at m's address, heartbeats now.
	// The old one cannot be serving (the new one holds its port), and rule
	// 2 replaces it in one step, as "restarted".
	replaced := func(m Member) bool {
		r, ok := reports[m.ID]
		return ok && r.Incarnation != m.Incarnation && r.Addr == m.Addr && now.Sub(r.At) <= failureTimeout
	}
	for _, m := range c.Chain {
		if !alive(m) && !replaced(m) && len(c.Chain) > 1 {
			return Command{Op: OpRemove, Member: m, Epoch: c.Epoch, Reason: "heartbeat lost"}, true
		}
	}
	for _, m := range c.Joining {
		if !alive(m) && !replaced(m) {
			return Command{Op: OpRemove, Member: m, Epoch: c.Epoch, Reason: "heartbeat lost while joining"}, true
		}
	}
	for _, id := range slices.Sorted(maps.Keys(reports)) {
		r := reports[id]
		if now.Sub(r.At) > failureTimeout || c.Has(r.ID, r.Incarnation) {
			continue
		}
		reason := "new node"
		if i, _ := c.find(r.ID); i >= 0 {
			if len(c.Chain) == 1 {
				continue // the last copy restarted empty: nothing to rejoin
			}
			reason = "restarted"
		} else if r.Role == api.Role_REMOVED {
			reason = "removed earlier, back"
		}
		return Command{Op: OpJoin, Member: r.Member, Epoch: c.Epoch, Reason: reason}, true
	}
	if tail, ok := c.Tail(); ok && alive(tail) {
		for _, m := range c.Joining {
			r, ok := reports[m.ID]
			if ok && r.Incarnation == m.Incarnation && r.Epoch == c.Epoch && r.Linked {
				return Command{Op: OpAppend, Member: m, Epoch: c.Epoch, Reason: "caught up with the tail"}, true
			}
		}
	}
	return Command{}, false
}
