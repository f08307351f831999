package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/pki"
)

// clientID is the process id of the command-line tools' certificate.
const clientID = "client"

// processTLS loads the identity of process id (a node, master or gateway
// id, or clientID) from the tls: section of cfg; nil when TLS is off. A
// file that is missing or wrong is a configuration error.
func processTLS(cfg *config.Config, id string) (*pki.Identity, error) {
	if !cfg.TLSEnabled() {
		return nil, nil
	}
	cert, key := cfg.TLSFiles(id)
	ident, err := pki.Load(cfg.TLS.CA, cert, key)
	if err != nil {
		xe := &exitError{code: exitUsage, msg: fmt.Sprintf("%s: tls: %s: %v", cfg.File, id, err)}
		if errors.Is(err, fs.ErrNotExist) {
			xe.hint = fmt.Sprintf("make the cluster's certificates with: gavel certs init --config %s", cfg.File)
		}
		return nil, xe
	}
	return ident, nil
}

// clientDialOptions returns the gRPC dial options a command-line tool (and
// the launcher) uses to reach nodes and masters of cfg: with tls.ca set,
// mutual TLS with the "client" certificate; none otherwise.
func clientDialOptions(cfg *config.Config) ([]grpc.DialOption, error) {
	ident, err := processTLS(cfg, clientID)
	if err != nil || ident == nil {
		return nil, err
	}
	return []grpc.DialOption{ident.DialOption()}, nil
}

// expiryWarning is how long before its certificate expires a process
// starts warning about it.
const expiryWarning = 30 * 24 * time.Hour

// logTLS logs, at start, whether process id runs TLS and with which
// certificate; a warning when the certificate expires within
// expiryWarning.
func logTLS(log *slog.Logger, cfg *config.Config, id string, ident *pki.Identity) {
	if ident == nil {
		log.Info("TLS off (tls.ca not set): every link in plaintext", "id", id)
		return
	}
	cert, _ := cfg.TLSFiles(id)
	c := ident.Certificate()
	attrs := []any{"id", id, "ca", cfg.TLS.CA, "cert", cert, "subject", c.Subject.CommonName,
		"expires", c.NotAfter.UTC().Format(time.RFC3339)}
	log.Info("TLS on: mutual TLS on every gRPC link, the gateways on https", attrs...)
	if left := time.Until(c.NotAfter); left < expiryWarning {
		log.Warn("certificate expires soon: renew it (gavel certs init --force) and restart", append(attrs, "left", left.Round(time.Hour))...)
	}
}
