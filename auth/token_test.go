package auth

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var testSecret = []byte("0123456789abcdef-test")

func TestTokenRoundTrip(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, role := range []Role{RoleBidder, RoleAdmin} {
		tok, err := NewToken(testSecret, "alice", role, time.Hour, now)
		if err != nil {
			t.Fatal(err)
		}
		if strings.ContainsAny(tok, "+/= ") {
			t.Errorf("token %q is not URL-safe", tok)
		}
		c, err := VerifyToken(testSecret, tok, now.Add(59*time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		want := Claims{Bidder: "alice", Role: role, IssuedAt: now.Unix(), Expires: now.Add(time.Hour).Unix()}
		if c != want {
			t.Errorf("claims %+v, want %+v", c, want)
		}
	}
}

func TestTokenExpiry(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tok, err := NewToken(testSecret, "alice", RoleBidder, time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Time{now.Add(time.Minute), now.Add(24 * time.Hour)} {
		_, err := VerifyToken(testSecret, tok, at)
		if !errors.Is(err, ErrTokenExpired) || !strings.Contains(err.Error(), "2023-11-14T22:14:20Z") {
			t.Errorf("VerifyToken at %v = %v, want ErrTokenExpired naming the expiry", at, err)
		}
	}
}

func TestTokenTampered(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	tok, err := NewToken(testSecret, "alice", RoleBidder, time.Hour, now)
	if err != nil {
		t.Fatal(err)
	}
	payload, sig, _ := strings.Cut(tok, ".")
	raw, _ := base64.RawURLEncoding.DecodeString(payload)
	// The same token with the role raised to admin, the signature kept.
	forged := base64.RawURLEncoding.EncodeToString([]byte(strings.Replace(string(raw), `"bidder"`, `"admin"`, 1))) + "." + sig
	other, _ := NewToken([]byte("another-secret-of-16+"), "alice", RoleBidder, time.Hour, now)
	flipped := []byte(tok)
	flipped[len(flipped)-1] ^= 1
	for _, tc := range []struct {
		name, token string
		want        error
	}{
		{"role raised", forged, ErrBadSignature},
		{"other secret", other, ErrBadSignature},
		{"signature bit flipped", string(flipped), ErrBadSignature},
		{"signature cut", payload + "." + sig[:10], ErrBadSignature},
		{"no signature", payload, ErrBadToken},
		{"empty", "", ErrBadToken},
		{"three parts", tok + ".x", ErrBadToken},
		{"not base64", payload + ".***", ErrBadToken},
	} {
		if _, err := VerifyToken(testSecret, tc.token, now); !errors.Is(err, tc.want) {
			t.Errorf("%s: VerifyToken = %v, want %v", tc.name, err, tc.want)
		}
	}
	// A validly signed payload that is not a token's is refused too.
	p := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"","role":"king","exp":9999999999}`))
	bad := p + "." + base64.RawURLEncoding.EncodeToString(sign(testSecret, p))
	if _, err := VerifyToken(testSecret, bad, now); !errors.Is(err, ErrBadToken) {
		t.Errorf("signed junk: VerifyToken = %v, want ErrBadToken", err)
	}
}

func TestTokenRefusesBadInput(t *testing.T) {
	now := time.Now()
	if _, err := NewToken(nil, "alice", RoleBidder, time.Hour, now); !errors.Is(err, ErrNoSecret) {
		t.Errorf("no secret: %v", err)
	}
	if _, err := VerifyToken(nil, "x.y", now); !errors.Is(err, ErrNoSecret) {
		t.Errorf("verify without secret: %v", err)
	}
	if _, err := NewToken(testSecret, "al ice", RoleBidder, time.Hour, now); !errors.Is(err, ErrBadName) {
		t.Errorf("bad name: %v", err)
	}
	if _, err := NewToken(testSecret, "alice", "king", time.Hour, now); err == nil {
		t.Error("unknown role accepted")
	}
	if _, err := NewToken(testSecret, "alice", RoleBidder, 0, now); err == nil {
		t.Error("zero lifetime accepted")
	}
}
