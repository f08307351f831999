package master

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
)

const ft = 300 * time.Millisecond // failure timeout of the Decide tests

// t0 is an arbitrary origin for the Decide tests' clocks.
var t0 = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)

// at returns t0 + d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// rep is a heartbeat report of m received at when; opts adjust it.
func rep(m Member, when time.Time, opts ...func(*Report)) Report {
	r := Report{Member: m, At: when, Since: when, Role: api.Role_MIDDLE}
	for _, o := range opts {
		o(&r)
	}
	return r
}

// linkedIn marks a report as linked to its predecessor in epoch e.
func linkedIn(e uint64) func(*Report) {
	return func(r *Report) { r.Linked, r.Epoch, r.Role = true, e, api.Role_JOINING }
}

// inEpoch sets the report's installed epoch.
func inEpoch(e uint64) func(*Report) { return func(r *Report) { r.Epoch = e } }

// durable sets the report's durable seq.
func durable(seq uint64) func(*Report) { return func(r *Report) { r.Durable = seq } }

// firstHeard sets when the leader first heard from the report's incarnation.
func firstHeard(t time.Time) func(*Report) { return func(r *Report) { r.Since = t } }

// withRole sets the report's role.
func withRole(role api.Role) func(*Report) { return func(r *Report) { r.Role = role } }

// reports indexes reports by node id.
func reports(rs ...Report) map[string]Report {
	out := map[string]Report{}
	for _, r := range rs {
		out[r.ID] = r
	}
	return out
}

// decideChecked runs Decide and checks the rules every decision keeps: it
// mutates neither the configuration nor the reports, it is deterministic,
// and whatever it proposes Apply accepts.
func decideChecked(t *testing.T, c Config, rs map[string]Report, now, since time.Time) (Command, bool) {
	t.Helper()
	before, rsBefore := c.Clone(), maps.Clone(rs)
	cmd, ok := Decide(c, rs, now, since, ft)
	if !reflect.DeepEqual(c, before) || !reflect.DeepEqual(rs, rsBefore) {
		t.Errorf("Decide mutated its inputs")
	}
	for range 10 {
		if cmd2, ok2 := Decide(c, rs, now, since, ft); !reflect.DeepEqual(cmd2, cmd) || ok2 != ok {
			t.Fatalf("Decide not deterministic: %+v %v, then %+v %v", cmd, ok, cmd2, ok2)
		}
	}
	if ok {
		if cmd.Epoch != c.Epoch {
			t.Errorf("Decide(%v) proposed %+v with epoch %d, want the current %d", c, cmd, cmd.Epoch, c.Epoch)
		}
		if cmd.Reason == "" {
			t.Errorf("Decide(%v) proposed %+v without a reason", c, cmd)
		}
		if _, err := Apply(c, cmd); err != nil {
			t.Errorf("Decide(%v) proposed %+v, which Apply refuses: %v", c, cmd, err)
		}
	} else if !reflect.DeepEqual(cmd, Command{}) {
		t.Errorf("Decide returned no command but a non-zero %+v", cmd)
	}
	return cmd, ok
}

