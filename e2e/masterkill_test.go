package e2e

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
)

// TestMasterLeaderKilledMidReconfiguration SIGKILLs the master leader in
// the middle of a reconfiguration, under load:
//
//   - removal: a node is SIGKILLed and, before the failure timeout has
//     run out (so before the leader can have removed it), the master
//     leader too. The new leader must complete the removal, and only
//     after giving every node its own full failure timeout.
//   - join: a node is SIGKILLed, spliced out, and restarted; as soon as the
//     leader has committed it as joining, the leader is SIGKILLed. The new
//     leader must complete the append (chain back to 3, nobody joining).
//
// Throughout, every master's Watch stream and every node's Status are
// followed: epochs only ever increase per observer, and one epoch never
// names two different configurations. A stale configuration pushed to a
// node by hand is refused. The killed master, restarted, catches up to the
// same epoch. The workload's history is checked as usual.
func TestMasterLeaderKilledMidReconfiguration(t *testing.T) {
	t.Run("removal", testLeaderKilledMidRemoval)
	t.Run("join", testLeaderKilledMidJoin)
}

func testLeaderKilledMidRemoval(t *testing.T) {
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1", "a2")
	stopOnCleanup(t, w)
	s := sampleSuccesses(t, w, 2*time.Millisecond)
	obs := followEpochs(t, c)
	w.start(6, 2)
	time.Sleep(time.Second)

	var oldLeader string
	var nodeKilled time.Time
	for attempt := 1; ; attempt++ {
		oldLeader = c.leader(5 * time.Second)
		before := c.config()
		victim := chainIDs(before)[0] // the head: no bid commits until the removal
		inc := memberIncarnation(before, victim)
		nodeKilled = time.Now()
		c.kill(victim)
		time.Sleep(100 * time.Millisecond)
		masterKilled := time.Now()
		c.kill(oldLeader)
		// While no master leads, a stale configuration pushed by hand is
		// refused too.
		c.checkStaleConfigRefused(t, chainIDs(before)[len(before.Chain)-1])
		newLeader := c.leader(10 * time.Second)
		elected := time.Since(masterKilled)
		after := c.waitConfig(victim+" removed", 10*time.Second, func(cfg *api.ChainConfig) bool {
			return memberIncarnation(cfg, victim) == 0
		})
		removedAt := time.Now()
		t.Logf("attempt %d: SIGKILLed %s (%s), then leader %s %v later; %s leads %v after that; %s removed %v after the node kill, %v after the leader kill: %s",
			attempt, victim, describeConfig(before), oldLeader, masterKilled.Sub(nodeKilled).Round(time.Millisecond), newLeader,
			elected.Round(time.Millisecond), victim, removedAt.Sub(nodeKilled).Round(time.Millisecond),
			removedAt.Sub(masterKilled).Round(time.Millisecond), describeConfig(after))

		// From the masters' logs: which master committed the removal as
		// leader (followers log commits at DEBUG, and so does a new leader
		// for what it commits before it takes office).
		by, rm := c.waitLeaderLog("node removed from the chain", victim, inc)
		if by == "" || by == oldLeader {
			// The old leader decided the removal before the kill landed
			// (it can only on a machine slow enough to stretch 100 ms past
			// the failure timeout): the scenario did not happen. Bring
			// both back and redo it.
			t.Logf("attempt %d: the removal was decided by the old leader %s (logged as leader by %q); again", attempt, oldLeader, by)
			if attempt == 3 {
				t.Fatalf("in 3 attempts the old leader always removed the node before the kill landed")
			}
			c.start(oldLeader)
			c.waitMasterRejoined(oldLeader, 15*time.Second)
			c.start(victim)
			c.waitConfig(victim+" back", 15*time.Second, func(cfg *api.ChainConfig) bool {
				return slices.Contains(chainIDs(cfg), victim) && len(cfg.Joining) == 0
			})
			continue
		}
		want := slices.DeleteFunc(chainIDs(before), func(id string) bool { return id == victim })
		if !slices.Equal(chainIDs(after), want) || len(after.Joining) != 0 || after.Epoch != before.Epoch+1 {
			t.Errorf("after the removal: %s, want epoch %d chain %v", describeConfig(after), before.Epoch+1, want)
		}
		if d := removedAt.Sub(masterKilled); d < failureTimeout {
			t.Errorf("%s was removed %v after the leader kill: the new leader did not wait a failure timeout (%v)", victim, d, failureTimeout)
		}
		took := c.leaderSince(by, rm)
		t.Logf("%s removed %s %v after it took office (failure timeout %v)", by, victim, rm.at.Sub(took.at), failureTimeout)
		// Log times are in milliseconds; "elected" is logged just after
		// the leader starts counting.
		if rm.at.Sub(took.at) < failureTimeout-3*time.Millisecond {
			t.Errorf("%s removed %s %v after taking office, less than a failure timeout (%v):\n%s\n%s",
				by, victim, rm.at.Sub(took.at), failureTimeout, took.raw, rm.raw)
		}
		break
	}

	finishMasterKill(t, c, w, s, obs, oldLeader, nodeKilled)
}

