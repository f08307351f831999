package e2e

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
)

// campaignKill is what the kill campaign records about one SIGKILL.
type campaignKill struct {
	n            int
	victim, kind string // kind: node or master
	role         string // head, middle, tail, single; leader or follower
	at           time.Time
	// detect: for a node, until the master removed it; for a master,
	// until a leader was available (0 when a follower was killed).
	detect time.Duration
	// back: from the restart until the victim was part of the system
	// again (node appended as tail, master a follower with the epoch).
	back time.Duration
	// firstOK: from the kill to the first successful bid after it;
	// gap: the longest stretch without a successful bid from the kill
	// until the next kill (or the end of the run), which covers the
	// removal, the rejoin and the append.
	firstOK, gap time.Duration
	epochAfter   uint64
}

// envInt reads a positive integer from the environment, or def.
func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestKillCampaign SIGKILLs random nodes and masters, one at a time, under
// load, in one cluster of 3 masters and 3 nodes, and restarts each victim
// before the next kill: a node must be spliced out by the master and come
// back as a new member appended at the tail; a master must leave a leader
// behind and rejoin from its data dir. The chain never empties (a node is
// killed only when all 3 are members) and Raft keeps its quorum (a master
// is killed only when all 3 run and agree). At the end the history is
// linearizable, no acknowledged bid is lost, and all nodes agree.
//
// GAVEL_KILLS sets the number of kills (default 30); GAVEL_CAMPAIGN_SEED
// replays a campaign's choice of victims and pauses.
func TestKillCampaign(t *testing.T) {
	kills := envInt(t, "GAVEL_KILLS", 30)
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("GAVEL_CAMPAIGN_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("GAVEL_CAMPAIGN_SEED=%q: %v", v, err)
		}
		seed = s
	}
	t.Logf("kill campaign: %d kills, GAVEL_CAMPAIGN_SEED=%d", kills, seed)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))

	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1", "a2", "a3")
	stopOnCleanup(t, w)
	s := sampleSuccesses(t, w, 2*time.Millisecond)
	w.start(6, 2)
	time.Sleep(time.Second)

	all := append(append([]string{}, c.ids...), c.masterIDs...)
	var log []*campaignKill
	started := time.Now()
	for i := 1; i <= kills; i++ {
		// Let the load run for a while so that kills land in every phase.
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond)
		victim := all[rng.IntN(len(all))]
		k := &campaignKill{n: i, victim: victim}
		if c.isMaster(victim) {
			k.kind = "master"
			c.killMaster(t, k)
		} else {
			k.kind = "node"
			c.killNode(t, k)
		}
		log = append(log, k)
	}
	time.Sleep(500 * time.Millisecond)
	end := time.Now()
	w.finish()
	s.stop()

	// Per-kill write gaps: from each kill to the next one.
	var gaps []time.Duration
	byKind := map[string]int{}
	for i, k := range log {
		to := end
		if i+1 < len(log) {
			to = log[i+1].at
		}
		k.gap = s.longestStall(k.at, to)
		k.firstOK = s.firstAfter(k.at)
		gaps = append(gaps, k.gap)
		byKind[k.kind+"/"+k.role]++
		t.Logf("kill %2d: %-6s %-2s %-8s detect %7v back %7v first ok %7v gap %7v epoch %d", k.n, k.kind, k.victim, k.role,
			k.detect.Round(time.Millisecond), k.back.Round(time.Millisecond), k.firstOK.Round(time.Millisecond),
			k.gap.Round(time.Millisecond), k.epochAfter)
	}
	var kinds []string
	for _, kr := range slices.Sorted(maps.Keys(byKind)) {
		kinds = append(kinds, fmt.Sprintf("%s=%d", kr, byKind[kr]))
	}
	slices.Sort(gaps)
	pct := func(p float64) time.Duration {
		if len(gaps) == 0 {
			return 0
		}
		return gaps[min(len(gaps)-1, int(p*float64(len(gaps))))].Round(time.Millisecond)
	}
	t.Logf("campaign: %d kills in %v (%s); per-kill write gap max %v median %v p90 %v; w.maxGap %v; %d successful bids",
		len(log), end.Sub(started).Round(time.Millisecond), strings.Join(kinds, " "), pct(1), pct(0.5), pct(0.9),
		w.maxGap.Round(time.Millisecond), w.successes())
	for _, kind := range []string{"node", "master"} {
		var ds []time.Duration
		for _, k := range log {
			if k.kind == kind && k.detect > 0 {
				ds = append(ds, k.detect)
			}
		}
		if len(ds) > 0 {
			slices.Sort(ds)
			t.Logf("%s kills: detection (removal or new leader) median %v max %v", kind,
				ds[len(ds)/2].Round(time.Millisecond), ds[len(ds)-1].Round(time.Millisecond))
		}
	}

	if len(log) < kills {
		t.Errorf("only %d kills happened, want %d", len(log), kills)
	}
	if n := w.successes(); n < 500 {
		t.Errorf("only %d successful bids over the campaign, want at least 500", n)
	}
	w.verify(t, c.ids...)
}

