package main

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/pki"
)

// The ids of the command-line tools' certificates: clientID (role client)
// for the tools that act for a bidder, adminID (role admin) for the
// operator's tools.
const (
	clientID = "client"
	adminID  = "admin"
)

// toolRole is the role of the tools' certificate id.
func toolRole(id string) pki.Role {
	if id == adminID {
		return pki.RoleAdmin
	}
	return pki.RoleClient
}

// processTLS loads the identity of process id, of role, from the tls:
// section of cfg; nil when TLS is off. A file that is missing or wrong,
// or a certificate that does not name role and id (gavel://ROLE/ID), is
// a configuration error.
func processTLS(cfg *config.Config, role pki.Role, id string) (*pki.Identity, error) {
	if !cfg.TLSEnabled() {
		return nil, nil
	}
	cert, key := cfg.TLSFiles(id)
	hint := fmt.Sprintf("make the cluster's certificates with: gavel certs init --config %s", cfg.File)
	ident, err := pki.Load(cfg.TLS.CA, cert, key)
	if err != nil {
		xe := &exitError{code: exitUsage, msg: fmt.Sprintf("%s: tls: %s: %v", cfg.File, id, err)}
		if errors.Is(err, fs.ErrNotExist) {
			xe.hint = hint
		}
		return nil, xe
	}
	want := pki.Peer{Role: role, ID: id}
	if got, err := ident.Peer(); err != nil || got != want {
		msg := fmt.Sprintf("certificate %s names %v, not %v", cert, got, want)
		if err != nil {
			msg = err.Error()
		}
		return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("%s: tls: %s: %s", cfg.File, id, msg),
			hint: hint + " --force (then restart every process)"}
	}
	return ident, nil
}

// toolDialOptions returns the gRPC dial options a command-line tool uses
// to reach nodes and masters of cfg: with tls.ca set, mutual TLS with the
// tools' certificate id (clientID or adminID); none otherwise. A machine
// that holds the client certificate only (a host scripts/launch set up)
// uses it for the admin commands too: status then shows no data dirs, and
// the nodes refuse what only admins may do, saying so.
func toolDialOptions(cfg *config.Config, id string) ([]grpc.DialOption, error) {
	if id == adminID && cfg.TLSEnabled() {
		admin, _ := cfg.TLSFiles(adminID)
		client, _ := cfg.TLSFiles(clientID)
		if _, err := os.Stat(admin); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(client); err == nil {
				id = clientID
			}
		}
	}
	ident, err := processTLS(cfg, toolRole(id), id)
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
		log.Warn("TLS off (insecure: true): every link in plaintext, no peer's identity checked", "id", id)
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
