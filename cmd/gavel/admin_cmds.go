package main

import (
	"context"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
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

// ---------------------------------------------------------------------------
// gavel status.

// nodeJSON is the --json form of one node's status.
type nodeJSON struct {
	ID          string   `json:"id"`
	Addr        string   `json:"addr"`
	Up          bool     `json:"up"`
	Role        string   `json:"role"` // head, middle, tail, single, joining, removed, none; down when unreachable
	Epoch       uint64   `json:"epoch"`
	Chain       []string `json:"chain,omitempty"`
	Joining     []string `json:"joining,omitempty"`
	Applied     uint64   `json:"applied"`
	Committed   uint64   `json:"committed"`
	Lag         *int64   `json:"lag"` // head applied - node applied; null when unknown
	Sent        uint64   `json:"sent"`
	Durable     uint64   `json:"durable"`            // last seq on stable storage
	DataDir     string   `json:"data_dir,omitempty"` // "" when the node keeps no data dir
	DataBytes   uint64   `json:"data_bytes"`         // size of the data dir
	Sync        string   `json:"sync,omitempty"`     // always or none
	Readable    bool     `json:"readable"`
	CaughtUp    bool     `json:"caught_up"`
	LeaseMs     int64    `json:"lease_ms"`              // lease time left (ms)
	Incarnation string   `json:"incarnation,omitempty"` // this run of the node's process, in hex
	Auctions    uint64   `json:"auctions"`
	Digest      string   `json:"digest,omitempty"` // hash of the auction state at applied
	UptimeMs    int64    `json:"uptime_ms"`
	Error       string   `json:"error,omitempty"`
}

// hexInc is an incarnation in hex ("" for 0: none, or set by hand).
func hexInc(inc uint64) string {
	if inc == 0 {
		return ""
	}
	return fmt.Sprintf("%x", inc)
}

// shortInc is at most the first 8 digits of a hexInc, "-" for none: enough
// to tell one run of a node from the next at a glance.
func shortInc(h string) string {
	switch {
	case h == "":
		return "-"
	case len(h) > 8:
		return h[:8]
	}
	return h
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
		row.Durable, row.DataDir, row.DataBytes, row.Sync = st.Durable, st.DataDir, st.DataBytes, st.Sync
		row.Readable, row.Auctions, row.UptimeMs, row.Digest = st.Readable, st.Auctions, st.UptimeMs, st.StateDigest
		row.CaughtUp, row.LeaseMs, row.Incarnation = st.CaughtUp, st.LeaseMs, hexInc(st.Incarnation)
		if head != nil {
			lag := int64(head.Applied) - int64(st.Applied)
			row.Lag = &lag
		}
		rows = append(rows, row)
	}
	return rows, best
}

// printNodeTable prints rows as a table. withMaster adds the columns that
// only mean something with masters: the lease left and the incarnation.
func printNodeTable(w io.Writer, rows []nodeJSON, withMaster bool) error {
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

// masterResult is one master's answer to Status.
type masterResult struct {
	ID, Addr string
	Status   *api.MasterStatus
	Err      error
}

// queryMasters asks every master for its status, in parallel, each call
// bounded by ctx and attempt, dialing with dial (TLS) besides the default
// options. Results come in the order of masters.
func queryMasters(ctx context.Context, masters []config.MasterConfig, attempt time.Duration, dial []grpc.DialOption) []masterResult {
	res := make([]masterResult, len(masters))
	var wg sync.WaitGroup
	for i, m := range masters {
		res[i].ID, res[i].Addr = m.ID, m.Addr
		wg.Go(func() {
			cc, err := grpc.NewClient(m.Addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)...)
			if err != nil {
				res[i].Err = err
				return
			}
			defer cc.Close()
			actx, cancel := context.WithTimeout(ctx, attempt)
			defer cancel()
			res[i].Status, res[i].Err = api.NewMasterClient(cc).Status(actx, &api.MasterStatusRequest{})
		})
	}
	wg.Wait()
	return res
}

// queryNodes asks each address for its status, in parallel, each call
// bounded by ctx and attempt.
func queryNodes(ctx context.Context, cl *client.Client, addrs []string, attempt time.Duration) []client.NodeResult {
	res := make([]client.NodeResult, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		res[i].Addr = a
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, attempt)
			defer cancel()
			res[i].Status, res[i].Err = cl.Status(actx, a)
		})
	}
	wg.Wait()
	return res
}

// masterJSON is the --json form of one master's status.
type masterJSON struct {
	ID           string `json:"id"`
	Addr         string `json:"addr"`
	Up           bool   `json:"up"`
	State        string `json:"state"`  // leader, follower, candidate, shutdown; down when unreachable
	Leader       bool   `json:"leader"` // the leader whose view "chain" shows
	Term         uint64 `json:"term"`
	LeaderID     string `json:"leader_id,omitempty"` // the leader this master knows of
	Epoch        uint64 `json:"epoch"`               // of the chain configuration it has applied
	LastIndex    uint64 `json:"last_index"`          // last Raft log index
	AppliedIndex uint64 `json:"applied_index"`
	UptimeMs     int64  `json:"uptime_ms"`
	Error        string `json:"error,omitempty"`
}