// TestDecide checks each rule of the leader's policy.
func TestDecide(t *testing.T) {
	a1, b1, c1, d1, e1 := mem("a", 1), mem("b", 1), mem("c", 1), mem("d", 1), mem("e", 1)
	a2, b2, c2 := mem("a", 2), mem("b", 2), mem("c", 2)
	long := at(-time.Hour) // a leader that took office long ago
	// alive are fresh reports of every member of an [a b c] +[d] chain.
	alive := func(now time.Time) []Report {
		return []Report{rep(a1, now), rep(b1, now), rep(c1, now), rep(d1, now)}
	}
	tests := []struct {
		name    string
		cfg     Config
		reports []Report
		now     time.Time
		since   time.Time // leaderSince
		want    Command   // Reason checked only if set
		wantOK  bool
	}{
		// Rule 1: removal of silent members.
		{name: "everyone heartbeating: nothing to do",
			cfg: conf(5, ms(a1, b1, c1), ms(d1)), reports: alive(at(0)), now: at(0), since: long},
		{name: "member silent for more than the failure timeout is removed",
			cfg:     conf(5, ms(a1, b1, c1), nil),
			reports: []Report{rep(a1, at(0)), rep(b1, at(-ft-time.Millisecond)), rep(c1, at(0))},
			now:     at(0), since: long,
			want:   Command{Op: OpRemove, Member: b1, Epoch: 5, Reason: "heartbeat lost"},
			wantOK: true},
		{name: "member silent for exactly the failure timeout stays",
			cfg:     conf(5, ms(a1, b1, c1), nil),
			reports: []Report{rep(a1, at(0)), rep(b1, at(-ft)), rep(c1, at(0))},
			now:     at(0), since: long},
		{name: "new leader with no reports removes nobody within the failure timeout",
			cfg: conf(5, ms(a1, b1, c1), ms(d1)), now: at(ft), since: at(0)},
		{name: "new leader with no reports: every member down, nobody is removed",
			cfg: conf(5, ms(a1, b1, c1), nil), now: at(ft + time.Millisecond), since: at(0)},
		{name: "report older than leaderSince counts from leaderSince",
			cfg:     conf(5, ms(a1, b1), nil),
			reports: []Report{rep(a1, at(-time.Hour)), rep(b1, at(-time.Hour))},
			now:     at(ft), since: at(0)},
		{name: "new leader: the member that heartbeats stays, the silent one goes",
			cfg:     conf(5, ms(a1, b1), nil),
			reports: []Report{rep(b1, at(ft))},
			now:     at(ft + time.Millisecond), since: at(0),
			want: Command{Op: OpRemove, Member: a1, Epoch: 5}, wantOK: true},
		{name: "last chain member is never removed",
			cfg: conf(9, ms(a1), nil), now: at(time.Hour), since: at(0)},
		{name: "last chain member is never removed, even with joiners alive",
			cfg: conf(9, ms(a1), ms(b1)), reports: []Report{rep(b1, at(time.Hour))},
			now: at(time.Hour), since: at(0)},
		{name: "all chain members silent: nobody is removed (a whole-chain outage)",
			cfg: conf(5, ms(a1, b1, c1), nil), now: at(time.Hour), since: at(0)},

		// Whole-chain outages: the chain is rebuilt from the restarted members.
		{name: "outage: the rebuild waits for every member to come back",
			cfg:     conf(5, ms(a1, b1, c1), nil),
			reports: []Report{rep(a2, at(0), durable(90)), rep(b2, at(0), durable(80))},
			now:     at(0), since: long},
		{name: "outage: every member back, the longest durable history heads the rebuilt chain",
			cfg:     conf(5, ms(a1, b1, c1), nil),
			reports: []Report{rep(a2, at(0), durable(80)), rep(b2, at(0), durable(95)), rep(c2, at(0), durable(80))},
			now:     at(0), since: long,
			want: Command{Op: OpRebuild, Member: b2, Chain: ms(b2, a2, c2), Epoch: 5}, wantOK: true},
		{name: "outage: after RebuildWait failure timeouts, the members that came back are enough",
			cfg:     conf(5, ms(a1, b1, c1), nil),
			reports: []Report{rep(a2, at(0), durable(70), firstHeard(at(-RebuildWait*ft))), rep(c2, at(0), durable(75))},
			now:     at(0), since: long,
			want: Command{Op: OpRebuild, Member: c2, Chain: ms(c2, a2), Epoch: 5}, wantOK: true},
		{name: "a restarted member waits until the others are heard from after its restart",
			cfg:     conf(5, ms(a1, b1, c1), nil),
			reports: []Report{rep(a1, at(-10*time.Millisecond)), rep(b2, at(0)), rep(c1, at(-10*time.Millisecond))},
			now:     at(0), since: long},
		{name: "two members restarted while the third runs: the first is replaced, neither waits for the other",
			cfg: conf(5, ms(a1, b1, c1), nil),
			reports: []Report{rep(a2, at(0), firstHeard(at(-20*time.Millisecond))), rep(b2, at(0), firstHeard(at(-20*time.Millisecond))),
				rep(c1, at(0))},
			now: at(0), since: long,
			want: Command{Op: OpJoin, Member: a2, Epoch: 5, Reason: "restarted"}, wantOK: true},
		{name: "every member restarted at once: the chain is rebuilt, not replaced member by member",
			cfg:     conf(5, ms(a1, b1, c1), nil),
			reports: []Report{rep(a2, at(0), durable(9)), rep(b2, at(0), durable(9)), rep(c2, at(0), durable(8))},
			now:     at(0), since: long,
			want: Command{Op: OpRebuild, Member: a2, Chain: ms(a2, b2, c2), Epoch: 5}, wantOK: true},
		{name: "outage: a new node does not wait for the rebuild to join",
			cfg:     conf(5, ms(a1, b1), nil),
			reports: []Report{rep(a2, at(0)), rep(e1, at(0))},
			now:     at(0), since: long,
			want: Command{Op: OpJoin, Member: e1, Epoch: 5, Reason: "new node"}, wantOK: true},
		{name: "silent joiner is removed",
			cfg:     conf(5, ms(a1), ms(b1, d1)),
			reports: []Report{rep(a1, at(0)), rep(b1, at(0)), rep(d1, at(-ft-1))},
			now:     at(0), since: long,
			want: Command{Op: OpRemove, Member: d1, Epoch: 5, Reason: "heartbeat lost while joining"}, wantOK: true},
		{name: "silent joiner of a dead last member is removed",
			cfg: conf(5, ms(a1), ms(b1)), now: at(time.Hour), since: at(0),
			want: Command{Op: OpRemove, Member: b1, Epoch: 5}, wantOK: true},
		{name: "silent chain member goes before a silent joiner",
			cfg:     conf(5, ms(a1, b1), ms(d1)),
			reports: []Report{rep(a1, at(time.Hour))},
			now:     at(time.Hour), since: at(0),
			want: Command{Op: OpRemove, Member: b1, Epoch: 5}, wantOK: true},
		{name: "heartbeat of another incarnation elsewhere does not keep a member alive",
			cfg:     conf(5, ms(a1, b1), nil),
			reports: []Report{rep(moved(a2), at(0)), rep(b1, at(0))},
			now:     at(0), since: long,
			want: Command{Op: OpRemove, Member: a1, Epoch: 5, Reason: "heartbeat lost"}, wantOK: true},
		{name: "heartbeat of another incarnation elsewhere does not keep a joiner alive",
			cfg:     conf(5, ms(a1), ms(b1)),
			reports: []Report{rep(a1, at(0)), rep(moved(b2), at(0))},
			now:     at(0), since: long,
			want: Command{Op: OpRemove, Member: b1, Epoch: 5}, wantOK: true},
		{name: "a member restarted at its address is replaced in one step, not removed as silent",
			cfg:     conf(5, ms(a1, b1), nil),
			reports: []Report{rep(a2, at(0), firstHeard(at(-time.Millisecond))), rep(b1, at(0))},
			now:     at(0), since: long,
			want: Command{Op: OpJoin, Member: a2, Epoch: 5, Reason: "restarted"}, wantOK: true},
		{name: "a joiner restarted at its address is replaced in one step",
			cfg:     conf(5, ms(a1), ms(b1)),
			reports: []Report{rep(a1, at(0)), rep(b2, at(0), firstHeard(at(-time.Millisecond)))},
			now:     at(0), since: long,
			want: Command{Op: OpJoin, Member: b2, Epoch: 5}, wantOK: true},
		{name: "removal comes before a join",
			cfg:     conf(5, ms(a1, b1), nil),
			reports: []Report{rep(a1, at(0)), rep(e1, at(0))},
			now:     at(0), since: long,
			want: Command{Op: OpRemove, Member: b1, Epoch: 5}, wantOK: true},

		// Rule 2: joins.
		{name: "first heartbeat of a new node joins it (and so starts a chain)",
			cfg: Config{}, reports: []Report{rep(a1, at(0), withRole(api.Role_ROLE_UNSPECIFIED))},
			now: at(0), since: at(0),
			want: Command{Op: OpJoin, Member: a1, Epoch: 0, Reason: "new node"}, wantOK: true},
		{name: "recent heartbeat of a non-member joins it as a new node",
			cfg: conf(5, ms(a1), nil), reports: []Report{rep(a1, at(0)), rep(e1, at(0))},
			now: at(0), since: long,
			want: Command{Op: OpJoin, Member: e1, Epoch: 5, Reason: "new node"}, wantOK: true},
		{name: "heartbeat of a non-member exactly the failure timeout old still joins",
			cfg: conf(5, ms(a1), nil), reports: []Report{rep(a1, at(0)), rep(e1, at(-ft))},
			now: at(0), since: long,
			want: Command{Op: OpJoin, Member: e1, Epoch: 5}, wantOK: true},
		{name: "stale heartbeat of a non-member does not join it",
			cfg: conf(5, ms(a1), nil), reports: []Report{rep(a1, at(0)), rep(e1, at(-ft-time.Millisecond))},
			now: at(0), since: long},
		{name: "removed node heartbeating again rejoins",
			cfg:     conf(5, ms(a1), nil),
			reports: []Report{rep(a1, at(0)), rep(b1, at(0), withRole(api.Role_REMOVED))},
			now:     at(0), since: long,
			want: Command{Op: OpJoin, Member: b1, Epoch: 5, Reason: "removed earlier, back"}, wantOK: true},
		{name: "restarted chain member rejoins before its old incarnation times out",
			cfg:     conf(5, ms(a1, b1), nil),
			reports: []Report{rep(a1, at(0)), rep(b2, at(0), firstHeard(at(-time.Millisecond)))},
			now:     at(0), since: at(-ft / 2),
			want: Command{Op: OpJoin, Member: b2, Epoch: 5, Reason: "restarted"}, wantOK: true},
		{name: "restarted joiner is joined anew",
			cfg:     conf(5, ms(a1), ms(b1)),
			reports: []Report{rep(a1, at(0)), rep(b2, at(0), firstHeard(at(-time.Millisecond)))},
			now:     at(0), since: at(-ft / 2),
			want: Command{Op: OpJoin, Member: b2, Epoch: 5}, wantOK: true},
		{name: "restarted last chain member: the chain is rebuilt from its durable history",
			cfg: conf(5, ms(a1), nil), reports: []Report{rep(a2, at(0), durable(7))},
			now: at(0), since: at(-ft / 2),
			want: Command{Op: OpRebuild, Member: a2, Chain: ms(a2), Epoch: 5}, wantOK: true},
		{name: "several new nodes: the smallest id joins first",
			cfg:     conf(5, ms(a1), nil),
			reports: []Report{rep(a1, at(0)), rep(e1, at(0)), rep(c1, at(0)), rep(d1, at(0))},
			now:     at(0), since: long,
			want: Command{Op: OpJoin, Member: c1, Epoch: 5}, wantOK: true},
		{name: "join comes before an append",
			cfg:     conf(5, ms(a1), ms(b1)),
			reports: []Report{rep(a1, at(0)), rep(b1, at(0), linkedIn(5)), rep(c1, at(0))},
			now:     at(0), since: long,
			want: Command{Op: OpJoin, Member: c1, Epoch: 5}, wantOK: true},

		// Rule 3: appends.
		{name: "joiner linked in the current epoch is appended",
			cfg:     conf(5, ms(a1, b1), ms(d1)),
			reports: []Report{rep(a1, at(0)), rep(b1, at(0)), rep(d1, at(0), linkedIn(5))},
			now:     at(0), since: long,
			want: Command{Op: OpAppend, Member: d1, Epoch: 5, Reason: "caught up with the tail"}, wantOK: true},
		{name: "first linked joiner in joining order is appended",
			cfg:     conf(5, ms(a1), ms(d1, b1)),
			reports: []Report{rep(a1, at(0)), rep(b1, at(0), linkedIn(5)), rep(d1, at(0), linkedIn(5))},
			now:     at(0), since: long,
			want: Command{Op: OpAppend, Member: d1, Epoch: 5}, wantOK: true},
		{name: "joiner linked in an earlier epoch is not appended",
			cfg:     conf(5, ms(a1), ms(d1)),
			reports: []Report{rep(a1, at(0)), rep(d1, at(0), linkedIn(4))},
			now:     at(0), since: long},
		{name: "joiner in the current epoch but not linked is not appended",
			cfg:     conf(5, ms(a1), ms(d1)),
			reports: []Report{rep(a1, at(0)), rep(d1, at(0), inEpoch(5))},
			now:     at(0), since: long},
		{name: "joiner linked but the tail is dead: not appended",
			cfg:     conf(5, ms(a1), ms(d1)),
			reports: []Report{rep(a1, at(-ft-time.Millisecond)), rep(d1, at(0), linkedIn(5))},
			now:     at(0), since: long},
		{name: "joiner linked but the tail restarted: not appended, the chain is rebuilt",
			cfg:     conf(5, ms(a1), ms(d1)),
			reports: []Report{rep(d1, at(0), linkedIn(5)), rep(a2, at(0))},
			now:     at(0), since: at(-ft - time.Millisecond),
			want: Command{Op: OpRebuild, Member: a2, Chain: ms(a2), Epoch: 5}, wantOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := decideChecked(t, tt.cfg, reports(tt.reports...), tt.now, tt.since)
			if ok != tt.wantOK {
				t.Fatalf("Decide(%v) = %+v, %v; want ok=%v", tt.cfg, got, ok, tt.wantOK)
			}
			if !ok {
				return
			}
			want := tt.want
			if want.Reason == "" {
				want.Reason = got.Reason
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Decide(%v) = %+v, want %+v", tt.cfg, got, want)
			}
		})
	}
}

