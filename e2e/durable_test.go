package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
)

// killAll SIGKILLs every process of ids at once (all signals sent before
// any exit is awaited), then waits until they are gone.
func (c *cluster) killAll(ids ...string) {
	c.t.Helper()
	var ps []*proc
	c.mu.Lock()
	for _, id := range ids {
		if p := c.procs[id]; p != nil {
			ps = append(ps, p)
			delete(c.procs, id)
		}
	}
	c.mu.Unlock()
	for _, p := range ps {
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	}
	for _, p := range ps {
		select {
		case <-p.exited:
		case <-time.After(5 * time.Second):
			c.t.Errorf("process %s did not exit after SIGKILL", p.id)
		}
	}
}

// waitRebuilt waits until the master's chain holds every node of the
// cluster again, in an epoch after `after`, with nobody joining, and
// returns that configuration.
func (c *cluster) waitRebuilt(after uint64, timeout time.Duration) *api.ChainConfig {
	c.t.Helper()
	want := slices.Sorted(slices.Values(c.ids))
	return c.waitConfig(fmt.Sprintf("every node back in the chain after epoch %d", after), timeout,
		func(cfg *api.ChainConfig) bool {
			return cfg.GetEpoch() > after && len(cfg.GetJoining()) == 0 &&
				slices.Equal(slices.Sorted(slices.Values(chainIDs(cfg))), want)
		})
}

// TestWholeClusterCrash SIGKILLs every chain node at once, ten times
// (GAVEL_CRASH_ROUNDS) under a load of bidders and readers through every
// node, and restarts them all from their data dirs each time: the master
// rebuilds the chain from their durable histories, no acknowledged bid is
// lost, porcupine finds the whole history (before and after every crash)
// linearizable, and every node ends with the same digest.
func TestWholeClusterCrash(t *testing.T) {
	rounds := envInt(t, "GAVEL_CRASH_ROUNDS", 10)
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1", "a2")
	stopOnCleanup(t, w)
	w.start(4, 2)
	for r := 1; r <= rounds; r++ {
		time.Sleep(400 * time.Millisecond)
		before := c.config()
		applied := make([]uint64, 0, len(c.ids))
		for _, id := range c.ids {
			st, _ := c.nodeStatus(id) // a node still catching up may not answer
			applied = append(applied, st.GetApplied())
		}
		c.killAll(c.ids...)
		for _, id := range c.ids {
			c.start(id)
		}
		start := time.Now()
		cfg := c.waitRebuilt(before.GetEpoch(), 20*time.Second)
		t.Logf("round %d: killed %s at applied %v; rebuilt as %s after %v", r, describeConfig(before),
			applied, describeConfig(cfg), time.Since(start).Round(time.Millisecond))
	}
	time.Sleep(500 * time.Millisecond)
	w.finish()
	w.verify(t, c.ids...)
}

// TestWholeClusterAndMastersCrash SIGKILLs every node and every master at
// once (GAVEL_CRASH_ROUNDS_MASTERS times, 3 by default) and restarts them:
// the masters recover the configuration from their Raft logs, the nodes
// their histories from their data dirs, and the checks of
// TestWholeClusterCrash hold.
func TestWholeClusterAndMastersCrash(t *testing.T) {
	rounds := envInt(t, "GAVEL_CRASH_ROUNDS_MASTERS", 3)
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1", "a2")
	stopOnCleanup(t, w)
	w.start(4, 2)
	for r := 1; r <= rounds; r++ {
		time.Sleep(500 * time.Millisecond)
		before := c.config()
		c.killAll(append(slices.Clone(c.masterIDs), c.ids...)...)
		for _, id := range append(slices.Clone(c.masterIDs), c.ids...) {
			c.start(id)
		}
		start := time.Now()
		c.leader(15 * time.Second)
		cfg := c.waitRebuilt(before.GetEpoch(), 30*time.Second)
		t.Logf("round %d: killed every process in %s; rebuilt as %s after %v", r, describeConfig(before),
			describeConfig(cfg), time.Since(start).Round(time.Millisecond))
	}
	time.Sleep(500 * time.Millisecond)
	w.finish()
	w.verify(t, c.ids...)
}

