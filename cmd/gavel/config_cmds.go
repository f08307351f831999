package main

import (
	"context"
	"fmt"
	"time"

	"github.com/gavel-auction/gavel/config"
)

func cmdConfig(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "config", "check|nodes|masters|processes [--config FILE]", `
Read the configuration the way every gavel process does.

  check      load and validate it; print "ok" with the number of masters,
             nodes and gateways, or every problem, naming key and file
  nodes      print one line per chain node: "ID ADDR"
  masters    print one line per master: "ID ADDR RAFT_ADDR DATA_DIR" (the
             data dir as the master uses it: its data_dir, or
             master.data_dir/ID)
  processes  print one line per process, in start order (masters, nodes,
             gateways): "KIND ID ADDR", KIND being master, node or gateway
  prometheus print a Prometheus configuration scraping every process's
             metrics (jobs gavel-master, gavel-node, gavel-gateway, each
             target labelled with its id), as dashboards/ expects

nodes, masters and processes list the cluster for scripts; gavel launch
(scripts/launch) reads config.yaml itself, so that the cluster is
described there only.`)
	configPath := f.String("config", "config.yaml", "configuration file")
	interval := f.Duration("interval", 5*time.Second, "prometheus: scrape and evaluation interval")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return f.usageErr("want one of: check, nodes, masters, processes, prometheus")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return &exitError{code: exitUsage, msg: err.Error()}
	}
	switch pos[0] {
	case "check":
		gws := ""
		switch n := len(cfg.Gateways); n {
		case 0:
		case 1:
			gws = ", 1 gateway"
		default:
			gws = fmt.Sprintf(", %d gateways", n)
		}
		if len(cfg.Masters) == 0 {
			fmt.Fprintf(e.stdout, "ok: %s (no masters: static chain of %d nodes%s)\n", cfg.File, len(cfg.Nodes), gws)
		} else {
			fmt.Fprintf(e.stdout, "ok: %s (%d masters, %d nodes%s)\n", cfg.File, len(cfg.Masters), len(cfg.Nodes), gws)
		}
	case "nodes":
		for _, n := range cfg.Nodes {
			fmt.Fprintf(e.stdout, "%s %s\n", n.ID, n.Addr)
		}
	case "masters":
		for _, m := range cfg.Masters {
			fmt.Fprintf(e.stdout, "%s %s %s %s\n", m.ID, m.Addr, m.RaftAddr, cfg.MasterDataDir(m))
		}
	case "processes":
		for _, m := range cfg.Masters {
			fmt.Fprintf(e.stdout, "master %s %s\n", m.ID, m.Addr)
		}
		for _, n := range cfg.Nodes {
			fmt.Fprintf(e.stdout, "node %s %s\n", n.ID, n.Addr)
		}
		for _, g := range cfg.Gateways {
			fmt.Fprintf(e.stdout, "gateway %s %s\n", g.ID, g.Addr)
		}
	case "prometheus":
		if *interval <= 0 {
			return f.usageErr("--interval must be positive, got %v", *interval)
		}
		fmt.Fprint(e.stdout, cfg.PrometheusScrapeConfig(*interval))
	default:
		return f.usageErr("unknown config action %q: want check, nodes, masters, processes or prometheus", pos[0])
	}
	return nil
}
