package gateway

import "errors"

// Sentinel errors of the gateway. Functions wrap them with details; test
// with errors.Is.
var (
	// ErrNoNodes is returned by New when Options lists no node address.
	ErrNoNodes = errors.New("no node address given")
	// ErrNoID is returned by New when Options has no gateway id.
	ErrNoID = errors.New("no gateway id given")

	// ErrNoToken is returned when a gateway in auth mode gets a request
	// without a bearer token.
	ErrNoToken = errors.New("missing token")
	// ErrBadToken is returned by VerifyToken for a token that is not
	// PAYLOAD.SIGNATURE in base64url, or whose payload does not decode.
	ErrBadToken = errors.New("malformed token")
	// ErrBadSignature is returned by VerifyToken when the signature does not
	// match the payload under the secret: a forged or altered token, or one
	// signed with another secret.
	ErrBadSignature = errors.New("token signature does not match")
	// ErrTokenExpired is returned by VerifyToken for a token past its expiry.
	ErrTokenExpired = errors.New("token expired")
	// ErrNoSecret is returned by SignToken and VerifyToken when the secret
	// is empty (the gateway runs in open mode).
	ErrNoSecret = errors.New("no auth secret")

	// ErrBadName is returned for a bidder name that is empty, too long, not
	// UTF-8, or holds white space or control characters.
	ErrBadName = errors.New("invalid bidder name")

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
