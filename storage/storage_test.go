package storage

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
)

// updates builds n bid updates with seqs from, from+1, ... in epoch e.
func updates(from uint64, n int, e uint64) []*api.Update {
	ups := make([]*api.Update, 0, n)
	for i := from; i < from+uint64(n); i++ {
		ups = append(ups, &api.Update{Seq: i, Epoch: e, TimeMs: 1_700_000_000_000 + int64(i),
			Command: &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{
				Auction: "a1", Bidder: "b", Amount: int64(i), RequestId: fmt.Sprint(i)}}}})
	}
	return ups
}

func opts(dir string, sync bool) Options {
	return Options{Dir: dir, Cluster: "c1", Node: "n1", Sync: sync}
}

func mustOpen(t *testing.T, o Options) (*Store, *Recovery) {
	t.Helper()
	s, rec, err := Open(o)
	if err != nil {
		t.Fatalf("Open(%s): %v", o.Dir, err)
	}
	return s, rec
}

func mustAppend(t *testing.T, s *Store, ups []*api.Update) {
	t.Helper()
	if err := s.Append(ups); err != nil {
		t.Fatalf("Append(%d..%d): %v", ups[0].GetSeq(), ups[len(ups)-1].GetSeq(), err)
	}
}

func assertUpdates(t *testing.T, got, want []*api.Update) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("recovered %d updates, want %d", len(got), len(want))
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("update %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

// appendBatches appends batches of the given sizes starting at seq 1 (one
// epoch per batch) and returns everything appended.
func appendBatches(t *testing.T, s *Store, sizes ...int) []*api.Update {
	t.Helper()
	var all []*api.Update
	for i, n := range sizes {
		b := updates(uint64(len(all))+1, n, uint64(i/2+1))
		mustAppend(t, s, b)
		all = append(all, b...)
	}
	return all
}

// TestAppendReopen shows that batches appended with fsync are recovered
// exactly, in order, by the next Open, with no torn tail reported.
func TestAppendReopen(t *testing.T) {
	dir := t.TempDir()
	s, rec := mustOpen(t, opts(dir, true))
	if len(rec.Updates) != 0 || rec.Snapshot != nil || rec.Config != nil || rec.Last() != 0 || s.Last() != 0 {
		t.Fatalf("fresh dir recovered %+v", rec)
	}
	want := appendBatches(t, s, 1, 10, 100, 37, 5)
	if s.Last() != 153 {
		t.Fatalf("Store.Last = %d, want 153", s.Last())
	}
	s.Close()

	s, rec = mustOpen(t, opts(dir, true))
	defer s.Close()
	assertUpdates(t, rec.Updates, want)
	if rec.Last() != 153 || s.Last() != 153 || rec.Torn {
		t.Fatalf("Recovery.Last = %d, Store.Last = %d, Torn = %v; want 153, 153, false", rec.Last(), s.Last(), rec.Torn)
	}
}

// TestNoSync shows that with Sync off (noSyncVFS) appends still reach the
// files and a clean reopen recovers them.
func TestNoSync(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, opts(dir, false))
	if s.Sync() {
		t.Fatal("Sync() = true for Sync: false")
	}
	want := appendBatches(t, s, 3, 300, 30)
	s.Close()
	s, rec := mustOpen(t, opts(dir, false))
	defer s.Close()
	assertUpdates(t, rec.Updates, want)
	if rec.Torn || rec.Last() != 333 {
		t.Fatalf("Torn = %v, Last = %d; want false, 333", rec.Torn, rec.Last())
	}
	mustAppend(t, s, updates(334, 5, 9))
}