// masterRows turns the masters' answers into rows and picks the master
// whose view of the chain to show: the leader (the answer that says leader
// with the highest term), else the answer with the newest Raft state.
// view is -1 when no master answered; leader says whether view leads.
func masterRows(res []masterResult) (rows []masterJSON, view int, leader bool) {
	view = -1
	for i, r := range res {
		row := masterJSON{ID: r.ID, Addr: r.Addr, State: "down"}
		if r.Err != nil {
			row.Error = rpcText(r.Err)
			rows = append(rows, row)
			continue
		}
		st := r.Status
		if st.Id != "" {
			row.ID = st.Id
		}
		row.Up, row.State = true, strings.ToLower(st.RaftState)
		if row.State == "" {
			row.State = "unknown"
		}
		row.Term, row.LeaderID, row.Epoch = st.Term, st.LeaderId, st.GetConfig().GetEpoch()
		row.LastIndex, row.AppliedIndex, row.UptimeMs = st.LastIndex, st.AppliedIndex, st.UptimeMs
		rows = append(rows, row)
		isLeader := row.State == "leader"
		switch {
		case view < 0:
			view, leader = i, isLeader
		case isLeader && (!leader || st.Term > res[view].Status.Term):
			view, leader = i, true
		case !isLeader && !leader && (st.Term > res[view].Status.Term ||
			st.Term == res[view].Status.Term && st.AppliedIndex > res[view].Status.AppliedIndex):
			view = i
		}
	}
	if view >= 0 && leader {
		rows[view].Leader = true
	}
	return rows, view, leader
}

// chainJSON is the --json form of the chain as a master sees it.
type chainJSON struct {
	Source  string       `json:"source"` // the master whose view this is
	Leader  bool         `json:"leader"` // source leads: it has the nodes' heartbeats
	Epoch   uint64       `json:"epoch"`
	Chain   []string     `json:"chain"` // head first
	Joining []string     `json:"joining"`
	Outside []string     `json:"outside,omitempty"` // nodes of the config file in neither list
	Nodes   []memberJSON `json:"nodes"`             // chain members head first, then joining nodes
}

// memberJSON is one chain member or joining node as the master leader sees
// it, from the node's last heartbeat.
type memberJSON struct {
	ID          string `json:"id"`
	Addr        string `json:"addr"`
	Role        string `json:"role"`        // head, middle, tail, single or joining: its place in the configuration
	Incarnation string `json:"incarnation"` // the member's run, in hex ("" when set by hand)
	Heard       bool   `json:"heard"`       // the leader has a heartbeat from this incarnation
	Reported    string `json:"reported_role,omitempty"`
	Epoch       uint64 `json:"epoch"` // the node's epoch, as its last heartbeat said
	Applied     uint64 `json:"applied"`
	Committed   uint64 `json:"committed"`
	Lag         *int64 `json:"lag"`               // highest applied among chain members - applied; null when unknown
	HeartbeatMs *int64 `json:"last_heartbeat_ms"` // since the last heartbeat; null when none
	Leased      bool   `json:"leased"`
	CaughtUp    bool   `json:"caught_up"`
	// Running is the incarnation the node's own status reports when it
	// differs from the member's: the process restarted since it joined.
	Running string `json:"running_incarnation,omitempty"`
}

// chainView builds the chain as master status st shows it; fromLeader says
// whether st is the leader's (only the leader has heartbeats). nodes are
// the node ids of the config file.
func chainView(st *api.MasterStatus, fromLeader bool, nodes []string) *chainJSON {
	c := st.GetConfig()
	ch := &chainJSON{Source: st.Id, Leader: fromLeader, Epoch: c.GetEpoch(),
		Chain: memberIDs(c.GetChain()), Joining: memberIDs(c.GetJoining())}
	health := map[string]*api.NodeHealth{}
	for _, h := range st.GetNodes() {
		health[h.Id] = h
	}
	heard := func(m *api.Member) *api.NodeHealth {
		h := health[m.GetId()]
		if h == nil || h.Incarnation != m.GetIncarnation() || h.LastHeartbeatMs < 0 {
			return nil
		}
		return h
	}
	var top uint64
	anyHeard := false
	for _, m := range c.GetChain() {
		if h := heard(m); h != nil {
			top, anyHeard = max(top, h.Applied), true
		}
	}
	add := func(m *api.Member, role string) {
		row := memberJSON{ID: m.GetId(), Addr: m.GetAddr(), Role: role, Incarnation: hexInc(m.GetIncarnation())}
		if h := heard(m); h != nil {
			row.Heard, row.Reported, row.Epoch = true, roleName(h.Role), h.Epoch
			row.Applied, row.Committed, row.Leased, row.CaughtUp = h.Applied, h.Committed, h.Leased, h.CaughtUp
			age := h.LastHeartbeatMs
			row.HeartbeatMs = &age
			if anyHeard {
				lag := int64(top) - int64(h.Applied)
				row.Lag = &lag
			}
		}
		ch.Nodes = append(ch.Nodes, row)
	}
	n := len(c.GetChain())
	for i, m := range c.GetChain() {
		role := "middle"
		switch {
		case n == 1:
			role = "single"
		case i == 0:
			role = "head"
		case i == n-1:
			role = "tail"
		}
		add(m, role)
	}
	for _, m := range c.GetJoining() {
		add(m, "joining")
	}
	for _, id := range nodes {
		if !slices.Contains(ch.Chain, id) && !slices.Contains(ch.Joining, id) {
			ch.Outside = append(ch.Outside, id)
		}
	}
	return ch
}

