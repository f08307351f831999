package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/pki"
)

// RefusedMsg is the message of the warning a Guard logs for every call it
// refuses.
const RefusedMsg = "call refused"

// GuardOptions configure a Guard.
type GuardOptions struct {
	// TLS says that the server runs mutual TLS: every caller is known by
	// the role and id its certificate names (pki.PeerOf). Without it,
	// nobody's identity can be checked; only tokens can be.
	TLS bool
	// Secret is auth.secret, which signs bidder and admin tokens; empty
	// is open mode: bidders name themselves.
	Secret []byte
	// Log receives one warning per refused call (RefusedMsg); nil
	// discards them.
	Log *slog.Logger
	// Now is the clock tokens expire by (time.Now if nil).
	Now func() time.Time
}

// Guard decides what the callers of a gRPC server of the cluster (a
// node's, a master's) may do, from what the transport and tokens prove
// and never from what a request claims:
//
//   - with TLS, the caller's certificate names its role and id
//     (gavel://ROLE/ID): a replication stream speaks for the node its
//     certificate names, a heartbeat for that node, and only master and
//     admin certificates change a node's configuration;
//   - with auth.secret, a bid is for the bidder of the caller's token,
//     unless a gateway (which authenticated the bidder itself) or a node
//     (forwarding such a bid) relays it; admin operations need an admin
//     token or certificate.
//
// Every refusal is logged (RefusedMsg, with the method, the peer, its
// address and the reason) and returned as a gRPC status: PermissionDenied,
// or Unauthenticated when a token is missing or invalid. A Guard is safe
// for concurrent use.
type Guard struct {
	tls    bool
	secret []byte
	log    *slog.Logger
	now    func() time.Time

	// mu guards the refusal log's rate limit.
	mu         sync.Mutex
	window     time.Time // start of the current second of refusals
	logged     int       // refusals logged in it
	suppressed int       // refusals not logged since the last one that was
}

// maxRefusalLogs is how many refusals a Guard logs per second; past it, it
// counts them and says how many it left out in the next line it logs.
const maxRefusalLogs = 20

// NewGuard returns a guard with o.
func NewGuard(o GuardOptions) *Guard {
	g := &Guard{tls: o.TLS, log: o.Log, now: o.Now}
	if len(o.Secret) > 0 {
		g.secret = o.Secret
	}
	if g.log == nil {
		g.log = slog.New(slog.DiscardHandler)
	}
	if g.now == nil {
		g.now = time.Now
	}
	return g
}

// TLS reports whether callers are known by their certificates.
func (g *Guard) TLS() bool { return g.tls }

// Open reports whether the guard runs in open mode (no auth.secret).
func (g *Guard) Open() bool { return g.secret == nil }

// Peer returns who made the call of ctx: the role and id its certificate
// names. Without TLS it returns the zero Peer and nil; with TLS, a
// certificate that names no identity is refused.
func (g *Guard) Peer(ctx context.Context) (pki.Peer, error) {
	if !g.tls {
		return pki.Peer{}, nil
	}
	p, err := pki.PeerOf(ctx)
	if err != nil {
		return pki.Peer{}, g.Refuse(ctx, codes.PermissionDenied, pki.Peer{}, err.Error())
	}
	return p, nil
}

// RequireRole returns the caller's identity when its certificate holds
// one of roles, and refuses the call otherwise. Without TLS every caller
// passes, with the zero Peer.
func (g *Guard) RequireRole(ctx context.Context, roles ...pki.Role) (pki.Peer, error) {
	p, err := g.Peer(ctx)
	if err != nil || !g.tls {
		return p, err
	}
	if !p.Is(roles...) {
		return p, g.Refuse(ctx, codes.PermissionDenied, p, fmt.Sprintf("only %s certificates may call this; the caller's is %s",
			roleNames(roles), p))
	}
	return p, nil
}

// Admin lets the call of ctx through when its caller may administer: a
// certificate of role admin or master, or of one of trusted; or an admin
// token (with auth.secret). Without TLS and without auth.secret nobody
// can be told apart, and every call passes. what names the operation in
// the refusal.
func (g *Guard) Admin(ctx context.Context, what string, trusted ...pki.Role) error {
	p, err := g.Peer(ctx)
	if err != nil {
		return err
	}
	ok, why := g.admin(ctx, p, trusted)
	if ok {
		return nil
	}
	// A caller its certificate names is known, only not allowed; one
	// without TLS, or with a token that does not verify, is not known.
	code := codes.PermissionDenied
	if (errors.Is(why, ErrNoToken) && !g.tls) || errors.Is(why, ErrBadToken) || errors.Is(why, ErrBadSignature) ||
		errors.Is(why, ErrTokenExpired) {
		code = codes.Unauthenticated
	}
	return g.Refuse(ctx, code, p, fmt.Sprintf("%s needs an admin certificate or an admin token: %v", what, why))
}

// IsAdmin reports, without logging, whether the call of ctx would pass
// Admin (with no trusted roles).
func (g *Guard) IsAdmin(ctx context.Context) bool {
	p, err := pki.PeerOf(ctx)
	if g.tls && err != nil {
		return false
	}
	ok, _ := g.admin(ctx, p, nil)
	return ok
}