// tailSegment returns the newest segment file of a node's log.
func tailSegment(t *testing.T, dataDir string) string {
	t.Helper()
	segs, err := filepath.Glob(filepath.Join(dataDir, "wal", "*.wal"))
	if err != nil || len(segs) == 0 {
		t.Fatalf("no log segment in %s (%v)", dataDir, err)
	}
	sort.Strings(segs)
	return segs[len(segs)-1]
}

// damageTail overwrites the last n written bytes of a log segment (the
// end of its last commit) with b: a torn or corrupted final write.
func damageTail(t *testing.T, path string, n int, b byte) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	end := len(bytes.TrimRight(data, "\x00"))
	if end < n+64 {
		t.Fatalf("%s holds only %d bytes", path, end)
	}
	for i := end - n; i < end; i++ {
		data[i] = b
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestTornLogTail simulates a crash during fsync: the last bytes of one
// node's log are corrupted (and, in a second round, zeroed) while the
// whole cluster is down. The node detects the damaged tail, truncates it
// to the last whole record and logs it; the rebuilt chain catches it up
// from its neighbours; nothing acknowledged is lost and the history stays
// linearizable.
func TestTornLogTail(t *testing.T) {
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1", "a2")
	stopOnCleanup(t, w)
	w.start(4, 2)
	damaged := map[string]int{} // node id -> tails damaged so far
	for r, fill := range []byte{0xff, 0x00} {
		time.Sleep(500 * time.Millisecond)
		before := c.config()
		victim := chainIDs(before)[r%3]
		c.killAll(c.ids...)
		seg := tailSegment(t, filepath.Join(c.dir, ".run", "data", victim))
		damageTail(t, seg, 24, fill)
		damaged[victim]++
		for _, id := range c.ids {
			c.start(id)
		}
		cfg := c.waitRebuilt(before.GetEpoch(), 20*time.Second)
		t.Logf("round %d: damaged the last 24 bytes of %s (fill %#x); rebuilt as %s", r+1, seg, fill, describeConfig(cfg))
		deadline := time.Now().Add(5 * time.Second)
		for {
			log, _ := os.ReadFile(filepath.Join(c.dir, victim+".log"))
			if strings.Count(string(log), "torn or corrupt tail truncated") == damaged[victim] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not log the damaged tail of its log (round %d)", victim, r+1)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(500 * time.Millisecond)
	w.finish()
	w.verify(t, c.ids...)
}

// TestDataDirRefused starts a node on a data dir that is not its own and
// one whose format is newer: each refuses to start with an error that
// names the file, and the rest of the cluster keeps serving bids.
func TestDataDirRefused(t *testing.T) {
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1")
	stopOnCleanup(t, w)
	w.start(2, 1)
	time.Sleep(300 * time.Millisecond)

	// n3's data dir handed to n3 of another cluster: move n2's dir over n3's.
	c.kill("n3")
	n2Dir, n3Dir := filepath.Join(c.dir, ".run", "data", "n2"), filepath.Join(c.dir, ".run", "data", "n3")
	if err := os.RemoveAll(n3Dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(n3Dir, os.DirFS(n2Dir)); err != nil {
		t.Fatal(err)
	}
	p := c.start("n3")
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("n3 started on n2's data dir")
	}
	c.mu.Lock()
	delete(c.procs, "n3")
	c.mu.Unlock()
	log, _ := os.ReadFile(p.log)
	want := filepath.Join(n3Dir, "meta.db") + ` belongs to node "n2" of cluster "e2e", not node "n3"`
	if !strings.Contains(string(log), want) {
		t.Errorf("n3's log does not say %q:\n%s", want, log)
	}
	n0 := w.successes()
	time.Sleep(time.Second)
	if n := w.successes() - n0; n < 20 {
		t.Errorf("only %d bids succeeded while n3 refused to start", n)
	}
	w.finish()
	w.verify(t, "n1", "n2")
}
