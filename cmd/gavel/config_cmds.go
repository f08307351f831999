package main

import (
	"context"
	"fmt"

	"github.com/gavel-auction/gavel/config"
)

func cmdConfig(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "config", "check|nodes [--config FILE]", `
Read the configuration the way every gavel process does.

  check   load and validate it; print "ok" or every problem, naming key and file
  nodes   print one line per chain node: "ID ADDR" (used by scripts/launch)`)
	configPath := f.String("config", "config.yaml", "configuration file")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return f.usageErr("want one of: check, nodes")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return &exitError{code: exitUsage, msg: err.Error()}
	}
	switch pos[0] {
	case "check":
		fmt.Fprintf(e.stdout, "ok: %s (%d nodes)\n", cfg.File, len(cfg.Nodes))
	case "nodes":
		for _, n := range cfg.Nodes {
			fmt.Fprintf(e.stdout, "%s %s\n", n.ID, n.Addr)
		}
	default:
		return f.usageErr("unknown config action %q: want check or nodes", pos[0])
	}
	return nil
}
