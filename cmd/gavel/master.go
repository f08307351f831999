package main

import (
	"context"
	"fmt"
	"net"
	"strings"

	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/master"
	"github.com/gavel-auction/gavel/pki"
)

// masterOptions builds master id's options from cfg.
func masterOptions(cfg *config.Config, id string) (master.Options, error) {
	m, ok := cfg.MasterByID(id)
	if !ok {
		if len(cfg.Masters) == 0 {
			return master.Options{}, &exitError{code: exitUsage, msg: fmt.Sprintf("%s lists no masters (key masters)", cfg.File)}
		}
		return master.Options{}, &exitError{code: exitUsage, msg: fmt.Sprintf("unknown master id %q: %s lists %s",
			id, cfg.File, strings.Join(cfg.MasterIDs(), ", "))}
	}
	opts := master.Options{ID: m.ID, DataDir: cfg.MasterDataDir(m), Heartbeat: cfg.Master.Heartbeat,
		FailureTimeout: cfg.Master.FailureTimeout, Lease: cfg.Master.Lease, ForgetAfter: cfg.Master.ForgetAfter,
		Raft: master.RaftTiming{HeartbeatTimeout: cfg.Master.Raft.HeartbeatTimeout,
			ElectionTimeout: cfg.Master.Raft.ElectionTimeout, LeaderLeaseTimeout: cfg.Master.Raft.LeaderLeaseTimeout,
			CommitTimeout: cfg.Master.Raft.CommitTimeout, SnapshotThreshold: uint64(cfg.Master.Raft.SnapshotThreshold)},
		JSONLogs: strings.EqualFold(cfg.Log.Format, "json"), RaftBind: m.RaftListenAddr}
	var err error
	if opts.TLS, err = processTLS(cfg, pki.RoleMaster, m.ID); err != nil {
		return master.Options{}, err
	}
	for _, p := range cfg.Masters {
		opts.Peers = append(opts.Peers, master.Peer{ID: p.ID, Addr: p.Addr, RaftAddr: p.RaftAddr})
	}
	return opts, nil
}

func cmdMaster(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "master", "--id ID [flags]", `
Run master ID of the configuration: a replica of the Raft group that holds
the chain configuration. It serves the Master API (heartbeats, configuration
watch, status) on its addr and Raft on its raft_addr, keeping its log and
snapshots in its data_dir, until SIGINT or SIGTERM.

On first start (an empty data_dir) the masters of the config bootstrap the
group; a restarted master rejoins with its data. The leader removes a node
whose heartbeats stop for master.failure_timeout and appends joining nodes
as the new tail once they have caught up. Logs go to stderr.`)
	sf := addServerFlags(f, "master")
	cfg, err := sf.load(args)
	if err != nil {
		return err
	}
	id := sf.id
	opts, err := masterOptions(cfg, *id)
	if err != nil {
		return err
	}
	opts.Logger = cfg.NewLogger(e.stderr)
	logTLS(opts.Logger, cfg, *id, opts.TLS)
	opts.RaftLog = e.stderr
	self, _ := cfg.MasterByID(*id)
	lis, err := net.Listen("tcp", config.Bind(self.Addr, self.ListenAddr))
	if err != nil {
		return exception("master %s: %v", *id, err)
	}
	m, err := master.New(opts)
	if err != nil {
		lis.Close()
		return exception("%v", err)
	}
	m.Start(lis)
	stopHTTP, err := serveHTTP(self.HTTPAddr, m.HTTPHandler(), opts.Logger, *id)
	if err != nil {
		m.Stop()
		return exception("%v", err)
	}
	defer stopHTTP()
	<-ctx.Done()
	opts.Logger.Info("signal received: stopping", "master", *id)
	m.Stop()
	return nil
}
