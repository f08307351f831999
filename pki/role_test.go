package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

func TestIssueNamesRole(t *testing.T) {
	ca := newCA(t, "gavel CA")
	for _, r := range Roles {
		who := Peer{Role: r, ID: "x-" + string(r)}
		id := issue(t, ca, who, nil, day)
		c := id.Certificate()
		if len(c.URIs) != 1 || c.URIs[0].String() != "gavel://"+string(r)+"/x-"+string(r) {
			t.Errorf("%s: URIs %v, want gavel://%s/x-%s", r, c.URIs, r, r)
		}
		if got, err := id.Peer(); err != nil || got != who {
			t.Errorf("%s: Peer() = %v, %v", r, got, err)
		}
	}
	for _, bad := range []Peer{{"root", "n1"}, {RoleNode, ""}, {RoleNode, "n/1"}, {RoleNode, "a b"}} {
		if _, err := ca.Issue(bad, nil, day); !errors.Is(err, ErrBadIdentity) {
			t.Errorf("Issue(%v): %v, want ErrBadIdentity", bad, err)
		}
	}
}

// cert is a certificate template with a CommonName and URIs, self-signed
// (CertPeer reads names only).
func cert(t *testing.T, cn string, uris ...string) *x509.Certificate {
	t.Helper()
	c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		c.URIs = append(c.URIs, u)
	}
	return c
}

func TestCertPeer(t *testing.T) {
	for _, tc := range []struct {
		cn   string
		uris []string
		want Peer
		err  error
	}{
		{"n2", []string{"gavel://node/n2"}, Peer{RoleNode, "n2"}, nil},
		{"g1", []string{"https://example.com/", "gavel://gateway/g1"}, Peer{RoleGateway, "g1"}, nil},
		{"n2", nil, Peer{}, ErrNoIdentity},
		{"n2", []string{"spiffe://node/n2"}, Peer{}, ErrNoIdentity},
		{"n2", []string{"gavel://node/n3"}, Peer{}, ErrBadIdentity},
		{"n2", []string{"gavel://root/n2"}, Peer{}, ErrBadIdentity},
		{"n2", []string{"gavel://node/n2", "gavel://master/n2"}, Peer{}, ErrBadIdentity},
		{"n2", []string{"gavel://node/n2?x=1"}, Peer{}, ErrBadIdentity},
		{"n2", []string{"gavel://u@node/n2"}, Peer{}, ErrBadIdentity},
		{"", []string{"gavel://node/"}, Peer{}, ErrBadIdentity},
	} {
		got, err := CertPeer(cert(t, tc.cn, tc.uris...))
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil) != (err == nil) {
			t.Errorf("CertPeer(CN %q, %v) = %v, %v; want %v, %v", tc.cn, tc.uris, got, err, tc.want, tc.err)
		}
	}
}

// TestPeerOf reads the caller's identity on a real gRPC server over mutual
// TLS, and reports ErrNoTLS on a plaintext one.
func TestPeerOf(t *testing.T) {
	dir := t.TempDir()
	ca := newCA(t, "gavel CA")
	server := load(t, writeIdentity(t, dir, ca, "n1", "127.0.0.1"))
	caller := load(t, writeIdentity(t, dir, ca, "g7"))

	serve := func(opts ...grpc.ServerOption) (string, <-chan Peer, <-chan error) {
		peers, errs := make(chan Peer, 1), make(chan error, 1)
		opts = append(opts, grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			p, err := PeerOf(ctx)
			peers <- p
			errs <- err
			return h(ctx, req)
		}))
		s := grpc.NewServer(opts...)
		healthpb.RegisterHealthServer(s, health.NewServer())
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = s.Serve(lis) }()
		t.Cleanup(s.Stop)
		return lis.Addr().String(), peers, errs
	}
	call := func(addr string, creds credentials.TransportCredentials) {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
			t.Fatal(err)
		}
	}

	addr, peers, errs := serve(grpc.Creds(credentials.NewTLS(server.ServerConfig())))
	call(addr, caller.ClientCredentials())
	if p, err := <-peers, <-errs; err != nil || p != (Peer{RoleGateway, "g7"}) {
		t.Errorf("PeerOf over TLS = %v, %v; want gateway/g7", p, err)
	}
	addr, peers, errs = serve()
	call(addr, insecure.NewCredentials())
	if p, err := <-peers, <-errs; !errors.Is(err, ErrNoTLS) {
		t.Errorf("PeerOf over plaintext = %v, %v; want ErrNoTLS", p, err)
	}
	if _, err := PeerOf(peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: tls.ConnectionState{}}})); !errors.Is(err, ErrNoIdentity) {
		t.Errorf("PeerOf without a verified chain: %v, want ErrNoIdentity", err)
	}
}

func TestValidID(t *testing.T) {
	for id, want := range map[string]bool{"n1": true, "m-2.a_b": true, "": false, "n 1": false, "n/1": false,
		"é": false, strings.Repeat("x", 64): true, strings.Repeat("x", 65): false, "n1\n": false} {
		if got := ValidID(id); got != want {
			t.Errorf("ValidID(%q) = %v, want %v", id, got, want)
		}
	}
}
