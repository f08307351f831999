package e2e

import (
	"slices"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
)

// TestMasterLeaderSIGKILL SIGKILLs the Raft leader of the master group
// under load. The other two masters elect a new leader; nodes move their
// heartbeats to it and keep their leases, so bids go on and the chain
// configuration keeps its epoch (nothing changed). The killed master,
// restarted from its data dir, rejoins as a follower holding the same
// configuration.
func TestMasterLeaderSIGKILL(t *testing.T) {
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1", "a2")
	stopOnCleanup(t, w)
	s := sampleSuccesses(t, w, 2*time.Millisecond)
	w.start(6, 2)
	time.Sleep(time.Second)

	old := c.leader(5 * time.Second)
	before := c.config()
	killed := time.Now()
	c.kill(old)
	lead := c.leader(10 * time.Second)
	elected := time.Since(killed)
	if lead == old {
		t.Fatalf("the killed master %s is still reported leader", old)
	}
	t.Logf("SIGKILLed leader %s (%s); %s leads after %v", old, describeConfig(before), lead, elected.Round(time.Millisecond))

	n0 := w.successes()
	time.Sleep(1500 * time.Millisecond)
	if n := w.successes() - n0; n < 20 {
		t.Errorf("only %d bids succeeded under the new leader", n)
	}
	after := c.config()
	if after.GetEpoch() != before.GetEpoch() || !slices.Equal(chainIDs(after), chainIDs(before)) || len(after.GetJoining()) != 0 {
		t.Errorf("configuration changed across the leader change: %s before, %s after", describeConfig(before), describeConfig(after))
	}
	t.Logf("write gap around the leader kill: %v (first success after the kill after %v)",
		s.longestStall(killed, time.Now()).Round(time.Millisecond), s.firstAfter(killed).Round(time.Millisecond))

	restarted := time.Now()
	c.start(old)
	st := c.waitMasterRejoined(old, 10*time.Second)
	t.Logf("restarted %s: raft %s, leader %s, %s, after %v", old, st.RaftState, st.LeaderId,
		describeConfig(st.Config), time.Since(restarted).Round(time.Millisecond))
	if st.Config.GetEpoch() != before.GetEpoch() {
		t.Errorf("restarted master %s has epoch %d, want %d", old, st.Config.GetEpoch(), before.GetEpoch())
	}
	// The group of three still works: the new leader keeps its place.
	time.Sleep(500 * time.Millisecond)
	if l := c.leader(5 * time.Second); l != lead {
		t.Logf("leadership moved from %s to %s after %s came back", lead, l, old)
	}

	w.finish()
	s.stop()
	t.Logf("longest gap between successful bids over the whole run (w.maxGap): %v", w.maxGap.Round(time.Millisecond))
	w.verify(t, c.ids...)
}

// TestNodeRestartRejoins SIGKILLs the middle node under load, waits until
// the master has spliced it out, and restarts it. The restarted process is
// a new member (new incarnation, empty state): the master adds it as
// joining and appends it as the tail once it is linked, never back in its
// old position. It ends readable and with the same state as the others.
func TestNodeRestartRejoins(t *testing.T) {
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1", "a2")
	stopOnCleanup(t, w)
	s := sampleSuccesses(t, w, 2*time.Millisecond)
	w.start(6, 2)
	time.Sleep(time.Second)

	const victim = "n2"
	oldInc := c.statuses(victim)[victim].Incarnation
	if cfgInc := memberIncarnation(c.config(), victim); cfgInc != oldInc {
		t.Fatalf("%s: status incarnation %d, configuration lists %d", victim, oldInc, cfgInc)
	}
	killed := time.Now()
	c.kill(victim)
	cfg := c.waitConfig(victim+" removed", 5*time.Second, func(cfg *api.ChainConfig) bool {
		return chainRole(cfg, victim) == ""
	})
	removed := time.Since(killed)
	t.Logf("SIGKILLed %s (incarnation %x); %s after %v", victim, oldInc, describeConfig(cfg), removed.Round(time.Millisecond))
	if !slices.Equal(chainIDs(cfg), []string{"n1", "n3"}) {
		t.Errorf("after removing %s the chain is %v, want [n1 n3]", victim, chainIDs(cfg))
	}

	restarted := time.Now()
	c.start(victim)
	var misplaced []string
	cfg = c.waitConfig(victim+" appended as tail", 15*time.Second, func(cfg *api.ChainConfig) bool {
		if r := chainRole(cfg, victim); r != "" && r != "joining" && r != "tail" {
			misplaced = append(misplaced, describeConfig(cfg))
		}
		return slices.Equal(chainIDs(cfg), []string{"n1", "n3", victim}) && len(cfg.GetJoining()) == 0
	})
	rejoined := time.Since(restarted)
	t.Logf("restarted %s; %s after %v", victim, describeConfig(cfg), rejoined.Round(time.Millisecond))
	if len(misplaced) > 0 {
		t.Errorf("restarted %s seen in the chain other than as its tail: %v", victim, misplaced)
	}

	// The new incarnation is the one the configuration lists, and it
	// becomes a readable tail.
	var st *api.NodeStatus
	deadline := time.Now().Add(5 * time.Second)
	for {
		var err error
		st, err = c.nodeStatus(victim)
		if err == nil && st.Role == api.Role_TAIL && st.Readable && st.CaughtUp {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s after rejoining: status %v (error %v), want a readable tail", victim, st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if st.Incarnation == oldInc {
		t.Errorf("%s kept incarnation %x across the restart", victim, oldInc)
	}
	if cfgInc := memberIncarnation(cfg, victim); cfgInc != st.Incarnation {
		t.Errorf("configuration lists %s with incarnation %x, the process has %x", victim, cfgInc, st.Incarnation)
	}
	t.Logf("%s: incarnation %x -> %x, role %v, readable, applied %d", victim, oldInc, st.Incarnation, st.Role, st.Applied)

	n0 := w.successes()
	time.Sleep(time.Second)
	if n := w.successes() - n0; n < 20 {
		t.Errorf("only %d bids succeeded after %s rejoined", n, victim)
	}
	t.Logf("write gap from the kill to the rejoin: %v", s.longestStall(killed, restarted.Add(rejoined)).Round(time.Millisecond))
	w.finish()
	s.stop()
	t.Logf("longest gap between successful bids over the whole run (w.maxGap): %v", w.maxGap.Round(time.Millisecond))
	w.verify(t, "n1", "n3", victim)
}
