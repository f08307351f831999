package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

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

// tornBytes is how much of a log's end damageTail damages: a SIGKILL in
// the middle of a group commit's write leaves frames after the last whole
// commit that recovery drops anyway, so damaging only the last few bytes
// may miss every committed record; 4 KiB reaches into the last commits
// under the tests' loads.
const tornBytes = 4096

// damageTail overwrites the last n written bytes of a log segment (the
// end of its last commits) with b: a torn or corrupted final write.
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
		damageTail(t, seg, tornBytes, fill)
		damaged[victim]++
		for _, id := range c.ids {
			c.start(id)
		}
		cfg := c.waitRebuilt(before.GetEpoch(), 20*time.Second)
		t.Logf("round %d: damaged the last %d bytes of %s (fill %#x); rebuilt as %s", r+1, tornBytes, seg, fill, describeConfig(cfg))
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

// TestDataDirRefused starts a node on a data dir that is not its own, then
// on its own data dir stamped by a newer format: each time it refuses to
// start with an error that names the file, and the rest of the cluster
// keeps serving bids.
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

	// n3's own data dir, written by a newer gavel: n3 starts on a fresh
	// dir, joins, is stopped, and its meta.db is stamped with format 99.
	if err := os.RemoveAll(n3Dir); err != nil {
		t.Fatal(err)
	}
	c.start("n3")
	c.waitConfig("n3 appended", 20*time.Second, func(cfg *api.ChainConfig) bool {
		return slices.Contains(chainIDs(cfg), "n3") && len(cfg.GetJoining()) == 0
	})
	c.kill("n3")
	metaPath := filepath.Join(n3Dir, "meta.db")
	db, err := bolt.Open(metaPath, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket([]byte("meta")).Put([]byte("format"), []byte("99")) })
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	logText := c.waitExit(c.start("n3"), 10*time.Second, "a node whose data dir has a newer format")
	if want := metaPath + " is format 99; this gavel reads up to format"; !strings.Contains(logText, want) {
		t.Errorf("n3's log does not say %q:\n%s", want, logText)
	}
	n0 = w.successes()
	time.Sleep(time.Second)
	if n := w.successes() - n0; n < 20 {
		t.Errorf("only %d bids succeeded while n3 refused to start", n)
	}
	w.finish()
	w.verify(t, "n1", "n2")
}

// mountTmpfs mounts a tmpfs of size (mount's syntax: 1m, 64m) on dir, an
// empty directory, and unmounts it when the test ends (lazily: after the
// test's processes are gone, whatever holds it).
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a %s tmpfs on %s (the test needs root): %v\n%s", size, dir, err, out)
	}
	t.Cleanup(func() { umount(t, dir) })
}

// umount unmounts dir, lazily (it may still be open in a dying process).
func umount(t *testing.T, dir string) {
	t.Helper()
	if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil &&
		!strings.Contains(string(out), "not mounted") {
		t.Errorf("umount %s: %v\n%s", dir, err, out)
	}
}

// waitExit waits for a process the test started to exit by itself and
// returns its log.
func (c *cluster) waitExit(p *proc, within time.Duration, what string) string {
	c.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(within):
		c.t.Fatalf("%s: %s still runs after %v", what, p.id, within)
	}
	c.mu.Lock()
	delete(c.procs, p.id)
	c.mu.Unlock()
	log, _ := os.ReadFile(p.log)
	return string(log)
}

