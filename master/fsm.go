// Package master is gavel's replicated master: a small Raft group
// (hashicorp/raft, raft-boltdb) that owns the chain configuration
// {epoch, head..tail, joining}, detects crashed nodes from their
// heartbeats, splices them out of the chain, and appends new nodes at the
// tail once they have caught up.
//
// The pieces, from the inside out:
//   - Config and Apply (this file): the configuration and the commands that
//     change it, a pure function that every master applies in Raft log
//     order. Every change raises the epoch by one.
//   - Decide (decide.go): the leader's failure detector and join policy, a
//     pure function of the configuration and the nodes' last heartbeats.
//   - Master (master.go): the process — Raft, the gRPC Master service
//     (Heartbeat, Watch, Status), leases, and the leader loop that turns
//     Decide's commands into Raft entries.
//
// Safety rests on three rules. Decisions are conditional on the epoch they
// were made in, so a deposed leader's late proposal changes nothing. A node
// holds a lease (read and bid service) only while the leader hears from it,
// and every lease runs out before the node can be removed, even across a
// change of leader. The last chain member is never removed: when it dies
// the chain refuses service instead of restarting from an empty state.
package master

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/gavel-auction/gavel/api"
)

// Member is one node incarnation in the configuration.
type Member struct {
	ID          string `json:"id"`
	Addr        string `json:"addr"`
	Incarnation uint64 `json:"incarnation"`
}

// Config is the chain configuration the master group agrees on.
type Config struct {
	Epoch   uint64   `json:"epoch"`
	Chain   []Member `json:"chain"`   // head first
	Joining []Member `json:"joining"` // attached to the tail, catching up
}

// Op names a command.
type Op string

// The commands that change a Config.
const (
	// OpJoin adds a node incarnation: as the whole chain when the chain has
	// never had a member, else as a joining node. An older incarnation of
	// the same id is dropped in the same step.
	OpJoin Op = "join"
	// OpRemove takes a node incarnation out of the chain or the joining list.
	OpRemove Op = "remove"
	// OpAppend moves a joining node to the end of the chain: the new tail.
	OpAppend Op = "append"
	// OpRebuild replaces a chain whose members all went down with the
	// restarted runs of (some of) them, in the order of Command.Chain:
	// the longest durable history first.
	OpRebuild Op = "rebuild"
)

// Command is one entry of the master's Raft log.
type Command struct {
	Op     Op     `json:"op"`
	Member Member `json:"member"`
	// Epoch is the epoch the decision was made in; remove and append apply
	// only if the configuration is still at it.
	Epoch uint64 `json:"epoch,omitempty"`
	// Reason says why, for the logs ("heartbeat lost", "restarted", ...).
	Reason string `json:"reason,omitempty"`
	// Chain is a rebuilt chain, head first (OpRebuild only).
	Chain []Member `json:"chain,omitempty"`
}

// Encode returns the command's log entry.
func (c Command) Encode() []byte {
	b, _ := json.Marshal(c) // a struct of strings and numbers always marshals
	return b
}

// DecodeCommand parses a log entry.
func DecodeCommand(b []byte) (Command, error) {
	var c Command
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("%w: %v", ErrBadCommand, err)
	}
	switch c.Op {
	case OpJoin, OpRemove, OpAppend, OpRebuild:
	default:
		return c, fmt.Errorf("%w: unknown op %q", ErrBadCommand, c.Op)
	}
	if c.Member.ID == "" {
		return c, fmt.Errorf("%w: no member id", ErrBadCommand)
	}
	return c, nil
}

// Clone returns a deep copy.
func (c Config) Clone() Config {
	return Config{Epoch: c.Epoch, Chain: slices.Clone(c.Chain), Joining: slices.Clone(c.Joining)}
}

// find returns where id is: its index in the chain or in the joining
// list (-1 if absent there).
func (c Config) find(id string) (chainPos, joinPos int) {
	chainPos = slices.IndexFunc(c.Chain, func(m Member) bool { return m.ID == id })
	joinPos = slices.IndexFunc(c.Joining, func(m Member) bool { return m.ID == id })
	return chainPos, joinPos
}

// Has reports whether this exact incarnation is in the chain or joining.
func (c Config) Has(id string, incarnation uint64) bool {
	i, j := c.find(id)
	return (i >= 0 && c.Chain[i].Incarnation == incarnation) ||
		(j >= 0 && c.Joining[j].Incarnation == incarnation)
}

// Tail returns the chain's last member, if any.
func (c Config) Tail() (Member, bool) {
	if len(c.Chain) == 0 {
		return Member{}, false
	}
	return c.Chain[len(c.Chain)-1], true
}