// TestDecideNewLeaderWaitsFailureTimeout sweeps the clock of a new leader
// that has heard from nobody: it removes no one until failureTimeout after
// it took office, then removes the silent members one by one, never the
// last.
func TestDecideNewLeaderWaitsFailureTimeout(t *testing.T) {
	since := at(0)
	c := conf(3, ms(mem("a", 1), mem("b", 1), mem("c", 1)), nil)
	for d := time.Duration(0); d <= ft; d += ft / 30 {
		if cmd, ok := decideChecked(t, c, nil, at(d), since); ok {
			t.Fatalf("new leader decided %+v after %v, before the failure timeout %v", cmd, d, ft)
		}
	}
	now := at(ft + time.Nanosecond)
	var removed []string
	for {
		cmd, ok := decideChecked(t, c, nil, now, since)
		if !ok {
			break
		}
		if cmd.Op != OpRemove {
			t.Fatalf("decided %+v, want only removals", cmd)
		}
		next, err := Apply(c, cmd)
		if err != nil {
			t.Fatal(err)
		}
		removed, c = append(removed, cmd.Member.ID), next
	}
	// Every member is silent: a whole-chain outage, in which nobody is
	// removed (the chain waits for its members to come back).
	if len(removed) != 0 || c.String() != "e3 [a b c]" {
		t.Errorf("removed %v leaving %v; want nobody removed from e3 [a b c]", removed, c)
	}
}

