package master

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
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
	// masters are the ids of the group's masters. With TLS, a Raft peer
	// must present a master's certificate (pki.RoleMaster) whose id is one of them: a node's,
	// a gateway's or the tools' certificate, though signed by the same CA,
	// does not admit its holder to the group's Raft.
	masters map[string]bool
	log     *slog.Logger

	// With TLS, acceptLoop accepts and handshakes each connection on a
	// goroutine of its own, so that a peer slow to handshake holds up no
	// other; Accept takes the connections that passed from ready.
	ready     chan net.Conn
	acceptErr chan error
	closed    chan struct{}
	closeOnce sync.Once
}

var _ raft.StreamLayer = (*streamLayer)(nil)

// newStreamLayer listens on bind unless lis is given, and advertises
// advertise to the other masters.
func newStreamLayer(lis net.Listener, bind, advertise string, tlsConf *tls.Config, masters []string, log *slog.Logger) (*streamLayer, error) {
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
	s := &streamLayer{lis: lis, advertise: adv, tls: tlsConf, log: log, masters: map[string]bool{},
		ready: make(chan net.Conn), acceptErr: make(chan error), closed: make(chan struct{})}
	for _, id := range masters {
		s.masters[id] = true
	}
	if tlsConf != nil {
		go s.acceptLoop()
	}
	return s, nil
}

// handshakeTimeout bounds the TLS handshake of an accepted connection.
const handshakeTimeout = 5 * time.Second

// Accept returns the next connection from a peer. With TLS, only
// connections whose handshake passed come out: a peer without a
// certificate of the cluster's CA is refused, and logged, before raft
// reads a byte.
func (s *streamLayer) Accept() (net.Conn, error) {
	if s.tls == nil {
		return s.lis.Accept()
	}
	select {
	case c := <-s.ready:
		return c, nil
	case err := <-s.acceptErr:
		return nil, err
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

// acceptLoop accepts connections until Close and handshakes each on a
// goroutine of its own.
func (s *streamLayer) acceptLoop() {
	for {
		c, err := s.lis.Accept()
		if err != nil {
			select {
			case s.acceptErr <- err: // raft's accept loop backs off and retries
			case <-s.closed:
				return
			}
			continue
		}
		go s.handshake(c)
	}
}

// handshake runs the server side of c's TLS handshake and hands the
// connection to Accept, or logs the refusal and closes it.
func (s *streamLayer) handshake(c net.Conn) {
	tc := tls.Server(c, s.tls)
	_ = tc.SetDeadline(time.Now().Add(handshakeTimeout))
	if err := tc.Handshake(); err != nil {
		pki.LogRefusal(s.log, "refused raft connection: TLS handshake failed", c.RemoteAddr(), err)
		c.Close()
		return
	}
	if peer, ok := s.master(tc); !ok {
		s.log.Warn("refused raft connection: the peer's certificate is not a master's", "remote", c.RemoteAddr().String(),
			"peer_cert", peer, "masters", s.ids())
		c.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	select {
	case s.ready <- tc:
	case <-s.closed:
		tc.Close()
	}
}

// master reports whether tc's peer presented the certificate of one of
// the group's masters (role master, one of the masters' ids), and who the
// certificate names, for logs: ROLE/ID, or its CommonName and why it
// names no identity.
func (s *streamLayer) master(tc *tls.Conn) (string, bool) {
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return "", false
	}
	p, err := pki.CertPeer(certs[0])
	if err != nil {
		return certs[0].Subject.CommonName + " (" + err.Error() + ")", false
	}
	return p.String(), p.Role == pki.RoleMaster && s.masters[p.ID]
}

// ids lists the masters' ids, for logs.
func (s *streamLayer) ids() []string { return slices.Sorted(maps.Keys(s.masters)) }

// Close stops accepting.
func (s *streamLayer) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return s.lis.Close()
}

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
	if peer, ok := s.master(tc); !ok {
		c.Close()
		return nil, fmt.Errorf("%s presents the certificate of %q, not of a master (%v)", address, peer, s.ids())
	}
	_ = tc.SetDeadline(time.Time{})
	return tc, nil
}
