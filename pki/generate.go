package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// CAValidity is the validity of the CA that gavel certs init makes (longer
// only to cover certificates asked for longer).
const CAValidity = 10 * 365 * 24 * time.Hour

// clockSkew backdates every certificate's start, so that a machine whose
// clock runs a little behind the issuer's accepts it at once.
const clockSkew = time.Hour

// loopback are the names every process certificate holds besides its own
// hosts, so that a process is reachable on the machine it runs on.
var loopback = []string{"127.0.0.1", "::1", "localhost"}

// KeyPair is a certificate and its private key, both PEM-encoded.
type KeyPair struct {
	CertPEM []byte // one CERTIFICATE block
	KeyPEM  []byte // one PKCS #8 PRIVATE KEY block
}

// CA is a certificate authority that signs the certificates of a cluster's
// processes.
type CA struct {
	Cert *x509.Certificate // self-signed
	Key  *ecdsa.PrivateKey // signs the certificates of Issue
	pair KeyPair           // Cert and Key, PEM-encoded
}

// NewCA makes a self-signed CA: an ECDSA P-256 key and a certificate named
// name, valid for validFor from now.
func NewCA(name string, validFor time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"gavel"}, CommonName: name},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(validFor),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("signing the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key, pair: KeyPair{CertPEM: encodeCert(der), KeyPEM: keyPEM}}, nil
}

// PEM returns the CA's certificate and private key, PEM-encoded.
func (ca *CA) PEM() KeyPair { return ca.pair }

// Issue makes the certificate of who (a process id with its role), signed
// by the CA: a new ECDSA P-256 key, CommonName who.ID, usable by servers
// and clients alike, valid for validFor from now. Its subject alternative
// names are the URI gavel://ROLE/ID (see CertPeer), hosts (IP addresses
// and DNS names; see Hosts) and the loopback names 127.0.0.1, ::1 and
// localhost. An unknown role or an invalid id wraps ErrBadIdentity.
func (ca *CA) Issue(who Peer, hosts []string, validFor time.Duration) (KeyPair, error) {
	if err := who.check(); err != nil {
		return KeyPair{}, err
	}
	id := who.ID
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return KeyPair{}, fmt.Errorf("generating the key of %s: %w", id, err)
	}
	serial, err := newSerial()
	if err != nil {
		return KeyPair{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"gavel"}, CommonName: id},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(validFor),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{who.URI()},
	}
	for _, h := range Hosts(append(slices.Clone(hosts), loopback...)...) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return KeyPair{}, fmt.Errorf("signing the certificate of %s: %w", id, err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return KeyPair{}, err
	}
	return KeyPair{CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

// Hosts returns the host parts of addrs (host:port, or a bare host), each
// once, in order: the names a certificate must hold for a process reached
// at those addresses. Empty and unspecified hosts (0.0.0.0, ::) are left
// out: nobody connects to them.
func Hosts(addrs ...string) []string {
	var out []string
	for _, a := range addrs {
		h := a
		if host, _, err := net.SplitHostPort(a); err == nil {
			h = host
		}
		if ip := net.ParseIP(h); ip != nil {
			if ip.IsUnspecified() {
				continue
			}
			h = ip.String()
		}
		if h != "" && !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// WriteKeyPair writes kp's certificate to certFile (mode 0644) and its key
// to keyFile (mode 0600), making their directories as needed. An existing
// file is an error wrapping ErrExists unless overwrite is set.
func WriteKeyPair(certFile, keyFile string, kp KeyPair, overwrite bool) error {
	if err := writeFile(certFile, kp.CertPEM, 0o644, overwrite); err != nil {
		return err
	}
	return writeFile(keyFile, kp.KeyPEM, 0o600, overwrite)
}

// writeFile writes data to path with mode perm. Without overwrite, an
// existing path is an error wrapping ErrExists. With overwrite, data goes
// to a temporary file beside path, which then replaces it: a process
// reading path meanwhile sees the old file or the new one, never a part,
// and a failed write leaves the old file.
func writeFile(path string, data []byte, perm fs.FileMode, overwrite bool) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	if !overwrite {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s: %w", path, ErrExists)
		}
		if err != nil {
			return err
		}
		return fill(f, data, perm)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, there is nothing to remove
	if err := fill(f, data, perm); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// fill sets f's mode to perm (whatever the umask), writes data and closes
// f.
func fill(f *os.File, data []byte, perm fs.FileMode) error {
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// newSerial returns a random 128-bit certificate serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("drawing a serial number: %w", err)
	}
	return n, nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}