func testLeaderKilledMidJoin(t *testing.T) {
	const victim = "n2"
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1", "a2")
	stopOnCleanup(t, w)
	s := sampleSuccesses(t, w, 2*time.Millisecond)
	obs := followEpochs(t, c)
	w.start(6, 2)
	time.Sleep(time.Second)

	var oldLeader string
	var nodeKilled time.Time
	for attempt := 1; ; attempt++ {
		oldLeader = c.leader(5 * time.Second)
		before := c.config()
		nodeKilled = time.Now()
		c.kill(victim)
		removed := c.waitConfig(victim+" removed", 10*time.Second, func(cfg *api.ChainConfig) bool {
			return memberIncarnation(cfg, victim) == 0
		})
		t.Logf("attempt %d: SIGKILLed %s (%s); removed after %v: %s", attempt, victim, describeConfig(before),
			time.Since(nodeKilled).Round(time.Millisecond), describeConfig(removed))

		// Follow the leader's configuration, restart the node, and kill the
		// leader the moment it has committed the node as joining.
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		stream, err := c.master(oldLeader).Watch(ctx, &api.WatchRequest{AfterEpoch: removed.Epoch, Watcher: "e2e-join-trigger"})
		if err != nil {
			cancel()
			t.Fatalf("watch on %s: %v", oldLeader, err)
		}
		restarted := time.Now()
		c.start(victim)
		var seen *api.ChainConfig
		for seen == nil {
			cfg, err := stream.Recv()
			if err != nil {
				cancel()
				t.Fatalf("watch on %s: %v", oldLeader, err)
			}
			if memberIncarnation(cfg, victim) != 0 {
				seen = cfg
			}
		}
		masterKilled := time.Now()
		c.kill(oldLeader)
		cancel()
		c.checkStaleConfigRefused(t, chainIDs(seen)[0])
		inc := memberIncarnation(seen, victim)
		t.Logf("restarted %s; %s committed %s %v later; SIGKILLed leader %s", victim, oldLeader, describeConfig(seen),
			masterKilled.Sub(restarted).Round(time.Millisecond), oldLeader)

		newLeader := c.leader(10 * time.Second)
		elected := time.Since(masterKilled)
		wantChain := append(slices.DeleteFunc(chainIDs(removed), func(id string) bool { return id == victim }), victim)
		joined := c.waitConfig(victim+" appended", 15*time.Second, func(cfg *api.ChainConfig) bool {
			return slices.Equal(chainIDs(cfg), wantChain) && len(cfg.Joining) == 0 && memberIncarnation(cfg, victim) == inc
		})
		t.Logf("%s leads %v after the leader kill; %s appended %v after it: %s", newLeader, elected.Round(time.Millisecond),
			victim, time.Since(masterKilled).Round(time.Millisecond), describeConfig(joined))
		by, line := c.waitLeaderLog("join complete: node appended as tail", victim, inc)
		lost := !slices.Contains(joiningIDs(seen), victim) || by == oldLeader
		switch {
		case lost:
			// The old leader appended the node before the kill landed: the
			// scenario did not happen. Bring the master back and redo it.
			t.Logf("attempt %d: %s had already appended %s before it died; again", attempt, oldLeader, victim)
			if attempt == 3 {
				t.Fatalf("in 3 attempts the leader always appended the joiner before the kill landed")
			}
			c.start(oldLeader)
			c.waitMasterRejoined(oldLeader, 15*time.Second)
			continue
		case joined.Epoch != seen.Epoch+1:
			t.Errorf("append in epoch %d, joining in epoch %d: want exactly one epoch between", joined.Epoch, seen.Epoch)
		case by == "":
			t.Logf("no master logged the append as leader: the old leader's proposal was committed in the new term")
		default:
			took := c.leaderSince(by, line)
			t.Logf("%s appended %s %v after it took office", by, victim, line.at.Sub(took.at))
		}
		break
	}
	c.waitStatus(victim, 10*time.Second, "a readable tail", func(st *api.NodeStatus) bool {
		return st.Role == api.Role_TAIL && st.Readable
	})

	finishMasterKill(t, c, w, s, obs, oldLeader, nodeKilled)
}

