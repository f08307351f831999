package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/launch"
	"github.com/gavel-auction/gavel/tools/runlog"
)

// proc is one gavel process the demo started.
type proc struct {
	kind  string
	local *launch.LocalProc
}

// freePorts returns n loopback addresses that were free a moment ago.
// They come from below the kernel's ephemeral range (32768-60999 on
// Linux), from a random start, so that no outgoing connection's source
// port takes one before its process binds it.
func freePorts(n int) ([]string, error) {
	var out []string
	port := 20000 + rand.IntN(10000)
	for tries := 0; len(out) < n && tries < 5000; tries++ {
		port++
		if port >= 32000 {
			port = 20000
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		out = append(out, l.Addr().String())
		l.Close()
	}
	if len(out) < n {
		return nil, errors.New("no free loopback ports in 20000-32000")
	}
	return out, nil
}

// writeConfig writes the run's config.yaml: masters, nodes n1..n4 and the
// gateway on the given addresses, config.yaml's timing, info-level logs.
func (d *demo) writeConfig() error {
	addrs, err := freePorts(2*len(d.masters) + len(d.nodes) + 1)
	if err != nil {
		return err
	}
	next := func() string { a := addrs[0]; addrs = addrs[1:]; return a }
	var b strings.Builder
	b.WriteString("# The demo's cluster (tools/demofailures): loopback ports of its own.\ncluster:\n  name: demo-failures\n" +
		"insecure: true # loopback only\nmasters:\n")
	for _, id := range d.masters {
		d.addrs[id] = next()
		fmt.Fprintf(&b, "  - id: %s\n    addr: %s\n    raft_addr: %s\n    data_dir: %s\n", id, d.addrs[id], next(),
			filepath.Join(d.dir, "data", id))
	}
	b.WriteString("nodes:\n")
	for _, id := range d.nodes {
		d.addrs[id] = next()
		fmt.Fprintf(&b, "  - id: %s\n    addr: %s\n", id, d.addrs[id])
	}
	d.addrs[d.gateway] = next()
	fmt.Fprintf(&b, "gateways:\n  - id: %s\n    addr: %s\n", d.gateway, d.addrs[d.gateway])
	fmt.Fprintf(&b, "master:\n  heartbeat: %v\n  failure_timeout: %v\n  lease: %v\n", heartbeat, failureTimeout, lease)
	fmt.Fprintf(&b, "client:\n  timeout: %v\nlog:\n  level: info\n  format: text\n", d.callTimeout)
	d.cfgPath = filepath.Join(d.dir, "config.yaml")
	return os.WriteFile(d.cfgPath, []byte(b.String()), 0o644)
}

// start runs `gavel KIND --id ID` with its log in the work directory.
// The start is logged first, so that the merged log shows it before the
// process's own lines.
func (d *demo) start(kind, id string) error {
	d.log.Info(fmt.Sprintf("demo: start %s %s", kind, id), "process", id, "kind", kind, "addr", d.addrs[id],
		"epoch", d.epoch.Load())
	p, err := launch.StartLocal(launch.ProcSpec{Gavel: d.opts.bin, Kind: kind, ID: id, Config: d.cfgPath,
		Dir: d.dir, LogFile: filepath.Join(d.dir, id+".log")})
	if err != nil {
		return fmt.Errorf("start %s %s: %w", kind, id, err)
	}
	d.mu.Lock()
	d.procs[id] = &proc{kind: kind, local: p}
	d.mu.Unlock()
	return nil
}

// settle runs stop on process id and, when stop reports it gone, forgets
// it; it reports whether the process is gone.
func (d *demo) settle(id string, stop func(*launch.LocalProc) bool) bool {
	d.mu.Lock()
	p := d.procs[id]
	d.mu.Unlock()
	if p == nil {
		return true
	}
	if !stop(p.local) {
		return false
	}
	d.mu.Lock()
	delete(d.procs, id)
	d.mu.Unlock()
	return true
}

// kill SIGKILLs a process and waits until it is gone.
func (d *demo) kill(id string) error {
	var err error
	d.settle(id, func(p *launch.LocalProc) bool { err = p.Kill(); return err == nil })
	return err
}

// stopAll stops every process the demo started, one at a time in
// launch's stop order (gateways first, masters last, by id within a
// kind): SIGTERM, then SIGKILL when it still runs after 5 seconds.
func (d *demo) stopAll() {
	d.mu.Lock()
	var ids []string
	kinds := map[string]string{}
	for id, p := range d.procs {
		ids = append(ids, id)
		kinds[id] = p.kind
	}
	d.mu.Unlock()
	slices.Sort(ids)
	for _, stage := range launch.StopOrder(ids, func(id string) string { return kinds[id] }) {
		for _, id := range stage {
			d.settle(id, func(p *launch.LocalProc) bool { return p.Stop(5 * time.Second) })
		}
	}
}

// killAll SIGKILLs whatever still runs (the demo failed or was stopped).
func (d *demo) killAll() {
	d.mu.Lock()
	var ids []string
	for id := range d.procs {
		ids = append(ids, id)
	}
	d.mu.Unlock()
	for _, id := range ids {
		d.settle(id, func(p *launch.LocalProc) bool { return p.Kill() == nil })
	}
}

// running reports whether the demo has a live process for id.
func (d *demo) running(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.procs[id]
	return ok
}

// masterClient returns a client of master id (connections are kept).
func (d *demo) masterClient(id string) (api.MasterClient, error) {
	c, err := d.conns.Get(d.addrs[id])
	if err != nil {
		return nil, err
	}
	return api.NewMasterClient(c), nil
}

// leaderConfig asks the masters which one leads and returns the chain
// configuration the leader has committed, and its id.
func (d *demo) leaderConfig(ctx context.Context) (*api.ChainConfig, string, error) {
	for _, id := range d.masters {
		if !d.running(id) {
			continue
		}
		c, err := d.masterClient(id)
		if err != nil {
			return nil, "", err
		}
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		st, err := c.Status(cctx, &api.MasterStatusRequest{})
		cancel()
		if err == nil && st.RaftState == "Leader" {
			if st.GetConfig() != nil {
				d.epoch.Store(max(d.epoch.Load(), st.GetConfig().GetEpoch()))
			}
			return st.GetConfig(), id, nil
		}
	}
	return nil, "", errors.New("no master leads")
}

// waitConfig polls the master leader until its configuration satisfies ok.
func (d *demo) waitConfig(ctx context.Context, what string, timeout time.Duration, ok func(*api.ChainConfig) bool) (*api.ChainConfig, error) {
	deadline := time.Now().Add(timeout)
	var last *api.ChainConfig
	for {
		cfg, _, err := d.leaderConfig(ctx)
		if err == nil && cfg != nil {
			last = cfg
			if ok(cfg) {
				return cfg, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("waiting for %s: after %v the leader's configuration is %s", what, timeout, describe(last))
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitHealthy waits until the gateway's /healthz answers 200.
func (d *demo) waitHealthy(ctx context.Context, id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	client := &http.Client{Timeout: 500 * time.Millisecond}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.addrs[id]+"/healthz", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("gateway %s: /healthz not OK after %v", id, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// chainIDs lists a configuration's chain, head first.
func chainIDs(cfg *api.ChainConfig) []string {
	var ids []string
	for _, m := range cfg.GetChain() {
		ids = append(ids, m.Id)
	}
	return ids
}

// joiningIDs lists a configuration's joining nodes.
func joiningIDs(cfg *api.ChainConfig) []string {
	var ids []string
	for _, m := range cfg.GetJoining() {
		ids = append(ids, m.Id)
	}
	return ids
}

// names reports whether cfg names id, in the chain or joining.
func names(cfg *api.ChainConfig, id string) bool {
	return slices.Contains(chainIDs(cfg), id) || slices.Contains(joiningIDs(cfg), id)
}

// describe formats a configuration as the master logs it: e6 [n1 n3] +[n4].
func describe(cfg *api.ChainConfig) string {
	if cfg == nil {
		return "unknown"
	}
	return runlog.Config{Epoch: cfg.Epoch, Chain: chainIDs(cfg), Joining: joiningIDs(cfg)}.String()
}