// TestDecideDrivesAJoin runs the policy with Apply as the master would: a
// new node's heartbeats make it join, its link in the current epoch makes
// it the tail, and a link reported in the previous epoch does not.
func TestDecideDrivesAJoin(t *testing.T) {
	a1, b1 := mem("a", 1), mem("b", 1)
	now := at(0)
	rs := reports(rep(a1, now))
	var c Config
	step := func(wantOp Op) {
		t.Helper()
		cmd, ok := decideChecked(t, c, rs, now, at(-time.Hour))
		if wantOp == "" {
			if ok {
				t.Fatalf("in %v decided %+v, want nothing", c, cmd)
			}
			return
		}
		if !ok || cmd.Op != wantOp {
			t.Fatalf("in %v decided %+v %v, want %s", c, cmd, ok, wantOp)
		}
		next, err := Apply(c, cmd)
		if err != nil {
			t.Fatalf("Apply refused %+v: %v", cmd, err)
		}
		c = next
	}
	step(OpJoin) // a starts the chain
	step("")
	rs["b"] = rep(b1, now, inEpoch(1))
	step(OpJoin) // b joins at e2
	step("")
	rs["b"] = rep(b1, now, linkedIn(1)) // linked, but in the previous epoch
	step("")
	rs["b"] = rep(b1, now, linkedIn(2))
	step(OpAppend)
	step("")
	if c.String() != "e3 [a b]" {
		t.Errorf("config %v, want e3 [a b]", c)
	}
}

