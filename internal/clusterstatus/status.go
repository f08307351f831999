package clusterstatus

import "github.com/gavel-auction/gavel/api"

// Status is the cluster as its masters and nodes report it. Its JSON form
// is `gavel status --json` with masters: one object.
type Status struct {
	Leader  string   `json:"leader"` // id of the master leader; "" when none answered as leader
	Masters []Master `json:"masters"`
	Chain   *Chain   `json:"chain"` // null when no master answered
	Nodes   []Node   `json:"nodes"` // each node's own status
	// Newest is the newest configuration among the nodes' own answers;
	// nil when none answered with one.
	Newest *api.ChainConfig `json:"-"`
}

// Up counts the masters and nodes that answered.
func (s *Status) Up() int {
	up := 0
	for _, m := range s.Masters {
		if m.Up {
			up++
		}
	}
	for _, n := range s.Nodes {
		if n.Up {
			up++
		}
	}
	return up
}

// Node is one node's status as the node reports it.
type Node struct {
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

// Master is one master's status as the master reports it.
type Master struct {
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

// Chain is the chain as a master sees it.
type Chain struct {
	Source  string   `json:"source"` // the master whose view this is
	Leader  bool     `json:"leader"` // source leads: it has the nodes' heartbeats
	Epoch   uint64   `json:"epoch"`
	Chain   []string `json:"chain"` // head first
	Joining []string `json:"joining"`
	Outside []string `json:"outside,omitempty"` // nodes of the config file in neither list
	Nodes   []Member `json:"nodes"`             // chain members head first, then joining nodes
}

// Member is one chain member or joining node as the master leader sees
// it, from the node's last heartbeat.
type Member struct {
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
