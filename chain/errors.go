package chain

import "errors"

// Errors a replica returns to the edge. The gRPC layer maps each to a
// status code; ErrNotHead and ErrNotTail make it forward the call instead.
var (
	// ErrNotHead is returned when a bid or open reaches a node that is not the head.
	ErrNotHead = errors.New("not the chain head")
	// ErrNotTail is returned when a read reaches a node that is not the tail.
	ErrNotTail = errors.New("not the chain tail")
	// ErrNotReady is returned by a new tail that has not yet applied
	// everything its predecessor had committed, so it cannot serve reads.
	ErrNotReady = errors.New("tail still catching up")
	// ErrNoConfig is returned before the node has received any configuration.
	ErrNoConfig = errors.New("no chain configuration yet")
	// ErrRemoved is returned by a node that the current configuration leaves out.
	ErrRemoved = errors.New("node removed from the chain")
	// ErrStaleEpoch is returned by Reconfigure for an epoch not above the current one.
	ErrStaleEpoch = errors.New("stale configuration epoch")
	// ErrBadConfig is returned by Reconfigure for a malformed configuration.
	ErrBadConfig = errors.New("malformed chain configuration")
	// ErrHeadChanged is returned to clients waiting at a head that stopped
	// being head before their update committed; a retry with the same
	// request id at the new head returns the outcome exactly once.
	ErrHeadChanged = errors.New("head changed before the update committed; retry")
	// ErrNoLease is returned by a tail asked to read, or a head asked to
	// sequence, while it holds no lease from the master: it may have been
	// removed from the chain without knowing it yet.
	ErrNoLease = errors.New("no lease from the master: cannot serve now")
	// ErrMasterOwned is returned by Admin.SetConfig on a node that follows
	// a master: only the master changes its configuration.
	ErrMasterOwned = errors.New("this node's configuration is owned by the master (masters in config.yaml); " +
		"reconfigure by hand only runs without masters")
	// ErrUnavailable is returned by the edge when the chain cannot serve a
	// request in time (no head reachable, shutting down).
	ErrUnavailable = errors.New("chain unavailable")
	// ErrBadMessage is returned by CheckMessage for a replication message
	// that no replica sends; Step drops such a message, changing nothing.
	ErrBadMessage = errors.New("malformed replication message")
)