// TestSnapshotConfigCompact shows that the snapshot and configuration
// survive a reopen and that Compact drops the log's head, leaving a
// contiguous tail that still ends at the last record appended.
func TestSnapshotConfigCompact(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, opts(dir, true))
	all := appendBatches(t, s, 50, 50, 50, 50)
	snap := &api.StateSnapshot{Seq: 120, TimeMs: 42, LastEpoch: 2}
	cfg := &api.ChainConfig{Epoch: 3, Chain: []*api.Member{{Id: "n1", Addr: "h1:1"}, {Id: "n2", Addr: "h2:1"}}}
	if err := s.SaveSnapshot(snap); err != nil {
		t.Fatal(err)
	}
	if err := s.SaveConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if err := s.Compact(120); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, rec := mustOpen(t, opts(dir, true))
	defer s.Close()
	if !proto.Equal(rec.Snapshot, snap) || !proto.Equal(rec.Config, cfg) {
		t.Fatalf("recovered snapshot %v, config %v", rec.Snapshot, rec.Config)
	}
	assertUpdates(t, rec.Updates, all[120:])
	if rec.Last() != 200 || s.Last() != 200 {
		t.Fatalf("Last = %d/%d, want 200", rec.Last(), s.Last())
	}
	// Compacting everything keeps the last record (raft-wal's index base).
	if err := s.Compact(200); err != nil {
		t.Fatal(err)
	}
	mustAppend(t, s, updates(201, 10, 3))
}

// TestBoundedDisk shows that regular snapshots and compactions, run on a
// background goroutine as the node does, keep the data dir's size bounded
// while 200k updates go through it.
func TestBoundedDisk(t *testing.T) {
	dir := t.TempDir()
	o := opts(dir, false)
	o.SegmentSize = 1 << 20
	s, _ := mustOpen(t, o)
	const total, batch, every, bound = 200_000, 500, 20_000, 6 << 20
	var peak int64
	done := make(chan error, 1)
	done <- nil
	for seq := uint64(1); seq <= total; seq += batch {
		mustAppend(t, s, updates(seq, batch, 1))
		last := seq + batch - 1
		if last%every == 0 {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			go func() {
				if err := s.SaveSnapshot(&api.StateSnapshot{Seq: last, LastEpoch: 1}); err != nil {
					done <- err
					return
				}
				done <- s.Compact(last)
			}()
		}
		peak = max(peak, s.Size())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if peak > bound {
		t.Fatalf("data dir peaked at %d bytes, want <= %d", peak, bound)
	}
	s.Close()
	s, rec := mustOpen(t, o)
	defer s.Close()
	if rec.Snapshot.GetSeq() != total || rec.Last() != total || len(rec.Updates) == 0 ||
		rec.Updates[0].GetSeq() > total || rec.Updates[len(rec.Updates)-1].GetSeq() != total {
		t.Fatalf("after reopen: snapshot %d, last %d, %d updates", rec.Snapshot.GetSeq(), rec.Last(), len(rec.Updates))
	}
	t.Logf("peak data dir size %d bytes", peak)
}

// TestTornTail shows that a corrupt or truncated last batch is dropped on
// reopen, reported as Torn with the seq that had been written, and that the
// log can be appended to again afterwards.
func TestTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		fill byte
	}{{"corrupt", 0xFF}, {"truncated", 0x00}} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, _ := mustOpen(t, opts(dir, true))
			sizes := []int{20, 20, 7, 30}
			all := appendBatches(t, s, sizes...)
			s.Close()

			segs, err := filepath.Glob(filepath.Join(dir, "wal", "*.wal"))
			if err != nil || len(segs) == 0 {
				t.Fatalf("no segment files (%v)", err)
			}
			tail := slices.Max(segs)
			data, err := os.ReadFile(tail)
			if err != nil {
				t.Fatal(err)
			}
			end := len(bytes.TrimRight(data, "\x00")) // just after the last non-zero byte
			copy(data[end-16:end], bytes.Repeat([]byte{tc.fill}, 16))
			if err := os.WriteFile(tail, data, 0o644); err != nil {
				t.Fatal(err)
			}

			s, rec := mustOpen(t, opts(dir, true))
			kept := len(all) - sizes[len(sizes)-1]
			if !rec.Torn || rec.Written != uint64(len(all)) {
				t.Fatalf("Torn = %v, Written = %d; want true, %d", rec.Torn, rec.Written, len(all))
			}
			assertUpdates(t, rec.Updates, all[:kept])
			if s.Last() != uint64(kept) {
				t.Fatalf("Store.Last = %d, want %d", s.Last(), kept)
			}
			more := updates(uint64(kept)+1, 15, 7)
			mustAppend(t, s, more)
			s.Close()

			s, rec = mustOpen(t, opts(dir, true))
			defer s.Close()
			if rec.Torn {
				t.Fatal("Torn again after a clean close")
			}
			assertUpdates(t, rec.Updates, append(all[:kept:kept], more...))
		})
	}
}

