package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/pki"
)

// callFrom returns the context of a call whose TLS handshake verified a
// certificate naming who, with token (if any) in its metadata.
func callFrom(who pki.Peer, token string) context.Context {
	c := &x509.Certificate{Subject: pkix.Name{CommonName: who.ID}, URIs: []*url.URL{who.URI()}}
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242},
		AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}}})
	return incoming(ctx, token)
}

// plainCall is the context of a call without TLS, with token (if any).
func plainCall(token string) context.Context {
	return incoming(peer.NewContext(context.Background(), &peer.Peer{Addr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4243}}), token)
}

func incoming(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	return metadata.NewIncomingContext(ctx, metadata.Pairs(MetadataKey, "Bearer "+token))
}

func newTestGuard(tlsOn bool, secret string) (*Guard, *bytes.Buffer) {
	var logs bytes.Buffer
	return NewGuard(GuardOptions{TLS: tlsOn, Secret: []byte(secret), Log: slog.New(slog.NewTextHandler(&logs, nil))}), &logs
}

func token(t *testing.T, bidder string, role Role) string {
	t.Helper()
	tok, err := NewToken(testSecret, bidder, role, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

var (
	node2   = pki.Peer{Role: pki.RoleNode, ID: "n2"}
	gw1     = pki.Peer{Role: pki.RoleGateway, ID: "g1"}
	client1 = pki.Peer{Role: pki.RoleClient, ID: "client"}
	admin1  = pki.Peer{Role: pki.RoleAdmin, ID: "admin"}
	master1 = pki.Peer{Role: pki.RoleMaster, ID: "m1"}
)

// wantCode checks err's gRPC code.
func wantCode(t *testing.T, what string, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Errorf("%s: %v, want %v", what, err, code)
	}
}

func TestGuardRoles(t *testing.T) {
	g, logs := newTestGuard(true, "")
	if p, err := g.RequireRole(callFrom(node2, ""), pki.RoleNode); err != nil || p != node2 {
		t.Errorf("node for a node-only call: %v %v", p, err)
	}
	_, err := g.RequireRole(callFrom(gw1, ""), pki.RoleNode)
	wantCode(t, "gateway for a node-only call", err, codes.PermissionDenied)
	for _, want := range []string{"level=WARN", `msg="call refused"`, "peer=gateway/g1", "remote=127.0.0.1:4242",
		"code=PermissionDenied", `reason="only node certificates may call this; the caller's is gateway/g1"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs.String())
		}
	}
	// A certificate without a gavel identity is refused whatever the call.
	noName := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{
		VerifiedChains: [][]*x509.Certificate{{{Subject: pkix.Name{CommonName: "n2"}}}}}}})
	_, err = g.Peer(noName)
	wantCode(t, "certificate without identity", err, codes.PermissionDenied)
	// Without TLS nobody can be told apart: everyone passes.
	plain, _ := newTestGuard(false, "")
	if _, err := plain.RequireRole(plainCall(""), pki.RoleNode); err != nil {
		t.Errorf("plaintext: %v", err)
	}
}

func TestGuardAdmin(t *testing.T) {
	secret := string(testSecret)
	expiredAdmin, _ := NewToken(testSecret, "root", RoleAdmin, time.Minute, time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		name   string
		tls    bool
		secret string
		ctx    context.Context
		code   codes.Code
	}{
		{"admin certificate", true, "", callFrom(admin1, ""), codes.OK},
		{"master certificate", true, "", callFrom(master1, ""), codes.OK},
		{"client certificate, open mode", true, "", callFrom(client1, ""), codes.PermissionDenied},
		{"gateway certificate", true, secret, callFrom(gw1, ""), codes.PermissionDenied},
		{"node certificate", true, secret, callFrom(node2, ""), codes.PermissionDenied},
		{"client certificate with an expired admin token", true, secret, callFrom(client1, expiredAdmin), codes.Unauthenticated},
		{"client certificate with an admin token", true, secret, callFrom(client1, token(t, "root", RoleAdmin)), codes.OK},
		{"client certificate with a bidder token", true, secret, callFrom(client1, token(t, "alice", RoleBidder)), codes.PermissionDenied},
		{"plaintext, open mode", false, "", plainCall(""), codes.OK},
		{"plaintext, no token", false, secret, plainCall(""), codes.Unauthenticated},
		{"plaintext, forged token", false, secret, plainCall("e30.AAAA"), codes.Unauthenticated},
		{"plaintext, admin token", false, secret, plainCall(token(t, "root", RoleAdmin)), codes.OK},
	} {
		g, _ := newTestGuard(tc.tls, tc.secret)
		wantCode(t, tc.name, g.Admin(tc.ctx, "changing the configuration"), tc.code)
		if g.IsAdmin(tc.ctx) != (tc.code == codes.OK) {
			t.Errorf("%s: IsAdmin = %v", tc.name, !(tc.code == codes.OK))
		}
	}
	g, _ := newTestGuard(true, secret)
	wantCode(t, "gateway trusted to open", g.Admin(callFrom(gw1, ""), "opening", pki.RoleGateway), codes.OK)
}

func TestGuardBidders(t *testing.T) {
	secret := string(testSecret)
	alice, bob := token(t, "alice", RoleBidder), token(t, "bob", RoleBidder)
	expired, _ := NewToken(testSecret, "alice", RoleBidder, time.Minute, time.Now().Add(-time.Hour))
	for _, tc := range []struct {
		name        string
		tls         bool
		secret      string
		ctx         context.Context
		bidToken    string
		code        codes.Code
		wantAnyone  bool
		wantMessage string
	}{
		{"open mode", true, "", callFrom(client1, ""), "", codes.OK, true, ""},
		{"gateway relays", true, secret, callFrom(gw1, ""), "", codes.OK, true, ""},
		{"node relays", true, secret, callFrom(node2, ""), "", codes.OK, true, ""},
		{"master may not bid", true, secret, callFrom(master1, ""), "", codes.PermissionDenied, false, "only client, admin, gateway or node"},
		{"client without token", true, secret, callFrom(client1, ""), "", codes.Unauthenticated, false, `a bid for "alice" needs alice's token`},
		{"client, alice's token in metadata", true, secret, callFrom(client1, alice), "", codes.OK, false, ""},
		{"client, alice's token in the bid", true, secret, callFrom(client1, ""), alice, codes.OK, false, ""},
		{"client, bob's token", true, secret, callFrom(client1, bob), "", codes.PermissionDenied, false, "the token is bob's"},
		{"admin certificate, no token", true, secret, callFrom(admin1, ""), "", codes.Unauthenticated, false, ""},
		{"expired token", true, secret, callFrom(client1, expired), "", codes.Unauthenticated, false, "token expired"},
		{"plaintext, no token", false, secret, plainCall(""), "", codes.Unauthenticated, false, ""},
		{"plaintext, alice's token", false, secret, plainCall(""), alice, codes.OK, false, ""},
		{"plaintext, open mode", false, "", plainCall(""), "", codes.OK, true, ""},
	} {
		g, _ := newTestGuard(tc.tls, tc.secret)
		b, err := g.Bidders(tc.ctx)
		if err == nil {
			if b.Anyone() != tc.wantAnyone {
				t.Errorf("%s: Anyone = %v", tc.name, b.Anyone())
			}
			err = b.Check("alice", tc.bidToken)
		}
		wantCode(t, tc.name, err, tc.code)
		if err != nil && !strings.Contains(err.Error(), tc.wantMessage) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.wantMessage)
		}
	}
}

// A flood of refusals is logged at most maxRefusalLogs times a second; the
// next line says how many were left out.
func TestGuardLogRateLimit(t *testing.T) {
	g, logs := newTestGuard(true, "")
	for range maxRefusalLogs + 5 {
		_, _ = g.RequireRole(callFrom(gw1, ""), pki.RoleNode)
	}
	if n := strings.Count(logs.String(), RefusedMsg); n != maxRefusalLogs {
		t.Errorf("%d lines logged, want %d", n, maxRefusalLogs)
	}
	g.mu.Lock()
	g.window = time.Time{}
	g.mu.Unlock()
	_, _ = g.RequireRole(callFrom(gw1, ""), pki.RoleNode)
	if !strings.Contains(logs.String(), "suppressed=5") {
		t.Errorf("the next line does not count the refusals left out:\n%s", logs.String())
	}
}