// Apply returns the configuration after cmd. It is deterministic: every
// master applies the same log to the same result. A command that does not
// apply (a stale epoch, a member already gone) returns c unchanged and an
// error saying why; a change always raises the epoch by one.
func Apply(c Config, cmd Command) (Config, error) {
	next := c.Clone()
	m := cmd.Member
	i, j := c.find(m.ID)
	switch cmd.Op {
	case OpJoin:
		if c.Has(m.ID, m.Incarnation) {
			return c, fmt.Errorf("%w: %s (incarnation %d) is already a member", ErrNoChange, m.ID, m.Incarnation)
		}
		if i >= 0 {
			// A new run of a chain member's process: its old state is gone.
			if len(c.Chain) == 1 {
				return c, fmt.Errorf("%w: %s restarted but held the last copy of the chain's state", ErrLastMember, m.ID)
			}
			next.Chain = slices.Delete(next.Chain, i, i+1)
		}
		if j >= 0 {
			next.Joining = slices.Delete(next.Joining, j, j+1)
		}
		if c.Epoch == 0 && len(c.Chain) == 0 {
			// The first member of a new chain defines its (empty) history.
			next.Chain = []Member{m}
		} else {
			next.Joining = append(next.Joining, m)
		}
	case OpRemove:
		if cmd.Epoch != c.Epoch {
			return c, fmt.Errorf("%w: decided in epoch %d, now %d", ErrStaleEpoch, cmd.Epoch, c.Epoch)
		}
		switch {
		case i >= 0 && c.Chain[i].Incarnation == m.Incarnation:
			if len(c.Chain) == 1 {
				return c, fmt.Errorf("%w: %s is the chain's only member", ErrLastMember, m.ID)
			}
			next.Chain = slices.Delete(next.Chain, i, i+1)
		case j >= 0 && c.Joining[j].Incarnation == m.Incarnation:
			next.Joining = slices.Delete(next.Joining, j, j+1)
		default:
			return c, fmt.Errorf("%w: %s (incarnation %d) is not a member", ErrNoChange, m.ID, m.Incarnation)
		}
	case OpAppend:
		if cmd.Epoch != c.Epoch {
			return c, fmt.Errorf("%w: decided in epoch %d, now %d", ErrStaleEpoch, cmd.Epoch, c.Epoch)
		}
		if j < 0 || c.Joining[j].Incarnation != m.Incarnation {
			return c, fmt.Errorf("%w: %s (incarnation %d) is not joining", ErrNoChange, m.ID, m.Incarnation)
		}
		next.Chain = append(next.Chain, c.Joining[j])
		next.Joining = slices.Delete(next.Joining, j, j+1)
	case OpRebuild:
		if cmd.Epoch != c.Epoch {
			return c, fmt.Errorf("%w: decided in epoch %d, now %d", ErrStaleEpoch, cmd.Epoch, c.Epoch)
		}
		if len(cmd.Chain) == 0 {
			return c, fmt.Errorf("%w: rebuild with no member", ErrBadCommand)
		}
		seen := map[string]bool{}
		for _, nm := range cmd.Chain {
			k, _ := c.find(nm.ID)
			switch {
			case k < 0 || seen[nm.ID]:
				return c, fmt.Errorf("%w: %s was not a member of the chain, or is named twice", ErrBadCommand, nm.ID)
			case c.Chain[k].Incarnation == nm.Incarnation:
				return c, fmt.Errorf("%w: %s (incarnation %d) never went down", ErrNoChange, nm.ID, nm.Incarnation)
			}
			seen[nm.ID] = true
		}
		next.Chain, next.Joining = slices.Clone(cmd.Chain), nil
	default:
		return c, fmt.Errorf("%w: unknown op %q", ErrBadCommand, cmd.Op)
	}
	next.Epoch = c.Epoch + 1
	return next, nil
}

// Proto returns the configuration as the chain nodes take it.
func (c Config) Proto() *api.ChainConfig {
	p := &api.ChainConfig{Epoch: c.Epoch}
	for _, m := range c.Chain {
		p.Chain = append(p.Chain, m.proto())
	}
	for _, m := range c.Joining {
		p.Joining = append(p.Joining, m.proto())
	}
	return p
}

func (m Member) proto() *api.Member {
	return &api.Member{Id: m.ID, Addr: m.Addr, Incarnation: m.Incarnation}
}

// String shows the configuration as "e7 [n1 n2 n3] +[n4]".
func (c Config) String() string {
	ids := func(ms []Member) []string {
		out := make([]string, len(ms))
		for i, m := range ms {
			out[i] = m.ID
		}
		return out
	}
	s := fmt.Sprintf("e%d %v", c.Epoch, ids(c.Chain))
	if len(c.Joining) > 0 {
		s += fmt.Sprintf(" +%v", ids(c.Joining))
	}
	return s
}