// TestDecideDeterministic checks that the same inputs give the same
// command, whatever the map's iteration order, over many random inputs,
// and that what it proposes Apply accepts.
func TestDecideDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	ids := []string{"a", "b", "c", "d", "e", "f"}
	for run := 0; run < 1000; run++ {
		var c Config
		c.Epoch = uint64(1 + rng.IntN(20))
		for _, id := range ids {
			switch rng.IntN(3) {
			case 0:
				c.Chain = append(c.Chain, mem(id, 1))
			case 1:
				c.Joining = append(c.Joining, mem(id, 1))
			}
		}
		if len(c.Chain) == 0 {
			c.Chain = append(c.Chain, mem("z", 1))
		}
		rs := map[string]Report{}
		for _, id := range append(ids, "z") {
			if rng.IntN(4) == 0 {
				continue
			}
			r := rep(mem(id, uint64(1+rng.IntN(2))), at(-time.Duration(rng.IntN(int(2*ft)))))
			r.Epoch = c.Epoch - uint64(rng.IntN(2))
			r.Linked = rng.IntN(2) == 0
			if rng.IntN(5) == 0 {
				r.Role = api.Role_REMOVED
			}
			rs[id] = r
		}
		since := at(-time.Duration(rng.IntN(int(2 * ft))))
		want, wantOK := decideChecked(t, c, rs, at(0), since)
		// The same reports in a freshly built map iterate in another order.
		for range 5 {
			rs2 := map[string]Report{}
			for _, k := range rng.Perm(len(ids) + 1) {
				id := append(ids, "z")[k]
				if r, ok := rs[id]; ok {
					rs2[id] = r
				}
			}
			if got, ok := Decide(c, rs2, at(0), since, ft); !reflect.DeepEqual(got, want) || ok != wantOK {
				t.Fatalf("run %d: Decide(%v) gave %+v %v, then %+v %v", run, c, want, wantOK, got, ok)
			}
		}
		if t.Failed() {
			t.Fatalf("run %d: config %v reports %+v", run, c, rs)
		}
	}
}