// killNode SIGKILLs node k.victim, waits until the master removed it,
// restarts it, and waits until the new incarnation is appended as tail.
func (c *cluster) killNode(t *testing.T, k *campaignKill) {
	t.Helper()
	cfg := c.config()
	for _, id := range c.ids {
		if !c.running(id) {
			t.Fatalf("kill %d: node %s is not running", k.n, id)
		}
	}
	if len(cfg.GetChain()) < 2 || len(cfg.GetJoining()) != 0 {
		t.Fatalf("kill %d: refusing to kill a node with %s", k.n, describeConfig(cfg))
	}
	k.role = chainRole(cfg, k.victim)
	oldInc := memberIncarnation(cfg, k.victim)
	k.at = time.Now()
	c.kill(k.victim)
	c.waitConfig(fmt.Sprintf("kill %d: %s removed", k.n, k.victim), 10*time.Second, func(cfg *api.ChainConfig) bool {
		return memberIncarnation(cfg, k.victim) != oldInc
	})
	k.detect = time.Since(k.at)

	restarted := time.Now()
	c.start(k.victim)
	var misplaced []string
	cfg = c.waitConfig(fmt.Sprintf("kill %d: %s appended", k.n, k.victim), 15*time.Second, func(cfg *api.ChainConfig) bool {
		if r := chainRole(cfg, k.victim); r != "" && r != "joining" && r != "tail" {
			misplaced = append(misplaced, describeConfig(cfg))
		}
		ids := chainIDs(cfg)
		return len(ids) == 3 && ids[2] == k.victim && len(cfg.GetJoining()) == 0
	})
	k.back = time.Since(restarted)
	k.epochAfter = cfg.GetEpoch()
	if len(misplaced) > 0 {
		t.Errorf("kill %d: restarted %s seen in the chain other than as its tail: %v", k.n, k.victim, misplaced)
	}
	if inc := memberIncarnation(cfg, k.victim); inc == oldInc {
		t.Errorf("kill %d: %s came back with its old incarnation %x", k.n, k.victim, inc)
	}
}

// killMaster SIGKILLs master k.victim, waits until a leader exists, and
// restarts it from its data dir; it returns once the master is a
// follower with the leader's configuration epoch again.
func (c *cluster) killMaster(t *testing.T, k *campaignKill) {
	t.Helper()
	for _, id := range c.masterIDs {
		if !c.running(id) {
			t.Fatalf("kill %d: master %s is not running", k.n, id)
		}
	}
	lead := c.leader(10 * time.Second)
	k.role = "follower"
	if lead == k.victim {
		k.role = "leader"
	}
	k.at = time.Now()
	c.kill(k.victim)
	c.leader(15 * time.Second)
	if k.role == "leader" {
		k.detect = time.Since(k.at)
	}
	restarted := time.Now()
	c.start(k.victim)
	st := c.waitMasterRejoined(k.victim, 15*time.Second)
	k.back = time.Since(restarted)
	k.epochAfter = st.Config.GetEpoch()
}
