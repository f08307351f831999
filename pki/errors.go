package pki

import "errors"

// Sentinel errors of the package, wrapped in messages that name the file
// concerned; test for them with errors.Is. A file that cannot be read wraps
// the os error, so errors.Is(err, fs.ErrNotExist) tells a missing file.
var (
	// ErrNotPEM is returned when a certificate or key file holds no PEM
	// block of the expected kind.
	ErrNotPEM = errors.New("not PEM")
	// ErrKeyMismatch is returned when a private key is not the key of the
	// certificate it comes with.
	ErrKeyMismatch = errors.New("private key does not match the certificate")
	// ErrUntrusted is returned by Load when a process's certificate is not
	// valid under the CA file: signed by another CA, expired, or not yet
	// valid.
	ErrUntrusted = errors.New("certificate not valid under the CA")
	// ErrExists is returned by WriteKeyPair when a file is there already
	// and overwriting was not asked for.
	ErrExists = errors.New("file exists")
	// ErrNoTLS is returned by PeerOf for a call that came without TLS.
	ErrNoTLS = errors.New("no TLS: the peer is not authenticated")
	// ErrNoIdentity is returned by CertPeer and PeerOf when a certificate
	// names no role and id (no gavel://ROLE/ID subject alternative name).
	ErrNoIdentity = errors.New("certificate names no gavel identity")
	// ErrBadIdentity is returned by CertPeer, PeerOf and CA.Issue for an
	// unknown role, an invalid id, or a certificate whose gavel URI and
	// CommonName disagree.
	ErrBadIdentity = errors.New("invalid gavel identity")
)
