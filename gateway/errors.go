package gateway

import "errors"

// Sentinel errors of the gateway. Functions wrap them with details; test
// with errors.Is.
var (
	// ErrNoNodes is returned by New when Options lists no node address.
	ErrNoNodes = errors.New("no node address given")
	// ErrNoID is returned by New when Options has no gateway id.
	ErrNoID = errors.New("no gateway id given")

	// ErrStopped is returned by calls that need the gateway after Stop.
	ErrStopped = errors.New("gateway stopped")

	// ErrQueueClosed is returned by a connection's outgoing queue once the
	// connection is closing.
	ErrQueueClosed = errors.New("connection closing")

	// errTooManyWatches answers a watch past Options.MaxWatches on one
	// connection.
	errTooManyWatches = errors.New("too many watches on this connection")
	// errTooManyConnections answers a login as a bidder that has
	// Options.MaxConnectionsPerBidder connections.
	errTooManyConnections = errors.New("too many connections for this bidder")
	// errDropped ends an upstream stream whose upstream the hub no longer
	// holds (nobody needs it any more).
	errDropped = errors.New("upstream dropped")
)