// crossCheck notes the chain members whose node answers with another
// incarnation than the configuration's: their process restarted.
func crossCheck(ch *chainJSON, rows []nodeJSON) {
	own := map[string]string{}
	for _, r := range rows {
		if r.Up && r.Incarnation != "" {
			own[r.ID] = r.Incarnation
		}
	}
	for i := range ch.Nodes {
		m := &ch.Nodes[i]
		if inc, ok := own[m.ID]; ok && m.Incarnation != "" && inc != m.Incarnation {
			m.Running = inc
		}
	}
}

// statusJSON is gavel status --json with masters: one object.
type statusJSON struct {
	Leader  string       `json:"leader"` // id of the master leader; "" when none answered as leader
	Masters []masterJSON `json:"masters"`
	Chain   *chainJSON   `json:"chain"` // null when no master answered
	Nodes   []nodeJSON   `json:"nodes"` // each node's own status
}

// nodeAddrs returns the addresses of the config's nodes in file order.
func nodeAddrs(cfg *config.Config) []string {
	addrs := make([]string, len(cfg.Nodes))
	for i, n := range cfg.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
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
func printMasters(w io.Writer, rows []masterJSON, leader string) error {
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
func printChain(w io.Writer, ch *chainJSON) error {
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
	cl, cfg, cctx, done, err := com.call(ctx)
	if err != nil {
		return err
	}
	defer done()
	ids := map[string]string{}
	for _, n := range cfg.Nodes {
		ids[n.Addr] = n.ID
	}
	if com.node != "" || len(cfg.Masters) == 0 {
		return nodesStatus(cctx, e, com, cl, ids)
	}

	attempt := min(com.timeout, client.DefaultAttemptTimeout)
	var mres []masterResult
	var nres []client.NodeResult
	var wg sync.WaitGroup
	wg.Go(func() { mres = queryMasters(cctx, cfg.Masters, attempt, com.dial) })
	wg.Go(func() { nres = queryNodes(cctx, cl, nodeAddrs(cfg), attempt) })
	wg.Wait()
	mrows, view, leading := masterRows(mres)
	rep := statusJSON{Masters: mrows, Nodes: nil}
	if view >= 0 {
		rep.Chain = chainView(mres[view].Status, leading, cfg.NodeIDs())
		if leading {
			rep.Leader = mrows[view].ID
		}
	}
	// Nodes that a configuration names but the config file does not.
	var extra []string
	seen := map[string]bool{}
	for _, r := range nres {
		seen[r.Addr] = true
	}
	note := func(c *api.ChainConfig) {
		for _, m := range append(slices.Clone(c.GetChain()), c.GetJoining()...) {
			if m.GetAddr() != "" && !seen[m.Addr] {
				seen[m.Addr] = true
				extra = append(extra, m.Addr)
			}
			if m.GetAddr() != "" && ids[m.Addr] == "" {
				ids[m.Addr] = m.GetId()
			}
		}
	}
	if view >= 0 {
		note(mres[view].Status.GetConfig())
	}
	for _, r := range nres {
		note(r.Status.GetConfig())
	}
	if len(extra) > 0 {
		nres = append(nres, queryNodes(cctx, cl, extra, attempt)...)
	}
	rows, best := statusRows(nres, ids)
	rep.Nodes = rows
	if rep.Chain != nil {
		crossCheck(rep.Chain, rows)
	}
	up := 0
	for _, r := range rows {
		if r.Up {
			up++
		}
	}
	for _, m := range mrows {
		if m.Up {
			up++
		}
	}
	if com.json {
		e.printJSON(rep)
	} else {
		if err := printMasters(e.stdout, mrows, rep.Leader); err != nil {
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
		if best != nil {
			title += " (newest configuration among them: " + chainText(best) + ")"
		}
		fmt.Fprintln(e.stdout, title)
		if err := printNodeTable(e.stdout, rows, true); err != nil {
			return err
		}
	}
	if up == 0 {
		return exception("no master and no node answered")
	}
	return nil
}

// nodesStatus is gavel status without masters, or with --node: every node
// (or the one) as it reports itself.
func nodesStatus(cctx context.Context, e *env, com *common, cl *client.Client, ids map[string]string) error {
	res := cl.StatusAll(cctx)
	if com.node == "" && learnedMore(res) {
		res = cl.StatusAll(cctx) // the chain names nodes the config does not
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
		if err := printNodeTable(e.stdout, rows, false); err != nil {
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