// TestBadDir shows that Open refuses a dir of another node or cluster, a
// dir in a newer format and a path that cannot be a dir, each with the
// right sentinel error naming the file, and a nil Store; so does a dir
// whose meta.db cannot be read.
func TestBadDir(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, opts(dir, true))
	appendBatches(t, s, 3)
	s.Close()
	metaPath := filepath.Join(dir, "meta.db")

	check := func(t *testing.T, o Options, want error, path string) {
		t.Helper()
		s, rec, err := Open(o)
		if s != nil || rec != nil {
			s.Close()
			t.Fatalf("Open returned store %v, recovery %v with error %v", s, rec, err)
		}
		if !errors.Is(err, want) || !strings.Contains(fmt.Sprint(err), path) {
			t.Fatalf("Open: error %v; want %v naming %s", err, want, path)
		}
	}
	t.Run("other node", func(t *testing.T) {
		o := opts(dir, true)
		o.Node = "n2"
		check(t, o, ErrForeign, metaPath)
	})
	t.Run("other cluster", func(t *testing.T) {
		o := opts(dir, true)
		o.Cluster = "c2"
		check(t, o, ErrForeign, metaPath)
	})
	t.Run("newer format", func(t *testing.T) {
		d := t.TempDir()
		s, _ := mustOpen(t, opts(d, true))
		s.Close()
		p := filepath.Join(d, "meta.db")
		db, err := bolt.Open(p, 0o600, nil)
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
		check(t, opts(d, true), ErrNewerFormat, p)
	})
	t.Run("unreadable meta.db", func(t *testing.T) {
		d := t.TempDir()
		p := filepath.Join(d, "meta.db")
		if err := os.WriteFile(p, bytes.Repeat([]byte("not a bbolt file "), 512), 0o600); err != nil {
			t.Fatal(err)
		}
		check(t, opts(d, true), ErrUnusable, p)
	})
	t.Run("regular file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "file")
		if err := os.WriteFile(p, []byte("not a dir"), 0o644); err != nil {
			t.Fatal(err)
		}
		check(t, opts(p, true), ErrUnusable, p)
	})
	// The original dir is still intact and opens for its owner.
	s, rec := mustOpen(t, opts(dir, true))
	defer s.Close()
	if rec.Last() != 3 {
		t.Fatalf("Last = %d, want 3", rec.Last())
	}
}

// TestReset shows that Reset replaces the state with a snapshot: the log is
// emptied, a reopen recovers just the snapshot, and appends go on after it.
func TestReset(t *testing.T) {
	dir := t.TempDir()
	s, _ := mustOpen(t, opts(dir, true))
	appendBatches(t, s, 10, 10)
	const S = 500
	snap := &api.StateSnapshot{Seq: S, TimeMs: 7, LastEpoch: 4}
	gen := s.Generation()
	if err := s.Reset(snap); err != nil {
		t.Fatal(err)
	}
	if s.Last() != S {
		t.Fatalf("Store.Last after Reset = %d, want %d", s.Last(), S)
	}
	if err := s.SaveSnapshotBytes([]byte{}, gen); !errors.Is(err, ErrStaleSnapshot) {
		t.Fatalf("SaveSnapshotBytes with a pre-Reset generation: %v, want ErrStaleSnapshot", err)
	}
	s.Close()

	s, rec := mustOpen(t, opts(dir, true))
	if !proto.Equal(rec.Snapshot, snap) || len(rec.Updates) != 0 || rec.Torn || rec.Last() != S || s.Last() != S {
		t.Fatalf("after reopen: snapshot %v, %d updates, Torn %v, Last %d/%d",
			rec.Snapshot, len(rec.Updates), rec.Torn, rec.Last(), s.Last())
	}
	more := updates(S+1, 25, 5)
	mustAppend(t, s, more)
	s.Close()

	s, rec = mustOpen(t, opts(dir, true))
	defer s.Close()
	assertUpdates(t, rec.Updates, more)
	if rec.Last() != S+25 || rec.Torn {
		t.Fatalf("Last = %d, Torn = %v; want %d, false", rec.Last(), rec.Torn, S+25)
	}
}
