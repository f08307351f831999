package auth

import "errors"

// Sentinel errors of the package. Functions wrap them with details fit
// for the person holding the token; test with errors.Is.
var (
	// ErrNoToken is returned when a request that needs a bearer token
	// (a gateway in auth mode, a node checking a bidder) carries none.
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
	// is empty (the cluster runs in open mode).
	ErrNoSecret = errors.New("no auth secret")
	// ErrBadName is returned for a bidder name that is empty, too long, not
	// UTF-8, or holds white space or control characters.
	ErrBadName = errors.New("invalid bidder name")
)
