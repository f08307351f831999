package master

import (
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
)

// TestLeaderForgetsNodesThatAreGone: the leader drops the report of a
// node that is neither in the configuration nor heard from for the
// forget period, and keeps every member's (silent or not) and every
// recently heard node's; a forgotten node that comes back joins again.
func TestLeaderForgetsNodesThatAreGone(t *testing.T) {
	l := NewLeader(t0)
	n1, n2 := Member{ID: "n1", Addr: "a1", Incarnation: 1}, Member{ID: "n2", Addr: "a2", Incarnation: 2}
	cfg := Config{Epoch: 3, Chain: []Member{n1, n2}}
	beat := func(id string, inc uint64, when time.Time) HeartbeatResult {
		return l.Heartbeat(cfg, &api.HeartbeatRequest{Id: id, Addr: id + ":7000", Incarnation: inc}, when, time.Second)
	}
	beat("n1", 1, at(0))
	beat("n2", 2, at(0))
	for i, id := range []string{"gone1", "gone2", "late"} {
		beat(id, uint64(10+i), at(0))
	}
	beat("late", 12, at(50*time.Second))
	if n := l.Forget(cfg, at(30*time.Second), time.Minute); n != 0 || l.Reports() != 5 {
		t.Fatalf("forgot %d before the period, %d reports left", n, l.Reports())
	}
	if n := l.Forget(cfg, at(61*time.Second), time.Minute); n != 2 || l.Reports() != 3 {
		t.Fatalf("forgot %d, %d reports left; want 2 forgotten (gone1, gone2), 3 left", n, l.Reports())
	}
	for _, id := range []string{"n1", "n2", "late"} {
		if _, ok := l.Report(id); !ok {
			t.Errorf("%s forgotten", id)
		}
	}
	if res := beat("gone1", 10, at(62*time.Second)); res.Member || !res.Wake {
		t.Errorf("a forgotten node back: %+v, want a non-member that wakes the policy (to join)", res)
	}
}
