package master

import (
	"cmp"
	"fmt"
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
	// Durable is the last seq on the node's stable storage.
	Durable uint64
	At      time.Time // when the leader received it
	// Since is when the leader first heard from this incarnation.
	Since time.Time
}

// RebuildWait is how long, in failure timeouts, the leader waits for every
// member of a chain that went down whole to come back before it rebuilds
// the chain from the members that did.
const RebuildWait = 10

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
// Before these, a whole-chain outage: when every member of the chain is
// down (silent for failureTimeout, or restarted), nobody is removed; the
// leader waits until every member's restarted run heartbeats (or, after
// RebuildWait failure timeouts, until at least one does) and rebuilds the
// chain from them in one new epoch, the longest durable history first (the
// head), the others in decreasing order, each catching up from its
// predecessor. See rebuild.
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
	outage := len(c.Chain) > 0 && !slices.ContainsFunc(c.Chain, func(m Member) bool { return alive(m) && !replaced(m) })
	if outage {
		if cmd, ok := rebuild(c, reports, now, failureTimeout); ok {
			return cmd, true
		}
	}
	for _, m := range c.Chain {
		if !outage && !alive(m) && !replaced(m) && len(c.Chain) > 1 {
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
			if outage {
				continue // it will be part of the rebuilt chain
			}
			if !otherHeardSince(c, reports, r) {
				// Every member may have restarted at once (a power cut):
				// replace this one only once another member's old run has
				// heartbeated since (the chain is up), else the chain goes
				// down whole and rebuild takes every member's history.
				// Not every other member: two members restarted while the
				// others run would then wait for each other forever.
				continue
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

// rebuild is Decide in a whole-chain outage. Every member of the chain
// held every committed update on stable storage (a reply leaves only once
// the update is on the disk of every member), and every member writes
// the one sequence of updates the chain's heads sequenced, in order, so
// the members' durable histories are prefixes of one another (whichever
// member's disk ran ahead): the longest holds everything any of them
// holds, every acknowledged update included. It becomes the head; the
// others follow in decreasing order, so each one's history is again a
// prefix of its predecessor's, and each catches up by the link handshake.
// Updates past the longest history's end were never acknowledged.
func rebuild(c Config, reports map[string]Report, now time.Time, failureTimeout time.Duration) (Command, bool) {
	var back []Report
	var earliest time.Time
	for _, m := range c.Chain {
		r, ok := reports[m.ID]
		if !ok || r.Incarnation == m.Incarnation || now.Sub(r.At) > failureTimeout {
			continue
		}
		back = append(back, r)
		if earliest.IsZero() || r.Since.Before(earliest) {
			earliest = r.Since
		}
	}
	if len(back) == 0 || (len(back) < len(c.Chain) && now.Sub(earliest) < RebuildWait*failureTimeout) {
		return Command{}, false
	}
	// Stable: among equal histories the old chain order stands.
	slices.SortStableFunc(back, func(a, b Report) int { return cmp.Compare(b.Durable, a.Durable) })
	chain := make([]Member, len(back))
	for i, r := range back {
		chain[i] = r.Member
	}
	reason := fmt.Sprintf("every member was down: rebuilt from %d of %d, head %s with the longest durable history (seq %d)",
		len(back), len(c.Chain), back[0].ID, back[0].Durable)
	return Command{Op: OpRebuild, Member: chain[0], Chain: chain, Epoch: c.Epoch, Reason: reason}, true
}

// otherHeardSince reports whether a chain member other than r's node
// heartbeated, as the incarnation in c, after r's incarnation first did.
func otherHeardSince(c Config, reports map[string]Report, r Report) bool {
	for _, m := range c.Chain {
		if m.ID == r.ID {
			continue
		}
		if o, ok := reports[m.ID]; ok && o.Incarnation == m.Incarnation && o.At.After(r.Since) {
			return true
		}
	}
	return false
}
