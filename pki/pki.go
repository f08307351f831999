// Package pki makes and loads the certificates of gavel's mutual TLS.
//
// A cluster has one certificate authority (NewCA); every process, and the
// command-line tools, hold a certificate signed by it (CA.Issue), named
// after the process id and valid for the hosts it is reached at. A
// certificate also names its holder's role (master, node, gateway, client
// or admin) in a URI, gavel://ROLE/ID: a server learns who calls it from
// the certificate the call's TLS handshake verified (PeerOf), and decides
// what the caller may do from that alone. Load reads
// a process's certificate, key and the CA file into an Identity, which
// gives the tls.Config of each role: a gRPC server that requires a client
// certificate of the CA (ServerConfig), a client that verifies the server
// and presents its own certificate (ClientConfig), both at once for the
// masters' Raft links (PeerConfig), and an HTTPS server for browsers and
// wscat, which present none (HTTPSConfig). ServerCredentials logs every
// connection it refuses, with the reason, so that an operator can tell a
// misissued certificate from a plaintext client.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// MinVersion is the oldest TLS version any gavel endpoint accepts.
const MinVersion = tls.VersionTLS12

// Identity is a process's certificate and private key, with the pool of
// CA certificates it trusts. It is immutable; each method returns a new
// tls.Config.
type Identity struct {
	cert tls.Certificate // Leaf is set
	pool *x509.CertPool
}

// Parse builds an Identity from PEM data: the CA certificates (one or
// more, as during a change of CA), the process's certificate (possibly
// followed by intermediates) and its private key (PKCS #8, SEC 1 or
// PKCS #1). It checks that the key is the certificate's, not that the CA
// signed the certificate: Load does that.
func Parse(caPEM, certPEM, keyPEM []byte) (*Identity, error) {
	return parse(source{"CA certificate", "", caPEM}, source{"certificate", "", certPEM}, source{"private key", "", keyPEM})
}

// Load reads a process's identity from files: the CA file (tls.ca), the
// process's certificate and its private key. Every error names the file it
// is about; the certificate must be valid under the CA now (see
// ErrUntrusted).
func Load(caFile, certFile, keyFile string) (*Identity, error) {
	ca, err := readSource("CA certificate", caFile)
	if err != nil {
		return nil, err
	}
	crt, err := readSource("certificate", certFile)
	if err != nil {
		return nil, err
	}
	key, err := readSource("private key", keyFile)
	if err != nil {
		return nil, err
	}
	id, err := parse(ca, crt, key)
	if err != nil {
		return nil, err
	}
	if err := id.verify(); err != nil {
		return nil, fmt.Errorf("certificate %s: %w %s: %w", certFile, ErrUntrusted, caFile, err)
	}
	return id, nil
}

// LoadPool reads a CA file into a certificate pool, for a program that
// only verifies servers (such as a wss client of a gateway).
func LoadPool(caFile string) (*x509.CertPool, error) {
	src, err := readSource("CA certificate", caFile)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(src)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// Certificate returns the process's own certificate.
func (id *Identity) Certificate() *x509.Certificate { return id.cert.Leaf }

// Peer returns the role and id the process's certificate names (see
// CertPeer).
func (id *Identity) Peer() (Peer, error) { return CertPeer(id.cert.Leaf) }

// Pool returns the CA certificates the identity trusts.
func (id *Identity) Pool() *x509.CertPool { return id.pool }

// ServerConfig is the TLS configuration of a gRPC server: it presents the
// process's certificate and requires a client certificate signed by the CA.
func (id *Identity) ServerConfig() *tls.Config {
	return &tls.Config{MinVersion: MinVersion, Certificates: []tls.Certificate{id.cert},
		ClientCAs: id.pool, ClientAuth: tls.RequireAndVerifyClientCert}
}

// ClientConfig is the TLS configuration of a client of gavel's servers: it
// verifies the server's certificate against the CA, for the host it dials
// (the dialer sets ServerName), and presents the process's certificate.
// It presents it even to a server that names other CAs (crypto/tls would
// send none), so that such a server can log which certificate it refused.
func (id *Identity) ClientConfig() *tls.Config {
	c := &tls.Config{MinVersion: MinVersion, Certificates: []tls.Certificate{id.cert}, RootCAs: id.pool}
	id.presentAlways(c)
	return c
}

// PeerConfig serves as both ServerConfig and ClientConfig, for a link
// whose two ends are alike (the masters' Raft transport): tls.Server
// requires and verifies the peer's certificate, tls.Client verifies the
// server's and presents the process's own.
func (id *Identity) PeerConfig() *tls.Config {
	c := id.ServerConfig()
	c.RootCAs = id.pool
	id.presentAlways(c)
	return c
}

// presentAlways makes c's client side present the process's certificate
// whatever the server asks for.
func (id *Identity) presentAlways(c *tls.Config) {
	cert := id.cert
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
}

// HTTPSConfig is the TLS configuration of a server for browsers and
// programs such as wscat: it presents the process's certificate and asks
// for none.
func (id *Identity) HTTPSConfig() *tls.Config {
	return &tls.Config{MinVersion: MinVersion, Certificates: []tls.Certificate{id.cert}}
}

// verify checks the certificate against the CA pool at the current time.
func (id *Identity) verify() error {
	inter := x509.NewCertPool()
	for _, der := range id.cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	_, err := id.cert.Leaf.Verify(x509.VerifyOptions{Roots: id.pool, Intermediates: inter,
		CurrentTime: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}

// source is the content of one PEM file, with what it is and where it
// comes from for error messages.
type source struct {
	what, path string
	data       []byte
}

// name is how errors refer to the source: "certificate certs/n1.crt".
func (s source) name() string {
	if s.path == "" {
		return s.what
	}
	return s.what + " " + s.path
}

func readSource(what, path string) (source, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return source{}, fmt.Errorf("%s %s: %w", what, path, err)
	}
	return source{what, path, b}, nil
}

func parse(ca, crt, key source) (*Identity, error) {
	roots, err := parseCerts(ca)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range roots {
		pool.AddCert(c)
	}
	chain, err := parseCerts(crt)
	if err != nil {
		return nil, err
	}
	priv, err := parseKey(key)
	if err != nil {
		return nil, err
	}
	pub, ok := priv.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(chain[0].PublicKey) {
		return nil, fmt.Errorf("%s and %s: %w", key.name(), crt.name(), ErrKeyMismatch)
	}
	cert := tls.Certificate{PrivateKey: priv, Leaf: chain[0]}
	for _, c := range chain {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return &Identity{cert: cert, pool: pool}, nil
}

// parseCerts returns every CERTIFICATE block of s, at least one.
func parseCerts(s source) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	rest := s.data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name(), err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: %w: want a -----BEGIN CERTIFICATE----- block", s.name(), ErrNotPEM)
	}
	return out, nil
}

// parseKey returns the first private key block of s.
func parseKey(s source) (crypto.Signer, error) {
	rest := s.data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return nil, fmt.Errorf("%s: %w: want a -----BEGIN PRIVATE KEY----- block", s.name(), ErrNotPEM)
		}
		var (
			key any
			err error
		)
		switch b.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(b.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(b.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(b.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.name(), err)
		}
		switch k := key.(type) {
		case *ecdsa.PrivateKey:
			return k, nil
		case *rsa.PrivateKey:
			return k, nil
		case ed25519.PrivateKey:
			return k, nil
		}
		return nil, fmt.Errorf("%s: unsupported key type %T", s.name(), key)
	}
}
