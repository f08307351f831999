package main

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"

	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/config"
)

// roleName is the lower-case name of a role ("none" before any configuration).
func roleName(r api.Role) string {
	if r == api.Role_ROLE_UNSPECIFIED {
		return "none"
	}
	return strings.ToLower(r.String())
}

// memberIDs returns the ids of ms.
func memberIDs(ms []*api.Member) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.GetId()
	}
	return ids
}

// chainText describes a configuration: "epoch 2: n1 -> n3, joining n4".
func chainText(c *api.ChainConfig) string {
	s := fmt.Sprintf("epoch %d: %s", c.GetEpoch(), strings.Join(memberIDs(c.GetChain()), " -> "))
	if len(c.GetJoining()) > 0 {
		s += ", joining " + strings.Join(memberIDs(c.GetJoining()), ", ")
	}
	return s
}

// dialPrefix matches the wrapping gRPC puts around a failed dial.
var dialPrefix = regexp.MustCompile(`^connection error: desc = "transport: (?:Error while dialing: )?(?:dial tcp [^ ]+: )?(.*)"$`)

// rpcText is a short description of an RPC error: "connect: connection
// refused (Unavailable)" rather than gRPC's nested dial error.
func rpcText(err error) string {
	if s, ok := status.FromError(err); ok {
		msg := s.Message()
		if m := dialPrefix.FindStringSubmatch(msg); m != nil {
			msg = m[1]
		}
		return fmt.Sprintf("%s (%s)", msg, s.Code())
	}
	return err.Error()
}

// nodeJSON is the --json form of one node's status.
type nodeJSON struct {
	ID        string   `json:"id"`
	Addr      string   `json:"addr"`
	Up        bool     `json:"up"`
	Role      string   `json:"role"` // head, middle, tail, single, joining, removed, none; down when unreachable
	Epoch     uint64   `json:"epoch"`
	Chain     []string `json:"chain,omitempty"`
	Joining   []string `json:"joining,omitempty"`
	Applied   uint64   `json:"applied"`
	Committed uint64   `json:"committed"`
	Lag       *int64   `json:"lag"` // head applied - node applied; null when unknown
	Sent      uint64   `json:"sent"`
	Readable  bool     `json:"readable"`
	Auctions  uint64   `json:"auctions"`
	Digest    string   `json:"digest,omitempty"` // hash of the auction state at applied
	UptimeMs  int64    `json:"uptime_ms"`
	Error     string   `json:"error,omitempty"`
}

// statusRows turns StatusAll results into rows; ids names addresses that
// did not answer.
func statusRows(res []client.NodeResult, ids map[string]string) (rows []nodeJSON, best *api.ChainConfig) {
	var head *api.NodeStatus
	for _, r := range res {
		if r.Err != nil {
			continue
		}
		st := r.Status
		if c := st.GetConfig(); c != nil && (best == nil || c.Epoch > best.Epoch) {
			best = c
		}
		if st.Role == api.Role_HEAD || st.Role == api.Role_SINGLE {
			if head == nil || st.GetConfig().GetEpoch() > head.GetConfig().GetEpoch() {
				head = st
			}
		}
	}
	for _, r := range res {
		row := nodeJSON{ID: ids[r.Addr], Addr: r.Addr, Role: "down"}
		if row.ID == "" {
			row.ID = "?"
		}
		if r.Err != nil {
			row.Error = rpcText(r.Err)
			rows = append(rows, row)
			continue
		}
		st := r.Status
		if st.Id != "" {
			row.ID = st.Id
		}
		row.Up, row.Role = true, roleName(st.Role)
		row.Epoch, row.Chain, row.Joining = st.GetConfig().GetEpoch(), memberIDs(st.GetConfig().GetChain()),
			memberIDs(st.GetConfig().GetJoining())
		row.Applied, row.Committed, row.Sent = st.Applied, st.Committed, st.Sent
		row.Readable, row.Auctions, row.UptimeMs, row.Digest = st.Readable, st.Auctions, st.UptimeMs, st.StateDigest
		if head != nil {
			lag := int64(head.Applied) - int64(st.Applied)
			row.Lag = &lag
		}
		rows = append(rows, row)
	}
	return rows, best
}

func cmdStatus(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "status", "[flags]", `
Show every node of the configuration: its id, address, role, epoch, the last
sequence number it applied and the highest it knows committed, and its lag
behind the head (head applied - node applied), and a digest of its auction
state (nodes that applied the same updates show the same digest). Unreachable
nodes show as down.
Exits 2 when no node answers.`)
	com, err := parseCommonNoArgs(f, args)
	if err != nil {
		return err
	}
	cl, cfg, cctx, done, err := com.call(ctx)
	if err != nil {
		return err
	}
	defer done()
	res := cl.StatusAll(cctx)
	if com.node == "" && learnedMore(res) {
		res = cl.StatusAll(cctx) // the chain names nodes the config does not
	}
	ids := map[string]string{}
	for _, n := range cfg.Nodes {
		ids[n.Addr] = n.ID
	}
	rows, best := statusRows(res, ids)
	up := 0
	for _, r := range rows {
		if r.Up {
			up++
		}
	}
	if com.json {
		for _, r := range rows {
			e.printJSON(r)
		}
	} else {
		if best != nil {
			fmt.Fprintf(e.stdout, "chain %s\n", chainText(best))
		}
		tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tADDR\tROLE\tEPOCH\tAPPLIED\tCOMMITTED\tLAG\tDIGEST\tNOTE")
		for _, r := range rows {
			if !r.Up {
				fmt.Fprintf(tw, "%s\t%s\tdown\t-\t-\t-\t-\t-\t%s\n", r.ID, r.Addr, r.Error)
				continue
			}
			lag := "-"
			if r.Lag != nil {
				lag = fmt.Sprint(*r.Lag)
			}
			note := ""
			if (r.Role == "tail" || r.Role == "single") && !r.Readable {
				note = "not serving reads yet"
			}
			digest := r.Digest
			if digest == "" {
				digest = "-"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%d\t%s\t%s\t%s\n", r.ID, r.Addr, r.Role, r.Epoch, r.Applied,
				r.Committed, lag, digest, note)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if up == 0 {
		return exception("no node answered")
	}
	return nil
}

// learnedMore reports whether the configurations in res name an address
// that res does not cover.
func learnedMore(res []client.NodeResult) bool {
	seen := map[string]bool{}
	for _, r := range res {
		seen[r.Addr] = true
	}
	for _, r := range res {
		c := r.Status.GetConfig()
		for _, m := range append(slices.Clone(c.GetChain()), c.GetJoining()...) {
			if m.GetAddr() != "" && !seen[m.Addr] {
				return true
			}
		}
	}
	return false
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
	cl, cfg, err := com.client()
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
				t.Error = rpcText(err)
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
