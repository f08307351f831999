package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/pki"
)

// defaultCAFile is where certs init puts the CA when tls.ca is not set.
const defaultCAFile = "certs/ca.crt"

// certJob is one certificate certs init writes.
type certJob struct {
	id        string // process id; "" for the CA
	role      pki.Role
	cert, key string
	hosts     []string // the host parts of the process's addresses
}

func cmdCerts(_ context.Context, e *env, args []string) error {
	f := newFlags(e, "certs", "init [--config FILE] [--force] [--days N]", `
Make the certificates of the cluster's mutual TLS: a certificate authority
at tls.ca (certs/ca.crt when tls.ca is not set) with its private key beside
it (certs/ca.key), and one certificate and key per master, node and gateway
of the configuration, and two for the command-line tools: "client" (bid,
result, auctions) and "admin" (status, open, reconfigure, bench, launch;
on a machine without the admin files these use the client certificate,
and the nodes refuse what only admins may do), at tls.cert and tls.key
with {id} replaced by the id.

Each certificate names its holder's role and id (CommonName = id, and the
URI gavel://ROLE/ID, ROLE being master, node, gateway, client or admin):
servers decide what a caller may do from it (docs/security.md). A process
certificate is valid for the hosts of the process's addresses (addr,
raft_addr, listen_addr, ...) and for 127.0.0.1, ::1 and localhost. Keys are written with mode 0600. Relative
paths are relative to the current directory, as they are for the
processes.

Existing files are left alone (and nothing is written) unless --force is
given: then every file is replaced, with a new CA, and every process must
be restarted with the new files. Keep the CA key away from the hosts; it
signs certificates, no process reads it. TLS is on once tls.ca is set.`)
	configPath := f.String("config", "config.yaml", "configuration file")
	force := f.Bool("force", false, "replace existing certificate and key files")
	days := f.Int("days", 365, "how many days the process certificates are valid (the CA: 10 years, or longer to cover them)")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) == 0:
		return f.usageErr("missing subcommand: want init")
	case pos[0] != "init":
		return f.usageErr("unknown subcommand %q: want init", pos[0])
	case len(pos) > 1:
		return f.usageErr("unexpected argument %q", pos[1])
	case *days <= 0:
		return f.usageErr("--days must be positive, got %d", *days)
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return &exitError{code: exitUsage, msg: err.Error()}
	}
	jobs, err := certJobs(cfg)
	if err != nil {
		return err
	}
	if !*force {
		var existing []string
		for _, j := range jobs {
			for _, p := range []string{j.cert, j.key} {
				if _, err := os.Lstat(p); err == nil {
					existing = append(existing, p)
				}
			}
		}
		if len(existing) > 0 {
			list := strings.Join(existing, ", ")
			if len(existing) > 3 {
				list = fmt.Sprintf("%s and %d more files", strings.Join(existing[:3], ", "), len(existing)-3)
			}
			return &exitError{code: exitException, msg: fmt.Sprintf("certs init: refusing to overwrite %s; "+
				"give --force to replace every certificate and the CA (then restart every process)", list)}
		}
	}

	validity := time.Duration(*days) * 24 * time.Hour
	ca, err := pki.NewCA("gavel CA "+cfg.Cluster.Name, max(pki.CAValidity, validity))
	if err != nil {
		return exception("certs init: %v", err)
	}
	if err := pki.WriteKeyPair(jobs[0].cert, jobs[0].key, ca.PEM(), *force); err != nil {
		return exception("certs init: %v", err)
	}
	fmt.Fprintf(e.stdout, "wrote %s and %s: CA %q, valid until %s\n", jobs[0].cert, jobs[0].key,
		ca.Cert.Subject.CommonName, ca.Cert.NotAfter.Format(time.DateOnly))
	for _, j := range jobs[1:] {
		kp, err := ca.Issue(pki.Peer{Role: j.role, ID: j.id}, j.hosts, validity)
		if err != nil {
			return exception("certs init: %v", err)
		}
		if err := pki.WriteKeyPair(j.cert, j.key, kp, *force); err != nil {
			return exception("certs init: %v", err)
		}
		names := strings.Join(pki.Hosts(append(slices.Clone(j.hosts), "127.0.0.1", "::1", "localhost")...), ", ")
		fmt.Fprintf(e.stdout, "wrote %s and %s: %s %s, for %s\n", j.cert, j.key, j.role, j.id, names)
	}
	fmt.Fprintf(e.stdout, "certificates valid until %s; keep %s off the hosts: it signs certificates, no process reads it\n",
		time.Now().Add(validity).Format(time.DateOnly), jobs[0].key)
	if cfg.TLS.CA == "" {
		fmt.Fprintf(e.stdout, "tls.ca is not set in %s: set it to %s to turn TLS on:\n\ntls:\n  ca: %s\n", cfg.File, jobs[0].cert, jobs[0].cert)
	}
	return nil
}

// certJobs lists what certs init writes for cfg: the CA first, then every
// master, node and gateway, then the tools' certificates (client, admin).
func certJobs(cfg *config.Config) ([]certJob, error) {
	for key, tmpl := range map[string]string{"tls.cert": cfg.TLS.Cert, "tls.key": cfg.TLS.Key} {
		if !strings.Contains(tmpl, "{id}") {
			return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("%s: %s is %q: it needs {id}, so that each process has a file of its own",
				cfg.File, key, tmpl)}
		}
	}
	caFile := cfg.TLS.CA
	if caFile == "" {
		caFile = defaultCAFile
	}
	jobs := []certJob{{cert: caFile, key: strings.TrimSuffix(caFile, filepath.Ext(caFile)) + ".key"}}
	add := func(role pki.Role, id string, addrs ...string) {
		cert, key := cfg.TLSFiles(id)
		jobs = append(jobs, certJob{id: id, role: role, cert: cert, key: key, hosts: pki.Hosts(addrs...)})
	}
	for _, m := range cfg.Masters {
		add(pki.RoleMaster, m.ID, m.Addr, m.RaftAddr, m.ListenAddr, m.RaftListenAddr, m.HTTPAddr)
	}
	for _, n := range cfg.Nodes {
		add(pki.RoleNode, n.ID, n.Addr, n.ListenAddr, n.HTTPAddr)
	}
	for _, g := range cfg.Gateways {
		add(pki.RoleGateway, g.ID, g.Addr, g.ListenAddr)
	}
	for _, j := range jobs[1:] {
		if j.id == clientID || j.id == adminID {
			return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("%s: a process is called %q, the id of a command-line tools' certificate: rename it",
				cfg.File, j.id)}
		}
	}
	add(pki.RoleClient, clientID)
	add(pki.RoleAdmin, adminID)
	seen := map[string]string{}
	for _, j := range jobs {
		for _, p := range []string{j.cert, j.key} {
			if other, dup := seen[filepath.Clean(p)]; dup {
				return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("%s: %s would be written twice (for %s and for %s)",
					cfg.File, p, other, nameOf(j))}
			}
			seen[filepath.Clean(p)] = nameOf(j)
		}
	}
	return jobs, nil
}

// nameOf says whose file a job writes.
func nameOf(j certJob) string {
	if j.id == "" {
		return "the CA"
	}
	return j.id
}