// waitLog waits until a process's log holds want.
func (c *cluster) waitLog(id, want string, within time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(within)
	for {
		log, _ := os.ReadFile(filepath.Join(c.dir, id+".log"))
		if strings.Contains(string(log), want) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s's log does not say %q within %v", id, want, within)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// fillDisk writes a file into dir until its filesystem is full.
func fillDisk(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for i := 0; i < 1<<14; i++ { // at most 1 GiB
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatal(err)
		}
	}
	t.Fatalf("%s did not fill up", dir)
}

// TestDataDirDiskFailures puts one node's data dir on a disk that fills
// up, under load: a disk too full to create the log refuses the node's
// start with an error naming the file; a disk that fills under a running
// chain member stops that node at its next write that needs space (it
// answers nothing and stops heartbeating, so the master splices it out);
// and through all of it the rest of the chain goes on serving bids, with
// no acknowledged bid lost and a linearizable history. The log's segments
// are small (chain.segment_size) so that the full disk is met within a
// second of load.
func TestDataDirDiskFailures(t *testing.T) {
	t.Setenv("GAVEL_CHAIN_SEGMENT_SIZE", "65536") // every process the test starts inherits it
	c := newMasterCluster(t, 3)
	w := newWorkload(c, "a1", "a2")
	stopOnCleanup(t, w)
	w.start(2, 1)
	time.Sleep(300 * time.Millisecond)
	dir := filepath.Join(c.dir, ".run", "data", "n3")
	servedWithout := func(what string) {
		t.Helper()
		n0 := w.successes()
		time.Sleep(time.Second)
		if n := w.successes() - n0; n < 20 {
			t.Errorf("%s: only %d bids succeeded in a second", what, n)
		}
	}

	// A full disk: a 32 KiB tmpfs cannot hold the log's first segment.
	c.kill("n3")
	c.waitConfig("n3 removed", 10*time.Second, func(cfg *api.ChainConfig) bool {
		return !slices.Contains(chainIDs(cfg), "n3")
	})
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	mountTmpfs(t, dir, "32k")
	log := c.waitExit(c.start("n3"), 15*time.Second, "a node whose disk is full")
	if want := filepath.Join(dir, "wal"); !strings.Contains(log, want) || !strings.Contains(log, "no space left on device") ||
		!strings.Contains(log, "data dir unusable") {
		t.Errorf("n3's log does not name %s and the full disk:\n%s", want, log)
	}
	servedWithout("n3 refused to start on a full disk")

	// A disk that fills under a running member: n3 on a fresh 16 MiB
	// tmpfs joins at the tail, then a file takes the rest of the space.
	umount(t, dir)
	mountTmpfs(t, dir, "16m")
	c.start("n3")
	c.waitConfig("n3 appended", 20*time.Second, func(cfg *api.ChainConfig) bool {
		ids := chainIDs(cfg)
		return len(ids) == 3 && ids[2] == "n3" && len(cfg.GetJoining()) == 0
	})
	time.Sleep(300 * time.Millisecond)
	fillDisk(t, dir)
	c.waitLog("n3", "data dir write failed: the node stops serving", 20*time.Second)
	c.waitLog("n3", "no space left on device", time.Second)
	c.waitConfig("n3 spliced out after its disk filled", 10*time.Second, func(cfg *api.ChainConfig) bool {
		return !slices.Contains(chainIDs(cfg), "n3")
	})
	servedWithout("n3's disk is full")
	w.finish()
	w.verify(t, "n1", "n2")
}

// TestMasterlessRestart covers restarts without masters, where nobody
// chooses roles again: a chain SIGKILLed whole comes back in its old
// configuration from its data dirs and serves every acknowledged bid; a
// head whose log lost its tail (a torn write) refuses to sequence rather
// than build on a history that may lack what it forwarded, and so does a
// middle node made head by a reconfiguration, since it cannot know it
// holds everything committed; a node restarted as the head of the
// configuration it installed last, with a complete log, serves again
// (that configuration is the operator's word that it is current); and a
// tail with a torn log serves reads only after its predecessor has caught
// it up.
func TestMasterlessRestart(t *testing.T) {
	c := newCluster(t, 3)
	w := newWorkload(c, "a1", "a2")
	stopOnCleanup(t, w)
	w.start(4, 2)
	time.Sleep(500 * time.Millisecond)
	restartAll := func() {
		t.Helper()
		c.killAll(c.ids...)
		for _, id := range c.ids {
			c.start(id)
		}
		for _, id := range c.ids {
			c.waitUp(id)
		}
	}
	// progress checks that bids succeed (want), once the clients' retry
	// backoff has brought them back (within 5s), or that none does.
	progress := func(what string, want bool) {
		t.Helper()
		n0 := w.successes()
		if want {
			for deadline := time.Now().Add(5 * time.Second); w.successes() == n0 && time.Now().Before(deadline); {
				time.Sleep(20 * time.Millisecond)
			}
			n0 = w.successes()
		}
		time.Sleep(time.Second)
		if n := w.successes() - n0; want && n < 20 {
			t.Errorf("%s: only %d bids succeeded in a second", what, n)
		} else if !want && n > 0 {
			t.Errorf("%s: %d bids succeeded in a second, want none", what, n)
		}
	}

	// The whole chain, from its data dirs.
	restartAll()
	progress("after a whole-chain restart", true)

	// A head with a torn log: it refuses to sequence.
	c.killAll(c.ids...)
	damageTail(t, tailSegment(t, filepath.Join(c.dir, ".run", "data", "n1")), tornBytes, 0xff)
	for _, id := range c.ids {
		c.start(id)
	}
	for _, id := range c.ids {
		c.waitUp(id)
	}
	c.waitLog("n1", "restarted head with an incomplete history: refusing to sequence", 5*time.Second)
	progress("a head with a torn log", false)
	c.reconfigure(&api.ChainConfig{Epoch: 2, Chain: c.members("n2", "n3")}, "n2", "n3")
	c.kill("n1")
	progress("n2 made head by a reconfiguration", false)
	c.killAll("n2", "n3")
	c.start("n2")
	c.start("n3")
	c.waitUp("n2")
	c.waitUp("n3")
	progress("n2 and n3 restarted in epoch 2", true)

	// A tail with a torn log: not readable until caught up, then serving.
	c.killAll("n2", "n3")
	damageTail(t, tailSegment(t, filepath.Join(c.dir, ".run", "data", "n3")), tornBytes, 0x00)
	c.start("n3")
	c.waitUp("n3")
	if st := c.statuses("n3")["n3"]; st.Readable {
		t.Errorf("a tail restarted with a torn log and no predecessor serves reads: %v", st)
	}
	c.start("n2")
	c.waitUp("n2")
	progress("n2 and n3 after the tail caught up", true)
	if st := c.statuses("n3")["n3"]; !st.Readable || st.Role != api.Role_TAIL {
		t.Errorf("n3 after its predecessor came back: %v, want a readable tail", st)
	}
	w.finish()
	w.verify(t, "n2", "n3")
}
