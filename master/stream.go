package master

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/gavel-auction/gavel/pki"
)

// streamLayer carries hashicorp/raft's transport between masters over TCP,
// optionally with mutual TLS. It accepts on a listener the caller may have
// opened already (so a test never races for a port) and dials peers'
// raft_addr.
type streamLayer struct {
	lis       net.Listener
	advertise net.Addr
	// tls, when set, wraps every accepted and dialed connection: the
	// server side requires and verifies the peer's certificate, the client
	// side verifies the server's.
	tls *tls.Config
	log *slog.Logger
}

var _ raft.StreamLayer = (*streamLayer)(nil)

// newStreamLayer listens on bind unless lis is given, and advertises
// advertise to the other masters.
func newStreamLayer(lis net.Listener, bind, advertise string, tlsConf *tls.Config, log *slog.Logger) (*streamLayer, error) {
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("raft_addr %q: %w", advertise, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return nil, fmt.Errorf("raft_addr %q: not an address other masters can reach", advertise)
	}
	if lis == nil {
		if lis, err = net.Listen("tcp", bind); err != nil {
			return nil, err
		}
	}
	return &streamLayer{lis: lis, advertise: adv, tls: tlsConf, log: log}, nil
}

// Accept returns the next connection from a peer. With TLS the handshake
// runs here, so that a peer without a certificate of the cluster's CA is
// refused, and logged, before raft reads a byte.
func (s *streamLayer) Accept() (net.Conn, error) {
	for {
		c, err := s.lis.Accept()
		if err != nil || s.tls == nil {
			return c, err
		}
		tc := tls.Server(c, s.tls)
		_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err != nil {
			pki.LogRefusal(s.log, "refused raft connection: TLS handshake failed", c.RemoteAddr(), err)
			c.Close()
			continue
		}
		_ = tc.SetDeadline(time.Time{})
		return tc, nil
	}
}

// Close stops accepting.
func (s *streamLayer) Close() error { return s.lis.Close() }

// Addr is the address other masters reach this one at.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Dial connects to the master at address.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", string(address))
	if err != nil || s.tls == nil {
		return c, err
	}
	conf := s.tls.Clone()
	if conf.ServerName == "" {
		host, _, _ := net.SplitHostPort(string(address))
		conf.ServerName = host
	}
	tc := tls.Client(c, conf)
	_ = tc.SetDeadline(time.Now().Add(timeout))
	if err := tc.Handshake(); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake with %s: %w", address, err)
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}
