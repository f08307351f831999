package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/internal/clusterstatus"
)

// chainText describes a configuration: "epoch 2: n1 -> n3, joining n4".
func chainText(c *api.ChainConfig) string {
	s := fmt.Sprintf("epoch %d: %s", c.GetEpoch(), strings.Join(clusterstatus.MemberIDs(c.GetChain()), " -> "))
	if len(c.GetJoining()) > 0 {
		s += ", joining " + strings.Join(clusterstatus.MemberIDs(c.GetJoining()), ", ")
	}
	return s
}

// ---------------------------------------------------------------------------
// gavel status.

// shortInc is at most the first 8 digits of an incarnation in hex, as the
// status rows hold it, "-" for none: enough to tell one run of a node from
// the next at a glance.
func shortInc(h string) string {
	switch {
	case h == "":
		return "-"
	case len(h) > 8:
		return h[:8]
	}
	return h
}

// printNodeTable prints rows as a table. withMaster adds the columns that
// only mean something with masters: the lease left and the incarnation.
func printNodeTable(w io.Writer, rows []clusterstatus.Node, withMaster bool) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	extraHead, extraDown := "", ""
	if withMaster {
		extraHead, extraDown = "\tLEASE\tINCARNATION", "\t-\t-"
	}
	fmt.Fprintf(tw, "NODE\tADDR\tROLE\tEPOCH\tAPPLIED\tCOMMITTED\tLAG\tDURABLE\tDATA%s\tDIGEST\tNOTE\n", extraHead)
	for _, r := range rows {
		if !r.Up {
			fmt.Fprintf(tw, "%s\t%s\tdown\t-\t-\t-\t-\t-\t-%s\t-\t%s\n", r.ID, r.Addr, extraDown, r.Error)
			continue
		}
		lag := "-"
		if r.Lag != nil {
			lag = fmt.Sprint(*r.Lag)
		}
		var notes []string
		if (r.Role == "tail" || r.Role == "single") && !r.Readable {
			notes = append(notes, "not serving reads yet")
		}
		if withMaster && r.Role == "joining" && !r.CaughtUp {
			notes = append(notes, "catching up")
		}
		digest := r.Digest
		if digest == "" {
			digest = "-"
		}
		extra := ""
		if withMaster {
			lease := "none"
			if r.LeaseMs > 0 {
				lease = fmt.Sprintf("%dms", r.LeaseMs)
			}
			extra = "\t" + lease + "\t" + shortInc(r.Incarnation)
		}
		durable, data := "-", "memory"
		if r.DataDir != "" {
			durable, data = fmt.Sprint(r.Durable), fmtBytes(r.DataBytes)
			if r.Sync == "none" {
				data += " (sync none)"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s%s\t%s\t%s\n", r.ID, r.Addr, r.Role, r.Epoch, r.Applied,
			r.Committed, lag, durable, data, extra, digest, strings.Join(notes, "; "))
	}
	return tw.Flush()
}

// fmtAge formats a duration in milliseconds for an operator: "35ms",
// "1.2s", "3m5s".
func fmtAge(ms int64) string {
	d := time.Duration(ms) * time.Millisecond
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", ms)
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	default:
		return d.Round(time.Second).String()
	}
}

// fmtUptime formats an uptime in milliseconds: "350ms", "12s", "3m5s".
func fmtUptime(ms int64) string {
	if ms < 1000 {
		return fmt.Sprintf("%dms", max(ms, 0))
	}
	return (time.Duration(ms) * time.Millisecond).Round(time.Second).String()
}