// finishMasterKill ends both scenarios: a stale configuration is refused,
// the bids go on, the killed master catches up after a restart, the epoch
// observers saw nothing go backwards, and the history checks out.
func finishMasterKill(t *testing.T, c *cluster, w *workload, s *successSampler, obs *epochObserver, killedMaster string, faultAt time.Time) {
	t.Helper()
	cfg := c.config()
	// The head must have installed the leader's configuration first, or
	// its own change of epoch during the check would look like the stale
	// push taking effect.
	head := chainIDs(cfg)[0]
	deadline := time.Now().Add(5 * time.Second)
	for {
		st, err := c.nodeStatus(head)
		if err == nil && st.Config.GetEpoch() >= cfg.Epoch {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s has not installed epoch %d after 5s (status %v, %v)", head, cfg.Epoch, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.checkStaleConfigRefused(t, head)

	n0 := w.successes()
	time.Sleep(time.Second)
	if n := w.successes() - n0; n < 20 {
		t.Errorf("only %d bids succeeded after the reconfiguration", n)
	}

	restarted := time.Now()
	c.start(killedMaster)
	st := c.waitMasterRejoined(killedMaster, 15*time.Second)
	lead := c.config()
	t.Logf("restarted master %s: raft %s, leader %s, %s, after %v", killedMaster, st.RaftState, st.LeaderId,
		describeConfig(st.Config), time.Since(restarted).Round(time.Millisecond))
	if configKey(st.Config) != configKey(lead) {
		t.Errorf("restarted master %s has %s, the leader %s", killedMaster, describeConfig(st.Config), describeConfig(lead))
	}

	w.finish()
	s.stop()
	// Give the observers a moment on the restarted master's stream.
	time.Sleep(200 * time.Millisecond)
	obs.stop()
	t.Logf("write gap from the node kill on: %v (first success after it after %v); longest gap over the run (w.maxGap) %v",
		s.longestStall(faultAt, time.Now()).Round(time.Millisecond), s.firstAfter(faultAt).Round(time.Millisecond),
		w.maxGap.Round(time.Millisecond))
	w.verify(t, chainIDs(c.config())...)
}

// checkStaleConfigRefused pushes configurations with epochs below node
// id's to it through Admin.SetConfig: each must be refused with
// FailedPrecondition, and the node must keep its epoch, role and
// configuration. (A node that follows a master refuses every SetConfig,
// stale or not, with FailedPrecondition; the message says which rule
// refused it, and is logged.)
func (c *cluster) checkStaleConfigRefused(t *testing.T, id string) {
	t.Helper()
	st, err := c.nodeStatus(id)
	if err != nil {
		t.Fatalf("status of %s: %v", id, err)
	}
	cur := st.Config
	if cur.GetEpoch() < 2 {
		t.Fatalf("%s is in epoch %d: nothing older to push", id, cur.GetEpoch())
	}
	stale := []*api.ChainConfig{
		// The same members, one epoch back.
		{Epoch: cur.Epoch - 1, Chain: cur.Chain, Joining: cur.Joining},
		// The first epoch, making the node a chain of its own.
		{Epoch: 1, Chain: []*api.Member{{Id: id, Addr: c.addrs[id], Incarnation: st.Incarnation}}},
	}
	for _, cfg := range stale {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		rep, err := c.admin(id).SetConfig(ctx, cfg)
		cancel()
		if status.Code(err) != codes.FailedPrecondition {
			t.Errorf("SetConfig %s on %s (in epoch %d): reply %v, error %v; want FailedPrecondition",
				describeConfig(cfg), id, cur.Epoch, rep, err)
		} else {
			t.Logf("SetConfig %s on %s refused: %v", describeConfig(cfg), id, status.Convert(err).Message())
		}
	}
	after, err := c.nodeStatus(id)
	if err != nil {
		t.Fatalf("status of %s: %v", id, err)
	}
	if after.Config.GetEpoch() != cur.Epoch || after.Role != st.Role || configKey(after.Config) != configKey(cur) {
		t.Errorf("%s after the stale SetConfig calls: role %v %s; before: role %v %s", id, after.Role,
			describeConfig(after.Config), st.Role, describeConfig(cur))
	}
}

// epochObserver follows the chain configuration through every master's
// Watch stream and every node's Status, and checks that each observer
// (one Watch stream per master; one node process) only ever sees its
// epoch go up, and that an epoch always names the same configuration.
type epochObserver struct {
	t      *testing.T
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu       sync.Mutex // guards the fields below
	last     map[string]uint64
	count    map[string]int
	byEpoch  map[uint64]string // epoch -> configKey
	problems []string
}

// followEpochs starts observing c's masters and nodes; it stops when the
// test ends, or earlier with stop.
func followEpochs(t *testing.T, c *cluster) *epochObserver {
	ctx, cancel := context.WithCancel(context.Background())
	o := &epochObserver{t: t, cancel: cancel, last: map[string]uint64{}, count: map[string]int{}, byEpoch: map[uint64]string{}}
	// Connections are made here: c.conn may fail the test, which only the
	// test's goroutine may do.
	for _, id := range append(slices.Clone(c.masterIDs), c.ids...) {
		c.conn(id)
	}
	for _, id := range c.masterIDs {
		o.wg.Add(1)
		go func() { defer o.wg.Done(); o.watch(ctx, c, id) }()
	}
	o.wg.Add(1)
	go func() { defer o.wg.Done(); o.pollNodes(ctx, c) }()
	t.Cleanup(o.stop)
	return o
}

// watch follows one master's Watch stream, reopening it (after the last
// epoch seen) when it breaks, e.g. while the master is down.
func (o *epochObserver) watch(ctx context.Context, c *cluster, id string) {
	var after uint64
	for ctx.Err() == nil {
		stream, err := c.master(id).Watch(ctx, &api.WatchRequest{AfterEpoch: after, Watcher: "e2e-observer"})
		for err == nil {
			var cfg *api.ChainConfig
			if cfg, err = stream.Recv(); err == nil {
				o.record("watch "+id, cfg, true)
				after = max(after, cfg.GetEpoch())
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// pollNodes reads every node's status every 20 ms; each run of a node's
// process (incarnation) is an observer of its own.
func (o *epochObserver) pollNodes(ctx context.Context, c *cluster) {
	for {
		for _, id := range c.ids {
			if ctx.Err() != nil {
				return
			}
			cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
			st, err := c.admin(id).Status(cctx, &api.StatusRequest{})
			cancel()
			if err == nil && st.Config.GetEpoch() > 0 {
				o.record(fmt.Sprintf("status %s#%x", id, st.Incarnation), st.Config, false)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// record notes that observer saw cfg; strict observers (watch streams)
// must see a higher epoch every time, the others never a lower one.
func (o *epochObserver) record(observer string, cfg *api.ChainConfig, strict bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	e := cfg.GetEpoch()
	if prev, ok := o.last[observer]; ok && (e < prev || strict && e == prev) {
		o.problems = append(o.problems, fmt.Sprintf("%s saw epoch %d after epoch %d", observer, e, prev))
	}
	o.last[observer] = max(o.last[observer], e)
	o.count[observer]++
	key := configKey(cfg)
	if k, ok := o.byEpoch[e]; ok && k != key {
		o.problems = append(o.problems, fmt.Sprintf("%s saw epoch %d as %s, earlier seen as %s", observer, e, key, k))
	} else if !ok {
		o.byEpoch[e] = key
	}
}

// stop ends the observers and reports what they saw; it may be called
// more than once.
func (o *epochObserver) stop() {
	o.once.Do(func() {
		o.cancel()
		o.wg.Wait()
		o.mu.Lock()
		defer o.mu.Unlock()
		var seen []string
		for _, k := range slices.Sorted(maps.Keys(o.count)) {
			seen = append(seen, fmt.Sprintf("%s: %d up to epoch %d", k, o.count[k], o.last[k]))
		}
		o.t.Logf("epoch observers: %s", strings.Join(seen, "; "))
		for _, p := range o.problems {
			o.t.Errorf("epoch observer: %s", p)
		}
		for _, k := range []string{"watch m1", "watch m2", "watch m3"} {
			if o.count[k] == 0 {
				o.t.Errorf("epoch observer: %s saw no configuration at all", k)
			}
		}
	})
}

// configKey is a configuration written out in full, incarnations included.
func configKey(cfg *api.ChainConfig) string {
	var b strings.Builder
	fmt.Fprintf(&b, "e%d [", cfg.GetEpoch())
	for _, m := range cfg.GetChain() {
		fmt.Fprintf(&b, " %s#%x", m.Id, m.Incarnation)
	}
	b.WriteString(" ] +[")
	for _, m := range cfg.GetJoining() {
		fmt.Fprintf(&b, " %s#%x", m.Id, m.Incarnation)
	}
	b.WriteString(" ]")
	return b.String()
}

// waitLeaderLog looks through the masters' logs for the line a leader logs
// (at INFO; followers log the same commit at DEBUG) when it commits msg
// for node id of incarnation inc, and returns the master and the line, or
// "" when none has it after a second (the log line may trail the commit).
func (c *cluster) waitLeaderLog(msg, id string, inc uint64) (string, logLine) {
	c.t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		for _, m := range c.masterIDs {
			for _, l := range c.logLines(m) {
				if l.level == "INFO" && l.msg == msg && l.has("node", id) && l.has("incarnation", fmt.Sprint(inc)) {
					return m, l
				}
			}
		}
		if time.Now().After(deadline) {
			return "", logLine{}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// leaderSince returns master m's last "master leader elected" line before
// line: when m took office for the term in which it logged line.
func (c *cluster) leaderSince(m string, line logLine) logLine {
	c.t.Helper()
	var took logLine
	for _, l := range c.logLines(m) {
		if l.raw == line.raw {
			break
		}
		if l.msg == "master leader elected" {
			took = l
		}
	}
	if took.raw == "" {
		c.t.Fatalf("%s logged %q without being elected first", m, line.raw)
	}
	return took
}

// logLine is one slog line of a process's log.
type logLine struct {
	at         time.Time
	level, msg string
	raw        string
}

// has reports whether the line carries the attribute key=value.
func (l logLine) has(key, value string) bool {
	return strings.Contains(l.raw+" ", " "+key+"="+value+" ")
}

// logLines parses the slog text lines of id's log; other lines (such as
// hashicorp/raft's) are skipped.
func (c *cluster) logLines(id string) []logLine {
	c.t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, id+".log"))
	if err != nil {
		c.t.Fatalf("log of %s: %v", id, err)
	}
	var out []logLine
	for _, raw := range strings.Split(string(b), "\n") {
		ts, rest, ok := strings.Cut(strings.TrimPrefix(raw, "time="), " ")
		if !ok || !strings.HasPrefix(raw, "time=") {
			continue
		}
		l := logLine{raw: raw}
		if l.at, err = time.Parse(time.RFC3339Nano, ts); err != nil {
			continue
		}
		if lv, r, ok := strings.Cut(rest, " "); ok && strings.HasPrefix(lv, "level=") {
			l.level, rest = strings.TrimPrefix(lv, "level="), r
		}
		if m, ok := strings.CutPrefix(rest, `msg="`); ok {
			l.msg, _, _ = strings.Cut(m, `"`)
		} else if m, ok := strings.CutPrefix(rest, "msg="); ok {
			l.msg, _, _ = strings.Cut(m, " ")
		}
		out = append(out, l)
	}
	return out
}
