package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime/debug"
	"strings"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/chain"
	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/pki"
)

// initialChain is the configuration a node starts with unless it joins:
// epoch 1, every node of the config in file order (head first).
func initialChain(cfg *config.Config) *api.ChainConfig {
	c := &api.ChainConfig{Epoch: 1}
	for _, n := range cfg.Nodes {
		c.Chain = append(c.Chain, &api.Member{Id: n.ID, Addr: n.Addr})
	}
	return c
}

// nodeOptions builds the chain node's options for node id of cfg.
func nodeOptions(cfg *config.Config, id string, join bool) (chain.NodeOptions, error) {
	n, ok := cfg.Node(id)
	if !ok {
		return chain.NodeOptions{}, &exitError{code: exitUsage, msg: fmt.Sprintf("unknown node id %q: %s lists %s",
			id, cfg.File, strings.Join(cfg.NodeIDs(), ", "))}
	}
	ident, err := processTLS(cfg, pki.RoleNode, n.ID)
	if err != nil {
		return chain.NodeOptions{}, err
	}
	opts := chain.NodeOptions{ID: n.ID, Addr: n.Addr, Tick: cfg.Chain.Tick, HelloRetry: cfg.Chain.HelloRetry,
		MaxBatch: cfg.Chain.MaxBatch, TLS: ident, Secret: cfg.Auth.Secret,
		DataDir: cfg.NodeDataDir(n), Cluster: cfg.Cluster.Name, Sync: cfg.Chain.SyncAlways(),
		SnapshotEvery: cfg.Chain.SnapshotEvery, SegmentSize: cfg.Chain.SegmentSize,
		Limits: auction.Limits{RetentionMs: cfg.Chain.Retention.Milliseconds(), MaxRequestIDs: cfg.Chain.MaxRequestIDs,
			MaxBidders: cfg.Chain.MaxBidders},
		SnapshotChunkBytes: cfg.Chain.SnapshotChunk, WatchHistory: cfg.Chain.WatchHistory,
		MaxWatchStreams: cfg.Chain.MaxWatchStreams}
	switch {
	case len(cfg.Masters) > 0:
		// The master owns the configuration: every start is a join.
		opts.Masters, opts.Heartbeat = cfg.MasterAddrs(), cfg.Master.Heartbeat
	case !join:
		opts.Initial = initialChain(cfg)
	}
	return opts, nil
}

func cmdNode(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "node", "--id ID [--join] [flags]", `
Run chain node ID of the configuration: serve the client, admin and
replication APIs on its addr until SIGINT or SIGTERM, then stop gracefully.

With masters in the config, the node heartbeats to the master leader and
joins the chain through it: the first node to join starts the chain, later
ones catch up from the tail and are appended as the new tail. The node keeps
its updates in its data dir (chain.data_dir/ID): a restarted node recovers
them, joins as a new member and gets from the tail only what it lacks; after
a whole-chain crash the master rebuilds the chain from the restarted nodes'
durable histories. It serves reads as tail and bids as head only while it
holds the master's lease.

Without masters, the node starts in epoch 1 with every node of the config in
file order (the first is the head); with --join it starts with no
configuration and waits for one (gavel reconfigure). Logs go to stderr.`)
	sf := addServerFlags(f, "node")
	join := f.Bool("join", false, "without masters: join a running chain, wait for a configuration")
	cfg, err := sf.load(args)
	if err != nil {
		return err
	}
	id := sf.id
	opts, err := nodeOptions(cfg, *id, *join)
	if err != nil {
		return err
	}
	if os.Getenv("GOGC") == "" {
		// A node's heap is a few MB of mostly short-lived messages:
		// collecting less often buys 10-20% throughput under load.
		debug.SetGCPercent(400)
	}
	// The chain package adds node, epoch and role to each of its lines.
	opts.Logger = cfg.NewLogger(e.stderr)
	logTLS(opts.Logger, cfg, *id, opts.TLS)
	node, err := chain.NewNode(opts)
	if err != nil {
		return exception("%v", err)
	}
	n, _ := cfg.Node(*id)
	lis, err := net.Listen("tcp", config.Bind(n.Addr, n.ListenAddr))
	if err != nil {
		return exception("node %s: %v", *id, err)
	}
	if err := node.Start(lis); err != nil {
		lis.Close()
		return exception("node %s: %v", *id, err)
	}
	stopHTTP, err := serveHTTP(n.HTTPAddr, node.HTTPHandler(), opts.Logger, *id)
	if err != nil {
		node.Stop()
		return exception("%v", err)
	}
	defer stopHTTP()
	<-ctx.Done()
	opts.Logger.Info("signal received: stopping", "node", *id)
	node.Stop()
	return nil
}
