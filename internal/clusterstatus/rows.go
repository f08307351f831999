package clusterstatus

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
)

// roleName is the lower-case name of a role ("none" before any configuration).
func roleName(r api.Role) string {
	if r == api.Role_ROLE_UNSPECIFIED {
		return "none"
	}
	return strings.ToLower(r.String())
}

// MemberIDs returns the ids of ms, in order.
func MemberIDs(ms []*api.Member) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.GetId()
	}
	return ids
}

// dialPrefix matches the wrapping gRPC puts around a failed dial.
var dialPrefix = regexp.MustCompile(`^connection error: desc = "transport: (?:Error while dialing: )?(?:dial tcp [^ ]+: )?(.*)"$`)

// RPCText is a short description of an RPC error: "connect: connection
// refused (Unavailable)" rather than gRPC's nested dial error.
func RPCText(err error) string {
	if s, ok := status.FromError(err); ok {
		msg := s.Message()
		if m := dialPrefix.FindStringSubmatch(msg); m != nil {
			msg = m[1]
		}
		return fmt.Sprintf("%s (%s)", msg, s.Code())
	}
	return err.Error()
}

// hexInc is an incarnation in hex ("" for 0: none, or set by hand).
func hexInc(inc uint64) string {
	if inc == 0 {
		return ""
	}
	return fmt.Sprintf("%x", inc)
}

// nodeRows turns the nodes' answers into rows and finds the newest
// configuration among them; ids names the addresses that did not answer.
func nodeRows(res []client.NodeResult, ids map[string]string) (rows []Node, best *api.ChainConfig) {
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
		row := Node{ID: ids[r.Addr], Addr: r.Addr, Role: "down"}
		if row.ID == "" {
			row.ID = "?"
		}
		if r.Err != nil {
			row.Error = RPCText(r.Err)
			rows = append(rows, row)
			continue
		}
		st := r.Status
		if st.Id != "" {
			row.ID = st.Id
		}
		row.Up, row.Role = true, roleName(st.Role)
		row.Epoch, row.Chain, row.Joining = st.GetConfig().GetEpoch(), MemberIDs(st.GetConfig().GetChain()),
			MemberIDs(st.GetConfig().GetJoining())
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

// masterRows turns the masters' answers into rows and picks the master
// whose view of the chain to show: the leader (the answer that says leader
// with the highest term), else the answer with the newest Raft state.
// view is -1 when no master answered; leader says whether view leads.
func masterRows(res []masterResult) (rows []Master, view int, leader bool) {
	view = -1
	for i, r := range res {
		row := Master{ID: r.ID, Addr: r.Addr, State: "down"}
		if r.Err != nil {
			row.Error = RPCText(r.Err)
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

// chainView builds the chain as master status st shows it; fromLeader says
// whether st is the leader's (only the leader has heartbeats). nodes are
// the node ids of the config file.
func chainView(st *api.MasterStatus, fromLeader bool, nodes []string) *Chain {
	c := st.GetConfig()
	ch := &Chain{Source: st.Id, Leader: fromLeader, Epoch: c.GetEpoch(),
		Chain: MemberIDs(c.GetChain()), Joining: MemberIDs(c.GetJoining())}
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
		row := Member{ID: m.GetId(), Addr: m.GetAddr(), Role: role, Incarnation: hexInc(m.GetIncarnation())}
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
func crossCheck(ch *Chain, rows []Node) {
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
