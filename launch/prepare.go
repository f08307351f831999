package launch

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"
)

// checkLocalFiles checks, before anything runs, the files that the hosts
// of hs need from the launching machine: each ssh host's key and
// known_hosts file, and the TLS files of the configuration.
func (l *Launcher) checkLocalFiles(hs []Host) error {
	var errs []error
	for _, h := range hs {
		sh, ok := h.(*sshHost)
		if !ok {
			continue
		}
		for _, f := range []struct{ field, path, what string }{
			{"key", sh.identity, "the ssh private key"},
			{"known_hosts", sh.knownHosts, "the known_hosts file"},
		} {
			if f.path == "" {
				continue
			}
			if _, err := os.Stat(f.path); err != nil {
				hc, _ := l.cfg.HostByName(sh.name)
				raw := hc.Key
				if f.field == "known_hosts" {
					raw = hc.KnownHosts
				}
				errs = append(errs, fmt.Errorf("host %s (%s.%s = %s in %s): %w: %s (%s)",
					sh.name, sh.key, f.field, raw, l.file, ErrMissingFile, f.path, f.what))
			}
		}
	}
	if l.cfg.TLSEnabled() {
		check := func(key, path string) {
			if _, err := os.Stat(l.absLocal(path)); err != nil {
				errs = append(errs, fmt.Errorf("%s = %s in %s: %w: %s", key, path, l.file, ErrMissingFile, l.absLocal(path)))
			}
		}
		check("tls.ca", l.cfg.TLS.CA)
		// The launcher itself asks with the admin tools' certificate;
		// every host gets the client one.
		for _, id := range append([]string{"client", "admin"}, ids(l.procs)...) {
			cert, key := l.cfg.TLSFiles(id)
			check("tls.cert", cert)
			check("tls.key", key)
		}
	}
	return errors.Join(errs...)
}

// goArch maps `uname -m` to Go's GOARCH names.
var goArch = map[string]string{"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64",
	"i686": "386", "i386": "386", "armv7l": "arm", "riscv64": "riscv64", "ppc64le": "ppc64le", "s390x": "s390x"}

// reach checks that every ssh host of hs answers (and creates its
// working directory), in parallel, and that it runs the launching
// machine's architecture, for which bin/gavel was built.
func (l *Launcher) reach(ctx context.Context, hs []Host) error {
	var remote []Host
	for _, h := range hs {
		if h.Remote() {
			remote = append(remote, h)
		}
	}
	errs := make([]error, len(remote))
	var wg sync.WaitGroup
	for i, h := range remote {
		wg.Go(func() {
			out, err := h.Run(ctx, "uname -m", nil)
			if err != nil {
				errs[i] = err
				return
			}
			m := strings.TrimSpace(string(out))
			if a, ok := goArch[m]; ok && a != runtime.GOARCH {
				errs[i] = fmt.Errorf("host %s runs %s, but bin/gavel is built for %s on the launching machine", h.Name(), m, runtime.GOARCH)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// filesFor lists what host h needs beside its processes: bin/gavel,
// config.yaml and, with TLS, the CA and the certificate and key of the
// client and of each of its processes. The launching machine in the
// launching directory needs none of them.
func (l *Launcher) filesFor(h Host) []File {
	if l.isLaunching(h) {
		return nil
	}
	fs := []File{{Local: l.o.Gavel, Remote: "bin/gavel", Mode: 0o755},
		{Local: l.absLocal(l.o.ConfigPath), Remote: "config.yaml", Mode: 0o644}}
	if !l.cfg.TLSEnabled() {
		return fs
	}
	fs = append(fs, File{Local: l.absLocal(l.cfg.TLS.CA), Remote: l.cfg.TLS.CA, Mode: 0o644})
	ids := []string{"client"}
	for _, p := range l.procs {
		if l.hostOf(p) == h {
			ids = append(ids, p.ID)
		}
	}
	for _, id := range ids {
		cert, key := l.cfg.TLSFiles(id)
		fs = append(fs, File{Local: l.absLocal(cert), Remote: cert, Mode: 0o644},
			File{Local: l.absLocal(key), Remote: key, Mode: 0o600})
	}
	return fs
}

// install copies each host's files, in parallel.
func (l *Launcher) install(ctx context.Context, hs []Host) error {
	errs := make([]error, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Go(func() {
			if err := h.Put(ctx, l.filesFor(h)); err != nil {
				errs[i] = fmt.Errorf("copying files to %s: %w", h.Where(), err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// prepare readies hs before any process starts on them: first the local
// files and the reachability of every host of check, then the files each
// host of hs needs.
func (l *Launcher) prepare(ctx context.Context, check, hs []Host) error {
	if err := l.checkLocalFiles(check); err != nil {
		return err
	}
	if err := l.reach(ctx, check); err != nil {
		return err
	}
	return l.install(ctx, hs)
}

// sshHosts are the hosts of the configuration reached over ssh.
func (l *Launcher) sshHosts() []Host {
	var hs []Host
	for _, h := range l.distinctHosts() {
		if h.Remote() {
			hs = append(hs, h)
		}
	}
	return hs
}

// procHosts are the distinct hosts that run processes of ps.
func (l *Launcher) procHosts(ps []Proc) []Host {
	var hs []Host
	for _, p := range ps {
		h := l.hostOf(p)
		found := false
		for _, x := range hs {
			found = found || x == h
		}
		if !found {
			hs = append(hs, h)
		}
	}
	return hs
}

// ---------------------------------------------------------------------------
// Gateways over HTTP.

// scheme is http, or https when TLS is on.
func (l *Launcher) scheme() string {
	if l.cfg != nil && l.cfg.TLSEnabled() {
		return "https"
	}
	return "http"
}

// wsScheme is ws, or wss when TLS is on.
func (l *Launcher) wsScheme() string {
	if l.scheme() == "https" {
		return "wss"
	}
	return "ws"
}

// httpClient returns the client of gateway health checks: with TLS, the
// configuration's CA is its only root.
func (l *Launcher) httpClient() (*http.Client, error) {
	tr := &http.Transport{DisableKeepAlives: true}
	if l.cfg.TLSEnabled() {
		pem, err := os.ReadFile(l.absLocal(l.cfg.TLS.CA))
		if err != nil {
			return nil, fmt.Errorf("tls.ca = %s in %s: %w", l.cfg.TLS.CA, l.file, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca = %s in %s: no PEM certificate in it", l.cfg.TLS.CA, l.file)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 2 * time.Second}, nil
}

// healthz GETs /healthz of the gateway at addr and returns the body; ok is
// whether it answered 200.
func (l *Launcher) healthz(ctx context.Context, addr string) (body string, ok bool) {
	c, err := l.httpClient()
	if err != nil {
		return err.Error(), false
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.scheme()+"://"+addr+"/healthz", nil)
	if err != nil {
		return err.Error(), false
	}
	resp, err := c.Do(req)
	if err != nil {
		return err.Error(), false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return string(b), resp.StatusCode == http.StatusOK
}
