package master

import "errors"

// Sentinel errors of the master; test for them with errors.Is.
var (
	// ErrBadCommand: a Raft log entry that is not a valid command.
	ErrBadCommand = errors.New("master: malformed command")
	// ErrNoChange: the command would change nothing (a join of a member,
	// a removal of a node already gone).
	ErrNoChange = errors.New("master: no change")
	// ErrStaleEpoch: a decision made in an epoch that has since passed.
	ErrStaleEpoch = errors.New("master: stale epoch")
	// ErrLastMember: the chain's last member is never removed or replaced,
	// since it holds the only copy of every acknowledged bid.
	ErrLastMember = errors.New("master: last chain member")
	// ErrNotLeader: the call needs the Raft leader and no leader is known.
	ErrNotLeader = errors.New("master: no leader")
	// ErrBadHeartbeat: a heartbeat that no node sends (CheckHeartbeat).
	ErrBadHeartbeat = errors.New("master: malformed heartbeat")
)
