package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gavel-auction/gavel/auction"
)

// Role is what a token lets its bidder do.
type Role string

// The roles a token may carry.
const (
	// RoleBidder may bid (under the token's name only), read and watch.
	RoleBidder Role = "bidder"
	// RoleAdmin may also open auctions.
	RoleAdmin Role = "admin"
)

// Claims are the contents of a bidder token.
type Claims struct {
	// Bidder is the name the token's holder bids under.
	Bidder string `json:"sub"`
	// Role is RoleBidder or RoleAdmin.
	Role Role `json:"role"`
	// IssuedAt and Expires are Unix seconds; the token is valid before
	// Expires.
	IssuedAt int64 `json:"iat"`
	Expires  int64 `json:"exp"`
}

// A token is PAYLOAD.SIGNATURE: PAYLOAD is the JSON of its Claims and
// SIGNATURE the HMAC-SHA256 of the PAYLOAD text under the secret, both in
// unpadded base64url, so that a token fits in a URL (?token=) as it is.

var b64 = base64.RawURLEncoding

// NewToken signs a token for bidder with role, valid for ttl from now.
func NewToken(secret []byte, bidder string, role Role, ttl time.Duration, now time.Time) (string, error) {
	if ttl <= 0 {
		return "", fmt.Errorf("token lifetime must be positive, got %v", ttl)
	}
	return SignToken(secret, Claims{Bidder: bidder, Role: role, IssuedAt: now.Unix(), Expires: now.Add(ttl).Unix()})
}

// SignToken returns the token carrying c, signed with secret. The bidder
// name must be valid (see ErrBadName) and the role known.
func SignToken(secret []byte, c Claims) (string, error) {
	if len(secret) == 0 {
		return "", ErrNoSecret
	}
	if err := checkClaims(c); err != nil {
		return "", err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	p := b64.EncodeToString(payload)
	return p + "." + b64.EncodeToString(sign(secret, p)), nil
}

// VerifyToken checks token's signature under secret and its expiry at now
// and returns its claims. Errors wrap ErrBadToken, ErrBadSignature or
// ErrTokenExpired, with a message fit for the person holding the token.
func VerifyToken(secret []byte, token string, now time.Time) (Claims, error) {
	if len(secret) == 0 {
		return Claims{}, ErrNoSecret
	}
	p, s, ok := strings.Cut(strings.TrimSpace(token), ".")
	if !ok || p == "" || s == "" || strings.Contains(s, ".") {
		return Claims{}, fmt.Errorf("%w: want PAYLOAD.SIGNATURE as printed by gavel token", ErrBadToken)
	}
	sig, err := b64.DecodeString(s)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: the signature is not base64url", ErrBadToken)
	}
	// Check the signature before looking inside: nothing unsigned is parsed.
	if !hmac.Equal(sig, sign(secret, p)) {
		return Claims{}, fmt.Errorf("%w: the token was altered, or signed with another auth.secret", ErrBadSignature)
	}
	payload, err := b64.DecodeString(p)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: the payload is not base64url", ErrBadToken)
	}
	var c Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Claims{}, fmt.Errorf("%w: the payload is not a token's JSON", ErrBadToken)
	}
	if err := checkClaims(c); err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if now.Unix() >= c.Expires {
		return Claims{}, fmt.Errorf("%w at %s: get a new one with gavel token",
			ErrTokenExpired, time.Unix(c.Expires, 0).UTC().Format(time.RFC3339))
	}
	return c, nil
}

// sign is the HMAC-SHA256 of payload under secret.
func sign(secret []byte, payload string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// checkClaims checks the bidder name and the role.
func checkClaims(c Claims) error {
	if err := CheckName(c.Bidder); err != nil {
		return err
	}
	if c.Role != RoleBidder && c.Role != RoleAdmin {
		return fmt.Errorf("unknown role %q (want %s or %s)", c.Role, RoleBidder, RoleAdmin)
	}
	return nil
}

// CheckName returns an error wrapping ErrBadName unless s is a usable
// bidder name: 1..auction.MaxIDLen bytes of UTF-8 without white space or
// control characters (so that it is one word of the gateway's text
// protocol).
func CheckName(s string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: empty", ErrBadName)
	case len(s) > auction.MaxIDLen:
		return fmt.Errorf("%w: longer than %d bytes", ErrBadName, auction.MaxIDLen)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: not UTF-8", ErrBadName)
	case strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return fmt.Errorf("%w %q: no spaces or control characters", ErrBadName, s)
	}
	return nil
}
