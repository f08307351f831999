package pki

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// RefusedMsg is the message of the warning logged for every connection a
// gRPC server of ServerCredentials refuses.
const RefusedMsg = "refused connection: TLS handshake failed"

// ServerCredentials returns the gRPC transport credentials of a server
// with ServerConfig (mutual TLS) that logs every refused handshake on log,
// at warn level: RefusedMsg with the remote address, the reason in words
// (Refusal), the certificate the peer presented if any, and the TLS error.
// A connection closed before its handshake ended without any error on the
// peer's side (a port probe) is logged at debug level only.
func (id *Identity) ServerCredentials(log *slog.Logger) credentials.TransportCredentials {
	return &loggingCreds{TransportCredentials: credentials.NewTLS(id.ServerConfig()), log: log}
}

// ClientCredentials returns the gRPC transport credentials of a client
// with ClientConfig.
func (id *Identity) ClientCredentials() credentials.TransportCredentials {
	return credentials.NewTLS(id.ClientConfig())
}

// ServerOption is grpc.Creds(id.ServerCredentials(log)).
func (id *Identity) ServerOption(log *slog.Logger) grpc.ServerOption {
	return grpc.Creds(id.ServerCredentials(log))
}

// DialOption is grpc.WithTransportCredentials(id.ClientCredentials()).
func (id *Identity) DialOption() grpc.DialOption {
	return grpc.WithTransportCredentials(id.ClientCredentials())
}

// loggingCreds are TLS server credentials that log refused handshakes.
type loggingCreds struct {
	credentials.TransportCredentials
	log *slog.Logger
}

var _ credentials.TransportCredentials = (*loggingCreds)(nil)

// ServerHandshake runs the TLS handshake and logs it if it fails.
func (c *loggingCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		LogRefusal(c.log, RefusedMsg, raw.RemoteAddr(), err)
	}
	return conn, info, err
}

// Clone returns a copy that logs to the same logger.
func (c *loggingCreds) Clone() credentials.TransportCredentials {
	return &loggingCreds{TransportCredentials: c.TransportCredentials.Clone(), log: c.log}
}

// LogRefusal logs a failed server-side TLS handshake of a connection from
// remote: msg at warn level with remote, reason (Refusal), the subject and
// issuer of the certificate the peer presented when it could not be
// verified, and err. A bare io.EOF (the peer went away without a word, as
// a port probe does) is logged at debug level.
func LogRefusal(log *slog.Logger, msg string, remote net.Addr, err error) {
	attrs := []any{"remote", remote.String(), "reason", Refusal(err)}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) && len(verr.UnverifiedCertificates) > 0 {
		c := verr.UnverifiedCertificates[0]
		attrs = append(attrs, "peer_cert", c.Subject.CommonName, "peer_issuer", c.Issuer.CommonName)
	}
	attrs = append(attrs, "err", err.Error())
	if errors.Is(err, io.EOF) {
		log.Debug(msg, attrs...)
		return
	}
	log.Warn(msg, attrs...)
}

// Refusal says in words why a server-side TLS handshake failed, for the
// log line of the refusal.
func Refusal(err error) string {
	var (
		unknown x509.UnknownAuthorityError
		invalid x509.CertificateInvalidError
		record  tls.RecordHeaderError
	)
	switch msg := err.Error(); {
	case errors.As(err, &unknown):
		return "the peer's certificate is not signed by this cluster's CA (tls.ca)"
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return "the peer's certificate has expired or is not valid yet"
	case errors.As(err, &invalid):
		return "the peer's certificate is not valid for this cluster: " + invalid.Error()
	case errors.As(err, &record):
		return "the peer does not speak TLS (is tls.ca unset in its configuration?)"
	case strings.Contains(msg, "didn't provide a certificate"):
		return "the peer presented no certificate (a client without tls.cert and tls.key?)"
	case strings.Contains(msg, "remote error"):
		return "the peer refused this process's certificate (is it signed by the CA the peer trusts?)"
	case errors.Is(err, io.EOF):
		return "the peer closed the connection during the handshake"
	}
	return "TLS handshake error"
}