// TestDecideNeverProposesRefusedCommands checks the promise that a stuck
// condition does not fill the log: from any reachable configuration,
// whatever Decide proposes Apply accepts (decideChecked checks it), so a
// master loop of Decide+Apply always makes progress or stops.
func TestDecideNeverProposesRefusedCommands(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	for run := 0; run < 60; run++ {
		var c Config
		rs := map[string]Report{}
		now := at(0)
		since := now
		for step := 0; step < 100; step++ {
			now = now.Add(time.Duration(rng.IntN(int(ft / 2))))
			// Random heartbeats: a node reports in some incarnation and epoch.
			for range rng.IntN(3) {
				id := fmt.Sprintf("n%d", rng.IntN(4))
				r := rep(mem(id, uint64(1+rng.IntN(2))), now, inEpoch(c.Epoch))
				r.Linked = rng.IntN(2) == 0
				rs[id] = r
			}
			if rng.IntN(20) == 0 {
				since = now // a new leader
				clear(rs)
			}
			cmd, ok := decideChecked(t, c, rs, now, since)
			if t.Failed() {
				t.Fatalf("run %d step %d: config %v reports %+v", run, step, c, rs)
			}
			if ok {
				next, err := Apply(c, cmd)
				if err != nil {
					t.Fatalf("run %d step %d: Apply(%v, %+v): %v", run, step, c, cmd, err)
				}
				c = next
			}
		}
	}
}

// TestDecideRestartedMemberReplacedInOneStep checks rule 2 for a restarted
// chain member under a leader that has led for long: the new
// incarnation's heartbeat joins it with reason "restarted", and the join
// drops the old incarnation in the same step (OpJoin's doc), rather than
// rule 1 first removing the old incarnation as silent although it was
// heard from a moment ago.
func TestDecideRestartedMemberReplacedInOneStep(t *testing.T) {
	a1, b1, b2 := mem("a", 1), mem("b", 1), mem("b", 2)
	c := conf(5, ms(a1, b1), nil)
	// b1 heartbeated 20 ms ago; then its process restarted as b2, whose
	// report replaced b1's.
	rs := reports(rep(a1, at(0)), rep(b2, at(0), firstHeard(at(-time.Millisecond))))
	got, ok := decideChecked(t, c, rs, at(0), at(-time.Hour))
	want := Command{Op: OpJoin, Member: b2, Epoch: 5, Reason: "restarted"}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Errorf("Decide(%v) = %+v, %v; want %+v", c, got, ok, want)
	}
}

// moved returns m as if its process ran at another address.
func moved(m Member) Member {
	m.Addr = "elsewhere.test:7000"
	return m
}