// admin is Admin's decision for caller p, and why not.
func (g *Guard) admin(ctx context.Context, p pki.Peer, trusted []pki.Role) (bool, error) {
	if g.tls && (p.Is(pki.RoleAdmin, pki.RoleMaster) || p.Is(trusted...)) {
		return true, nil
	}
	if !g.tls && g.Open() {
		return true, nil
	}
	if g.Open() {
		return false, fmt.Errorf("the caller's certificate is %s, and tokens are off (no auth.secret)", p)
	}
	tok := IncomingToken(ctx)
	if tok == "" {
		if g.tls {
			return false, fmt.Errorf("%w (the caller's certificate is %s)", ErrNoToken, p)
		}
		return false, ErrNoToken
	}
	c, err := VerifyToken(g.secret, tok, g.now())
	if err != nil {
		return false, err
	}
	if c.Role != RoleAdmin {
		return false, fmt.Errorf("the token of %s has role %s", c.Bidder, c.Role)
	}
	return true, nil
}

// Bidders returns the check of the bidders that the call of ctx (a Bid,
// or every bid of a BidStream) may bid for. Its caller must hold a
// certificate of role client, admin, gateway or node.
func (g *Guard) Bidders(ctx context.Context) (*BidderCheck, error) {
	p, err := g.RequireRole(ctx, pki.RoleClient, pki.RoleAdmin, pki.RoleGateway, pki.RoleNode)
	if err != nil {
		return nil, err
	}
	// A gateway authenticated the bidder itself; a node relays what a
	// gateway or a bidder's token let through at the node it reached.
	anyone := g.Open() || (g.tls && p.Is(pki.RoleGateway, pki.RoleNode))
	return &BidderCheck{g: g, ctx: ctx, peer: p, anyone: anyone}, nil
}

// BidderCheck checks the bidders of one call's bids (see Guard.Bidders).
// It is not safe for concurrent use: one per call, used by the goroutine
// that reads the call's requests.
type BidderCheck struct {
	g      *Guard
	ctx    context.Context
	peer   pki.Peer
	anyone bool // the caller may bid for anyone

	// The last token verified, and its claims.
	lastToken  string
	lastClaims Claims
}

// Anyone reports whether the call may bid for any bidder.
func (b *BidderCheck) Anyone() bool { return b.anyone }

// Token returns the token a bid carries (token, its own) or else the
// call's metadata.
func (b *BidderCheck) Token(token string) string {
	if token != "" {
		return token
	}
	return IncomingToken(b.ctx)
}

// Check lets a bid for bidder through when the call may bid for anyone,
// or when token (the bid's own, or else the call's) is a valid token of
// that bidder; it refuses it otherwise.
func (b *BidderCheck) Check(bidder, token string) error {
	if b.anyone {
		return nil
	}
	tok := b.Token(token)
	if tok == "" {
		return b.g.Refuse(b.ctx, codes.Unauthenticated, b.peer, fmt.Sprintf("a bid for %q needs %s's token "+
			"(gavel bid --token, or auth.secret in the caller's config.yaml)", bidder, bidder))
	}
	c := b.lastClaims
	if tok != b.lastToken {
		var err error
		if c, err = VerifyToken(b.g.secret, tok, b.g.now()); err != nil {
			return b.g.Refuse(b.ctx, codes.Unauthenticated, b.peer, fmt.Sprintf("bid for %q: invalid token: %v", bidder, err))
		}
		b.lastToken, b.lastClaims = tok, c
	} else if b.g.now().Unix() >= c.Expires {
		return b.g.Refuse(b.ctx, codes.Unauthenticated, b.peer, fmt.Sprintf("bid for %q: %v at %s", bidder, ErrTokenExpired,
			time.Unix(c.Expires, 0).UTC().Format(time.RFC3339)))
	}
	if c.Bidder != bidder {
		return b.g.Refuse(b.ctx, codes.PermissionDenied, b.peer, fmt.Sprintf("the token is %s's, the bid is for %q: "+
			"nobody bids under another name", c.Bidder, bidder))
	}
	return nil
}

// Refuse logs the refusal of the call of ctx by caller p (zero without
// TLS) and returns it as a gRPC status with code: "METHOD refused:
// reason". extra are more attributes for the log line.
func (g *Guard) Refuse(ctx context.Context, code codes.Code, p pki.Peer, reason string, extra ...any) error {
	method, _ := grpc.Method(ctx)
	if g.allowLog() {
		who := p.String()
		switch {
		case !g.tls:
			who = "unauthenticated (no TLS)"
		case p == pki.Peer{}:
			who = "unknown"
		}
		attrs := []any{"method", method, "peer", who}
		if pr, ok := peer.FromContext(ctx); ok && pr.Addr != nil {
			attrs = append(attrs, "remote", pr.Addr.String())
		}
		attrs = append(attrs, "code", code.String(), "reason", reason)
		if n := g.takeSuppressed(); n > 0 {
			attrs = append(attrs, "suppressed", n)
		}
		g.log.Warn(RefusedMsg, append(attrs, extra...)...)
	}
	return status.Errorf(code, "%s refused: %s", method, reason)
}

// allowLog reports whether one more refusal may be logged this second,
// and counts it as suppressed otherwise.
func (g *Guard) allowLog() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if now.Sub(g.window) >= time.Second {
		g.window, g.logged = now, 0
	}
	if g.logged >= maxRefusalLogs {
		g.suppressed++
		return false
	}
	g.logged++
	return true
}

// takeSuppressed returns and resets the count of refusals not logged.
func (g *Guard) takeSuppressed() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	n := g.suppressed
	g.suppressed = 0
	return n
}

// roleNames lists roles for a message: "master or admin".
func roleNames(roles []pki.Role) string {
	names := make([]string, len(roles))
	for i, r := range roles {
		names[i] = string(r)
	}
	switch len(names) {
	case 0:
		return "no"
	case 1:
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}
