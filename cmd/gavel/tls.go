package main

import (
	"errors"
	"fmt"
	"io/fs"

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
