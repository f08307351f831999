package pki

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Role is what the holder of a certificate is in the cluster. Every
// certificate that CA.Issue makes names one, with the holder's id, in a
// URI subject alternative name gavel://ROLE/ID; servers take a peer's
// identity from there (PeerOf), never from what its messages claim.
type Role string

// The roles of a cluster's certificates.
const (
	// RoleMaster is a master of the Raft group.
	RoleMaster Role = "master"
	// RoleNode is a chain node.
	RoleNode Role = "node"
	// RoleGateway is a WebSocket gateway: it relays the bids of bidders it
	// has authenticated.
	RoleGateway Role = "gateway"
	// RoleClient is a command-line tool acting for a bidder (gavel bid,
	// result, auctions).
	RoleClient Role = "client"
	// RoleAdmin is an operator's tool: it may change the chain's
	// configuration by hand and open auctions.
	RoleAdmin Role = "admin"
)

// Roles lists every role, in the order above.
var Roles = []Role{RoleMaster, RoleNode, RoleGateway, RoleClient, RoleAdmin}

// URIScheme is the scheme of the URI that names a certificate's role and
// id: gavel://node/n2.
const URIScheme = "gavel"

// ValidID reports whether id can name a process in a certificate: 1 to 64
// ASCII letters, digits, '.', '_' and '-' (short, and safe in a URI path,
// logs and metric labels). It runs on every replication message: no
// regular expression.
func ValidID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// Peer is who a certificate names: its holder's role and id.
type Peer struct {
	Role Role
	ID   string
}

// String is ROLE/ID, as logs show it: "node/n2".
func (p Peer) String() string { return string(p.Role) + "/" + p.ID }

// Is reports whether p holds one of roles.
func (p Peer) Is(roles ...Role) bool { return slices.Contains(roles, p.Role) }

// URI is the subject alternative name that names p: gavel://ROLE/ID.
func (p Peer) URI() *url.URL {
	return &url.URL{Scheme: URIScheme, Host: string(p.Role), Path: "/" + p.ID}
}

// check returns an error wrapping ErrBadIdentity unless p's role is known
// and its id valid.
func (p Peer) check() error {
	if !slices.Contains(Roles, p.Role) {
		return fmt.Errorf("%w: unknown role %q (want one of %s)", ErrBadIdentity, p.Role, roleList())
	}
	if !ValidID(p.ID) {
		return fmt.Errorf("%w: invalid id %q: use 1 to 64 letters, digits, '.', '_' and '-'", ErrBadIdentity, p.ID)
	}
	return nil
}

// roleList is the known roles, for messages: "master, node, ...".
func roleList() string {
	names := make([]string, len(Roles))
	for i, r := range Roles {
		names[i] = string(r)
	}
	return strings.Join(names, ", ")
}

// CertPeer returns the role and id that certificate c names: its one
// gavel://ROLE/ID URI, whose id must also be its CommonName. A
// certificate without such a URI (made before roles, or by hand without
// one) wraps ErrNoIdentity; a malformed or contradictory one wraps
// ErrBadIdentity.
func CertPeer(c *x509.Certificate) (Peer, error) {
	var found []Peer
	for _, u := range c.URIs {
		if u.Scheme != URIScheme {
			continue
		}
		p := Peer{Role: Role(u.Host), ID: strings.TrimPrefix(u.Path, "/")}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
			return Peer{}, fmt.Errorf("%w: malformed %s URI %q", ErrBadIdentity, URIScheme, u)
		}
		if err := p.check(); err != nil {
			return Peer{}, err
		}
		found = append(found, p)
	}
	switch {
	case len(found) == 0:
		return Peer{}, fmt.Errorf("%w: certificate %q has no %s://ROLE/ID name; issue it again with gavel certs init",
			ErrNoIdentity, c.Subject.CommonName, URIScheme)
	case len(found) > 1:
		return Peer{}, fmt.Errorf("%w: certificate %q names %d identities", ErrBadIdentity, c.Subject.CommonName, len(found))
	case found[0].ID != c.Subject.CommonName:
		return Peer{}, fmt.Errorf("%w: certificate names %s but its CommonName is %q", ErrBadIdentity, found[0], c.Subject.CommonName)
	}
	return found[0], nil
}

// PeerOf returns who made the gRPC call of ctx, from the certificate its
// TLS handshake verified. A call that came without TLS (a plaintext
// server) wraps ErrNoTLS; one whose certificate names no valid identity
// wraps ErrNoIdentity or ErrBadIdentity.
func PeerOf(ctx context.Context) (Peer, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return Peer{}, ErrNoTLS
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return Peer{}, ErrNoTLS
	}
	// The server verified the chain: its first certificate is the peer's.
	if len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Peer{}, fmt.Errorf("%w: the peer presented no verified certificate", ErrNoIdentity)
	}
	return CertPeer(info.State.VerifiedChains[0][0])
}
