package clusterstatus

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
)

func TestMasterRowsPicksTheLeader(t *testing.T) {
	ok := func(id, state string, term, applied uint64) masterResult {
		return masterResult{ID: id, Status: &api.MasterStatus{Id: id, RaftState: state, Term: term, AppliedIndex: applied}}
	}
	down := masterResult{ID: "mx", Err: errors.New("refused")}
	cases := []struct {
		name   string
		res    []masterResult
		view   int
		leader bool
	}{
		{"none", []masterResult{down, down}, -1, false},
		{"one leader", []masterResult{ok("m1", "Follower", 3, 9), ok("m2", "Leader", 3, 9), down}, 1, true},
		{"deposed leader", []masterResult{ok("m1", "Leader", 2, 5), ok("m2", "Leader", 3, 9)}, 1, true},
		{"deposed leader first", []masterResult{ok("m2", "Leader", 3, 9), ok("m1", "Leader", 2, 5)}, 0, true},
		{"no leader: newest term", []masterResult{ok("m1", "Follower", 2, 9), ok("m2", "Candidate", 3, 5)}, 1, false},
		{"no leader: newest log", []masterResult{ok("m1", "Follower", 3, 5), down, ok("m3", "Follower", 3, 9)}, 2, false},
	}
	for _, c := range cases {
		rows, view, leader := masterRows(c.res)
		if view != c.view || leader != c.leader {
			t.Errorf("%s: view %d leader %v, want %d %v", c.name, view, leader, c.view, c.leader)
		}
		for i, r := range rows {
			if r.Leader != (c.leader && i == c.view) {
				t.Errorf("%s: row %d leader %v", c.name, i, r.Leader)
			}
		}
	}
}

func TestChainView(t *testing.T) {
	st := &api.MasterStatus{Id: "m2", Config: &api.ChainConfig{Epoch: 5,
		Chain:   []*api.Member{{Id: "n1", Incarnation: 1}, {Id: "n2", Incarnation: 2}, {Id: "n3", Incarnation: 3}},
		Joining: []*api.Member{{Id: "n4", Incarnation: 4}}},
		Nodes: []*api.NodeHealth{
			{Id: "n1", Incarnation: 1, Applied: 10, LastHeartbeatMs: 5},
			{Id: "n2", Incarnation: 99, Applied: 50, LastHeartbeatMs: 5}, // another run: not this member's
			{Id: "n3", Incarnation: 3, Applied: 8, LastHeartbeatMs: 5},
			{Id: "n4", Incarnation: 4, Applied: 1, LastHeartbeatMs: 5},
		}}
	ch := chainView(st, true, []string{"n1", "n2", "n3", "n4", "n5"})
	var got []string
	for _, n := range ch.Nodes {
		lag := "-"
		if n.Lag != nil {
			lag = strconv.FormatInt(*n.Lag, 10)
		}
		got = append(got, n.ID+":"+n.Role+":"+lag)
	}
	if want := "n1:head:0 n2:middle:- n3:tail:2 n4:joining:9"; strings.Join(got, " ") != want {
		t.Errorf("chain view %q, want %q", strings.Join(got, " "), want)
	}
	if strings.Join(ch.Outside, ",") != "n5" || ch.Nodes[1].Heard {
		t.Errorf("outside %v, n2 heard %v", ch.Outside, ch.Nodes[1].Heard)
	}
	single := chainView(&api.MasterStatus{Config: &api.ChainConfig{Epoch: 1, Chain: []*api.Member{{Id: "n1"}}}}, false, nil)
	if single.Nodes[0].Role != "single" || single.Nodes[0].Heard || single.Nodes[0].Lag != nil {
		t.Errorf("single: %+v", single.Nodes[0])
	}
}

func TestNodeRows(t *testing.T) {
	cfg := func(epoch uint64, ids ...string) *api.ChainConfig {
		c := &api.ChainConfig{Epoch: epoch}
		for _, id := range ids {
			c.Chain = append(c.Chain, &api.Member{Id: id})
		}
		return c
	}
	res := []client.NodeResult{
		{Addr: "a1", Status: &api.NodeStatus{Id: "n1", Role: api.Role_HEAD, Applied: 10, Config: cfg(3, "n1", "n2"), Incarnation: 0xab}},
		{Addr: "a2", Status: &api.NodeStatus{Id: "n2", Role: api.Role_TAIL, Applied: 7, Config: cfg(2, "n1", "n2", "n3")}},
		{Addr: "a3", Err: errors.New("refused")},
		{Addr: "a4", Err: errors.New("refused")},
	}
	rows, newest := nodeRows(res, map[string]string{"a3": "n3"})
	if newest.GetEpoch() != 3 {
		t.Errorf("newest configuration: epoch %d, want 3", newest.GetEpoch())
	}
	var got []string
	for _, r := range rows {
		lag := "-"
		if r.Lag != nil {
			lag = strconv.FormatInt(*r.Lag, 10)
		}
		got = append(got, r.ID+":"+r.Role+":"+lag+":"+r.Incarnation)
	}
	if want := "n1:head:0:ab n2:tail:3: n3:down:-: ?:down:-:"; strings.Join(got, " ") != want {
		t.Errorf("rows %q, want %q", strings.Join(got, " "), want)
	}
	if rows[2].Up || rows[2].Error != "refused" {
		t.Errorf("down row: %+v", rows[2])
	}
}

func TestCrossCheckNotesRestartedMembers(t *testing.T) {
	ch := &Chain{Nodes: []Member{{ID: "n1", Incarnation: "a"}, {ID: "n2", Incarnation: "b"}, {ID: "n3", Incarnation: "c"}}}
	crossCheck(ch, []Node{{ID: "n1", Up: true, Incarnation: "a"}, {ID: "n2", Up: true, Incarnation: "bb"},
		{ID: "n3", Incarnation: "cc"}})
	if ch.Nodes[0].Running != "" || ch.Nodes[1].Running != "bb" || ch.Nodes[2].Running != "" {
		t.Errorf("running incarnations: %+v", ch.Nodes)
	}
}