// printMasters prints the masters' table.
func printMasters(w io.Writer, rows []clusterstatus.Master, leader string) error {
	term := uint64(0)
	for _, r := range rows {
		if r.Leader {
			term = r.Term
		}
	}
	up := 0
	for _, r := range rows {
		if r.Up {
			up++
		}
	}
	switch {
	case leader != "":
		fmt.Fprintf(w, "masters: leader %s, term %d (%d of %d up)\n", leader, term, up, len(rows))
	case up > 0:
		fmt.Fprintf(w, "masters: no leader (%d of %d up): election in progress, or no quorum\n", up, len(rows))
	default:
		fmt.Fprintf(w, "masters: none answered (%d configured)\n", len(rows))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MASTER\tADDR\tSTATE\tTERM\tEPOCH\tINDEX\tUPTIME\tNOTE")
	for _, r := range rows {
		if !r.Up {
			fmt.Fprintf(tw, "%s\t%s\tdown\t-\t-\t-\t-\t%s\n", r.ID, r.Addr, r.Error)
			continue
		}
		note := ""
		switch {
		case r.Leader:
		case r.LeaderID == "":
			note = "knows no leader"
		case r.LeaderID != leader:
			note = "follows " + r.LeaderID
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\n", r.ID, r.Addr, r.State, r.Term, r.Epoch,
			r.AppliedIndex, fmtUptime(r.UptimeMs), note)
	}
	return tw.Flush()
}

// printChain prints the chain as a master sees it.
func printChain(w io.Writer, ch *clusterstatus.Chain) error {
	who := "master leader " + ch.Source
	if !ch.Leader {
		who = "as master " + ch.Source + " applied it; no leader, so no heartbeats"
	}
	if len(ch.Chain) == 0 && len(ch.Joining) == 0 {
		fmt.Fprintf(w, "chain epoch %d (%s): empty, no node has joined yet\n", ch.Epoch, who)
	} else {
		s := fmt.Sprintf("chain epoch %d (%s): %s", ch.Epoch, who, strings.Join(ch.Chain, " -> "))
		if len(ch.Chain) == 0 {
			s += "(none)"
		}
		if len(ch.Joining) > 0 {
			s += ", joining " + strings.Join(ch.Joining, ", ")
		}
		fmt.Fprintln(w, s)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tROLE\tADDR\tAPPLIED\tLAG\tHEARTBEAT\tLEASE\tINCARNATION\tNOTE")
		for _, r := range ch.Nodes {
			restarted := ""
			if r.Running != "" {
				restarted = "process restarted: the node now runs " + shortInc(r.Running)
			}
			if !r.Heard {
				note := restarted
				if note == "" && ch.Leader {
					note = "no heartbeat from this incarnation"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t-\t-\t-\t-\t%s\t%s\n", r.ID, r.Role, r.Addr, shortInc(r.Incarnation), note)
				continue
			}
			lag := "-"
			if r.Lag != nil {
				lag = fmt.Sprint(*r.Lag)
			}
			lease := "no"
			if r.Leased {
				lease = "yes"
			}
			var notes []string
			if restarted != "" {
				notes = append(notes, restarted)
			}
			if r.Epoch != ch.Epoch {
				notes = append(notes, fmt.Sprintf("node at epoch %d", r.Epoch))
			}
			switch {
			case r.Role == "joining" && r.CaughtUp:
				notes = append(notes, "caught up, to be appended")
			case r.Role == "joining":
				notes = append(notes, "catching up")
			case r.Reported != r.Role && r.Epoch == ch.Epoch:
				notes = append(notes, "node says "+r.Reported)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%s\t%s ago\t%s\t%s\t%s\n", r.ID, r.Role, r.Addr, r.Applied, lag,
				fmtAge(*r.HeartbeatMs), lease, shortInc(r.Incarnation), strings.Join(notes, "; "))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(ch.Outside) > 0 {
		fmt.Fprintf(w, "not in the chain: %s\n", strings.Join(ch.Outside, ", "))
	}
	return nil
}

func cmdStatus(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "status", "[flags]", `
With masters in the config, show first the masters: id, address, Raft state
(the leader marked), term, the epoch of the chain configuration each has
applied. Then the chain as the master leader sees it, head to tail and then
the joining nodes: each node's role, address, last applied sequence number,
lag (highest applied among chain members - its applied), the age of its last
heartbeat, whether it holds a lease and its incarnation (the run of its
process; a restarted node has a new one). Then, to compare, every node as it
reports itself (the table below).

Every node (or, with --node, that node only): its id, address, role, epoch,
the last sequence number it applied and the highest it knows committed, its
lag behind the head (head applied - node applied), and a digest of its
auction state (nodes that applied the same updates show the same digest).

Everything is asked in parallel, bounded by --timeout; an unreachable
master or node shows as down. --json prints one object {leader, masters,
chain, nodes} (without masters, or with --node: one object per node).
Exits 2 when nothing answers.`)
	com, err := parseCommonNoArgs(f, args)
	if err != nil {
		return err
	}
	cl, cfg, cctx, done, err := com.asAdmin().call(ctx)
	if err != nil {
		return err
	}
	defer done()
	if cctx, err = com.authorize(cctx, cfg, adminID, auth.RoleAdmin); err != nil {
		return err
	}
	cs := clusterstatus.New(cfg, cl, com.dial, min(com.timeout, client.DefaultAttemptTimeout))
	if com.node != "" || len(cfg.Masters) == 0 {
		return nodesStatus(cctx, e, com, cs)
	}
	rep := cs.GatherAll(cctx)
	if com.json {
		e.printJSON(rep)
	} else {
		if err := printMasters(e.stdout, rep.Masters, rep.Leader); err != nil {
			return err
		}
		fmt.Fprintln(e.stdout)
		if rep.Chain != nil {
			if err := printChain(e.stdout, rep.Chain); err != nil {
				return err
			}
		} else {
			fmt.Fprintln(e.stdout, "chain: unknown, no master answered")
		}
		fmt.Fprintln(e.stdout)
		title := "nodes, each as it reports itself"
		if rep.Newest != nil {
			title += " (newest configuration among them: " + chainText(rep.Newest) + ")"
		}
		fmt.Fprintln(e.stdout, title)
		if err := printNodeTable(e.stdout, rep.Nodes, true); err != nil {
			return err
		}
	}
	if rep.Up() == 0 {
		return exception("no master and no node answered")
	}
	return nil
}

// nodesStatus is gavel status without masters, or with --node: every node
// (or the one) as it reports itself.
func nodesStatus(cctx context.Context, e *env, com *common, cs *clusterstatus.Cluster) error {
	// Without --node, the chain may name nodes the config does not.
	rep := cs.GatherNodes(cctx, com.node == "")
	if com.json {
		for _, r := range rep.Nodes {
			e.printJSON(r)
		}
	} else {
		if rep.Newest != nil {
			fmt.Fprintf(e.stdout, "chain %s\n", chainText(rep.Newest))
		}
		if err := printNodeTable(e.stdout, rep.Nodes, false); err != nil {
			return err
		}
	}
	if rep.Up() == 0 {
		return exception("no node answered")
	}
	return nil
}

// members looks ids up in the configuration.
func members(f *flags, cfg *config.Config, flag string, ids []string, seen map[string]bool) ([]*api.Member, error) {
	var ms []*api.Member
	for _, id := range ids {
		id = strings.TrimSpace(id)
		if id == "" {
			return nil, f.usageErr("--%s: empty node id", flag)
		}
		n, ok := cfg.Node(id)
		if !ok {
			return nil, &exitError{code: exitUsage, msg: fmt.Sprintf("--%s: unknown node id %q: %s lists %s",
				flag, id, cfg.File, strings.Join(cfg.NodeIDs(), ", "))}
		}
		if seen[id] {
			return nil, f.usageErr("node %s listed twice", id)
		}
		seen[id] = true
		ms = append(ms, &api.Member{Id: n.ID, Addr: n.Addr})
	}
	return ms, nil
}

// pushResult is one node's answer to a SetConfig.
type pushResult struct {
	ID     string `json:"id"`
	Addr   string `json:"addr"`
	Role   string `json:"role"` // the node's role in the new configuration
	Listed bool   `json:"listed"`
	OK     bool   `json:"ok"`
	Epoch  uint64 `json:"epoch,omitempty"` // the node's epoch after the call
	Error  string `json:"error,omitempty"`
}

func cmdReconfigure(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "reconfigure", "--chain ID,ID,... [--epoch N] [--joining ID,...] [flags]", `
Admin tool: install a new chain configuration by hand. It builds the
configuration {epoch, chain head..tail, joining} from the node addresses of
--config and pushes it (Admin.SetConfig) to every listed node and to the
members of the previous configuration that it can reach, so that removed
nodes learn they are out. Nodes refuse an epoch not above their own.

This is what the master will do automatically (failure detection, joins);
until then, use it to splice a crashed node out of the chain, or to add a
node started with "gavel node --join": list it with --joining, check with
"gavel status" that it caught up, then list it at the end of --chain. A
removed node comes back the same way; it starts again from a snapshot.

Exits 0 when every listed node took the configuration, 2 otherwise.`)
	epoch := f.Uint64("epoch", 0, "epoch of the new configuration (default: the highest epoch a node reports + 1)")
	chainIDs := f.StringSlice("chain", nil, "node ids of the new chain, head first (required)")
	joinIDs := f.StringSlice("joining", nil, "node ids that join the chain: they catch up from the tail")
	com, err := parseCommonNoArgs(f, args)
	if err != nil {
		return err
	}
	if com.node != "" {
		return f.usageErr("--node does not apply: reconfigure talks to the nodes of --config")
	}
	if len(*chainIDs) == 0 {
		return f.usageErr("missing --chain (e.g. --chain n1,n3)")
	}
	if f.Changed("epoch") && *epoch == 0 {
		return f.usageErr("--epoch must be at least 1")
	}
	cl, cfg, err := com.asAdmin().client()
	if err != nil {
		return err
	}
	defer cl.Close()
	seen := map[string]bool{}
	chainMs, err := members(f, cfg, "chain", *chainIDs, seen)
	if err != nil {
		return err
	}
	joinMs, err := members(f, cfg, "joining", *joinIDs, seen)
	if err != nil {
		return err
	}

	cctx, cancel := context.WithTimeout(ctx, com.timeout)
	defer cancel()
	if cctx, err = com.authorize(cctx, cfg, adminID, auth.RoleAdmin); err != nil {
		return err
	}
	res := cl.StatusAll(cctx)
	var highest uint64
	var targets []pushResult
	add := func(m *api.Member, listed bool, role string) {
		if !slices.ContainsFunc(targets, func(t pushResult) bool { return t.Addr == m.Addr }) {
			targets = append(targets, pushResult{ID: m.Id, Addr: m.Addr, Listed: listed, Role: role})
		}
	}
	for i, m := range chainMs {
		role := "middle"
		switch {
		case len(chainMs) == 1:
			role = "single"
		case i == 0:
			role = "head"
		case i == len(chainMs)-1:
			role = "tail"
		}
		add(m, true, role)
	}
	for _, m := range joinMs {
		add(m, true, "joining")
	}
	for _, r := range res {
		if r.Err != nil {
			continue
		}
		c := r.Status.GetConfig()
		highest = max(highest, c.GetEpoch())
		for _, m := range append(slices.Clone(c.GetChain()), c.GetJoining()...) {
			add(m, false, "removed")
		}
	}
	if *epoch == 0 {
		*epoch = highest + 1
	}
	newCfg := &api.ChainConfig{Epoch: *epoch, Chain: chainMs, Joining: joinMs}

	var wg sync.WaitGroup
	for i := range targets {
		t := &targets[i]
		wg.Go(func() {
			r, err := cl.SetConfig(cctx, t.Addr, newCfg)
			if err != nil {
				t.Error = clusterstatus.RPCText(err)
				return
			}
			t.Epoch = r.Epoch
			t.OK = r.Epoch == newCfg.Epoch
			if !t.OK {
				t.Error = fmt.Sprintf("node is at epoch %d", r.Epoch)
			}
		})
	}
	wg.Wait()

	failed := 0
	if !com.json {
		fmt.Fprintf(e.stdout, "pushing %s\n", chainText(newCfg))
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	for _, t := range targets {
		if t.Listed && !t.OK {
			failed++
		}
		if com.json {
			e.printJSON(t)
			continue
		}
		outcome := fmt.Sprintf("ok: epoch %d", t.Epoch)
		if !t.OK {
			outcome = "failed: " + t.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.ID, t.Addr, t.Role, outcome)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if failed > 0 {
		return exception("%d of the listed nodes did not take epoch %d", failed, newCfg.Epoch)
	}
	return nil
}

// fmtBytes is a size in bytes for a table: B, KiB, MiB or GiB.
func fmtBytes(n uint64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%dB", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1fKiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1fMiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.2fGiB", float64(n)/(1<<30))
}
