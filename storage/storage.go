// Package storage is a chain node's data dir: a write-ahead log of the
// updates the node applied and a snapshot of its auction state, from which
// a restarted node recovers everything it had on stable storage.
//
// Layout of a data dir:
//
//	meta.db    bbolt: the dir's identity (format, cluster, node), the last
//	           configuration the node installed, the latest state snapshot,
//	           and the archive: the final results of retired auctions
//	           (archive.go)
//	wal/       hashicorp/raft-wal segment files: one record per update,
//	           index = seq, term = the epoch that sequenced it
//	wal.last   the seq of the last record appended, rewritten after each
//	           append: recovery compares it with the log's last whole
//	           record to report a torn or corrupt tail
//
// The log is raft-wal, HashiCorp's log store for Raft (Consul runs on it):
// every append is one commit frame with a CRC32 (Castagnoli) over the
// batch and one fsync, so a group commit of many updates costs one fsync;
// on open, a final commit whose checksum does not match is dropped, which
// truncates a torn or corrupt tail to the last whole batch. Snapshots and
// metadata live in bbolt, whose transactions are checksummed and atomic.
//
// A Store is used by one goroutine at a time (the node's driver), except
// SaveSnapshot and Compact, which the node runs on a background goroutine
// while the driver goes on appending: raft-wal allows one writer and
// concurrent head truncation, and bbolt serialises its own transactions.
package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	walfs "github.com/hashicorp/raft-wal/fs"
	"github.com/hashicorp/raft-wal/metadb"
	"github.com/hashicorp/raft-wal/segment"
	"github.com/hashicorp/raft-wal/types"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
)

// Format is the data dir format this code writes and reads. A dir written
// in a newer format is refused (ErrNewerFormat), never guessed at.
const Format = 1

// DefaultSegmentSize is the size of one log segment file (raft-wal
// preallocates it): small enough that a compacted log frees its space
// soon, large enough that rotations are rare.
const DefaultSegmentSize = 16 << 20

// Sentinel errors; every error Open returns wraps one of them and names
// the file.
var (
	// ErrNewerFormat: the data dir was written by a newer gavel.
	ErrNewerFormat = errors.New("storage: data dir written in a newer format")
	// ErrForeign: the data dir belongs to another node or cluster.
	ErrForeign = errors.New("storage: data dir belongs to another node or cluster")
	// ErrCorrupt: the data dir cannot be read back consistently.
	ErrCorrupt = errors.New("storage: data dir is corrupt")
	// ErrUnusable: the data dir cannot be created, opened or written.
	ErrUnusable = errors.New("storage: data dir unusable")
)

var (
	bucketMeta = []byte("meta")
	keyFormat  = []byte("format")
	keyCluster = []byte("cluster")
	keyNode    = []byte("node")
	keyConfig  = []byte("config")
	keySnap    = []byte("snapshot")
)

// Options configure a Store.
type Options struct {
	// Dir is the data dir; it is created if missing.
	Dir string
	// Cluster and Node name the data dir's owner: a dir made for another
	// cluster or node is refused.
	Cluster, Node string
	// Sync makes every Append wait for fsync (chain.sync: always). Without
	// it appends reach the operating system's page cache only: they
	// survive the process's crash, not the machine's.
	Sync bool
	// SegmentSize is the log's segment file size (DefaultSegmentSize if 0).
	SegmentSize int
	Logger      *slog.Logger
}

// Recovery is what Open found in the data dir.
type Recovery struct {
	// Snapshot is the latest state snapshot, nil if none was taken.
	Snapshot *api.StateSnapshot
	// Updates are the log's records in order, contiguous; they may start
	// before the snapshot (the log keeps one snapshot interval more).
	Updates []*api.Update
	// Config is the last configuration the node installed, nil if none.
	Config *api.ChainConfig
	// Torn is set when the log had lost records it had once acknowledged
	// as appended (a torn or corrupt tail, truncated to the last whole
	// record); Written is then the seq of the last record appended before.
	Torn    bool
	Written uint64
}

// Last is the seq of the last update recovered (the snapshot's or the
// log's, whichever is later).
func (r *Recovery) Last() uint64 {
	last := r.Snapshot.GetSeq()
	if n := len(r.Updates); n > 0 {
		last = max(last, r.Updates[n-1].GetSeq())
	}
	return last
}

// Store is an open data dir.
type Store struct {
	opts Options
	log  *slog.Logger
	meta *bolt.DB
	hint *os.File // wal.last

	// snapMu orders snapshot writes with Reset; gen counts Resets, so a
	// background snapshot of a state that a Reset has since replaced is
	// not written over the newer one.
	snapMu sync.Mutex
	gen    uint64
	// walMu guards wal against Reset replacing it under a background
	// Compact.
	walMu sync.Mutex
	wal   *wal.WAL
	// walMeta is wal's metadata store, which wal.Close leaves open (and
	// its file locked) in raft-wal v0.4.0: closeWAL closes it.
	walMeta *metadb.BoltMetaDB
	// last is the seq of the last record appended (0: none); written by
	// the one goroutine that appends, read by any.
	last atomic.Uint64
	buf  []*raft.Log // reused by Append
}

// Open opens (or creates) the data dir and reads back everything in it.
func Open(opts Options) (*Store, *Recovery, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if abs, err := filepath.Abs(opts.Dir); err == nil {
		opts.Dir = abs // errors and logs name files unambiguously
	}
	s := &Store{opts: opts, log: opts.Logger.With("node", opts.Node, "data_dir", opts.Dir)}
	rec, err := s.open()
	if err != nil {
		s.Close()
		return nil, nil, err
	}
	return s, rec, nil
}

func (s *Store) path(name string) string { return filepath.Join(s.opts.Dir, name) }

func (s *Store) open() (*Recovery, error) {
	if err := os.MkdirAll(s.path("wal"), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnusable, err)
	}
	metaPath := s.path("meta.db")
	db, err := bolt.Open(metaPath, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnusable, metaPath, err)
	}
	s.meta = db
	rec := &Recovery{}
	if err := s.checkIdentity(metaPath, rec); err != nil {
		return nil, err
	}
	hintPath := s.path("wal.last")
	if s.hint, err = os.OpenFile(hintPath, os.O_RDWR|os.O_CREATE, 0o600); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnusable, hintPath, err)
	}
	var hb [8]byte
	if n, _ := s.hint.ReadAt(hb[:], 0); n == 8 {
		rec.Written = binary.LittleEndian.Uint64(hb[:])
	}
	if err := s.openWAL(); err != nil {
		return nil, err
	}
	first, _ := s.wal.FirstIndex()
	last, _ := s.wal.LastIndex()
	if first > 0 {
		rec.Updates = make([]*api.Update, 0, last-first+1)
		var l raft.Log
		for i := first; i <= last; i++ {
			if err := s.wal.GetLog(i, &l); err != nil {
				return nil, fmt.Errorf("%w: %s: record %d: %v", ErrCorrupt, s.path("wal"), i, err)
			}
			u := &api.Update{}
			if err := proto.Unmarshal(l.Data, u); err != nil || u.GetSeq() != i || u.GetEpoch() != l.Term {
				return nil, fmt.Errorf("%w: %s: record %d does not hold update %d (%v)", ErrCorrupt, s.path("wal"), i, i, err)
			}
			rec.Updates = append(rec.Updates, u)
		}
	}
	s.last.Store(last)
	if rec.Written > last {
		rec.Torn = true
		s.log.Warn("write-ahead log: torn or corrupt tail truncated to the last whole record",
			"file", s.path("wal"), "last_whole", last, "last_written", rec.Written,
			"records_dropped", rec.Written-last)
	}
	if err := s.writeHint(last); err != nil {
		return nil, err
	}
	snapSeq := rec.Snapshot.GetSeq()
	s.last.Store(max(last, snapSeq))
	switch {
	case len(rec.Updates) > 0 && first > snapSeq+1:
		return nil, fmt.Errorf("%w: %s: the log starts at %d but the snapshot in %s ends at %d",
			ErrCorrupt, s.path("wal"), first, metaPath, snapSeq)
	case rec.Snapshot != nil && last < snapSeq:
		// The log lost records the snapshot covers (a corrupt tail): the
		// snapshot is the state, and the log starts again after it.
		rec.Updates = nil
		if err := s.resetWAL(snapSeq); err != nil {
			return nil, err
		}
	}
	s.log.Info("data dir opened", "format", Format, "snapshot_seq", snapSeq,
		"log_first", first, "log_last", last, "config_epoch", rec.Config.GetEpoch(), "sync", s.opts.Sync)
	return rec, nil
}

// checkIdentity stamps a new data dir with its owner, or checks that an
// existing one is this node's, in a format this code reads; it also loads
// the configuration and the snapshot.
func (s *Store) checkIdentity(metaPath string, rec *Recovery) error {
	return s.meta.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return fmt.Errorf("%w: %s: %v", ErrUnusable, metaPath, err)
		}
		if b.Get(keyFormat) == nil {
			for k, v := range map[string]string{string(keyFormat): strconv.Itoa(Format),
				string(keyCluster): s.opts.Cluster, string(keyNode): s.opts.Node} {
				if err := b.Put([]byte(k), []byte(v)); err != nil {
					return fmt.Errorf("%w: %s: %v", ErrUnusable, metaPath, err)
				}
			}
			return nil
		}
		format, err := strconv.Atoi(string(b.Get(keyFormat)))
		if err != nil {
			return fmt.Errorf("%w: %s: unreadable format %q", ErrCorrupt, metaPath, b.Get(keyFormat))
		}
		if format > Format {
			return fmt.Errorf("%w: %s is format %d; this gavel reads up to format %d", ErrNewerFormat, metaPath, format, Format)
		}
		cluster, node := string(b.Get(keyCluster)), string(b.Get(keyNode))
		if cluster != s.opts.Cluster || node != s.opts.Node {
			return fmt.Errorf("%w: %s belongs to node %q of cluster %q, not node %q of cluster %q",
				ErrForeign, metaPath, node, cluster, s.opts.Node, s.opts.Cluster)
		}
		if v := b.Get(keyConfig); v != nil {
			rec.Config = &api.ChainConfig{}
			if err := proto.Unmarshal(v, rec.Config); err != nil {
				return fmt.Errorf("%w: %s: configuration: %v", ErrCorrupt, metaPath, err)
			}
		}
		if v := b.Get(keySnap); v != nil {
			rec.Snapshot = &api.StateSnapshot{}
			if err := proto.Unmarshal(v, rec.Snapshot); err != nil {
				return fmt.Errorf("%w: %s: snapshot: %v", ErrCorrupt, metaPath, err)
			}
		}
		return nil
	})
}

// hclogFor passes raft-wal's warnings and errors on to the node's log.
func hclogFor(l *slog.Logger) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Name: "wal", Level: hclog.Warn, Output: slogWriter{l}})
}

// slogWriter logs each line written to it as a warning.
type slogWriter struct{ l *slog.Logger }

func (w slogWriter) Write(p []byte) (int, error) {
	w.l.Warn("write-ahead log", "detail", strings.TrimSpace(string(p)))
	return len(p), nil
}

// noSyncVFS is raft-wal's file system without fsync (chain.sync: none).
type noSyncVFS struct{ *walfs.FS }

type noSyncFile struct{ types.WritableFile }

func (noSyncFile) Sync() error { return nil }

func (v noSyncVFS) Create(dir, name string, size uint64) (types.WritableFile, error) {
	f, err := v.FS.Create(dir, name, size)
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

func (v noSyncVFS) OpenWriter(dir, name string) (types.WritableFile, error) {
	f, err := v.FS.OpenWriter(dir, name)
	if err != nil {
		return nil, err
	}
	return noSyncFile{f}, nil
}

func (s *Store) openWAL() error {
	dir := s.path("wal")
	var vfs types.VFS = walfs.New()
	if !s.opts.Sync {
		vfs = noSyncVFS{walfs.New()}
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(dir, wal.WithSegmentSize(s.opts.SegmentSize), wal.WithLogger(hclogFor(s.log)),
		wal.WithSegmentFiler(segment.NewFiler(dir, vfs)), wal.WithMetaStore(meta))
	if err != nil {
		_ = meta.Close()
		// An error of the operating system (a full, read-only or failing
		// disk, permissions) makes the dir unusable; anything else is
		// what raft-wal found in the files.
		kind := ErrCorrupt
		var errno syscall.Errno
		if errors.As(err, &errno) || errors.Is(err, fs.ErrPermission) || errors.Is(err, fs.ErrNotExist) {
			kind = ErrUnusable
		}
		return fmt.Errorf("%w: %s: %v", kind, dir, err)
	}
	s.walMu.Lock()
	s.wal, s.walMeta = w, meta
	s.walMu.Unlock()
	return nil
}

// closeWAL closes the log and its metadata store; walMu must be held.
func (s *Store) closeWAL() {
	if s.wal != nil {
		_ = s.wal.Close()
		_ = s.walMeta.Close()
		s.wal, s.walMeta = nil, nil
	}
}

// resetWAL empties the log; the next Append may start at after+1.
func (s *Store) resetWAL(after uint64) error {
	s.walMu.Lock()
	s.closeWAL()
	s.walMu.Unlock()
	if err := os.RemoveAll(s.path("wal")); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnusable, s.path("wal"), err)
	}
	if err := os.MkdirAll(s.path("wal"), 0o755); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnusable, s.path("wal"), err)
	}
	if err := s.openWAL(); err != nil {
		return err
	}
	s.last.Store(after)
	return s.writeHint(0)
}

func (s *Store) writeHint(seq uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], seq)
	if _, err := s.hint.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnusable, s.path("wal.last"), err)
	}
	return nil
}

// Append writes updates, which must follow the last one appended, as one
// batch: one commit frame and (with Sync) one fsync. It returns once they
// are on stable storage.
func (s *Store) Append(ups []*api.Update) error {
	if len(ups) == 0 {
		return nil
	}
	s.buf = s.buf[:0]
	for _, u := range ups {
		data, err := proto.Marshal(u)
		if err != nil {
			return fmt.Errorf("storage: encode update %d: %w", u.GetSeq(), err)
		}
		s.buf = append(s.buf, &raft.Log{Index: u.GetSeq(), Term: u.GetEpoch(), Type: raft.LogCommand, Data: data})
	}
	s.walMu.Lock()
	w := s.wal
	s.walMu.Unlock()
	if err := w.StoreLogs(s.buf); err != nil {
		return fmt.Errorf("%w: append to %s: %v", ErrUnusable, s.path("wal"), err)
	}
	clear(s.buf)
	last := ups[len(ups)-1].GetSeq()
	s.last.Store(last)
	return s.writeHint(last)
}

// Last is the seq of the last update on stable storage (0: none).
func (s *Store) Last() uint64 { return s.last.Load() }

// Dir is the data dir.
func (s *Store) Dir() string { return s.opts.Dir }

// Sync reports whether appends wait for fsync.
func (s *Store) Sync() bool { return s.opts.Sync }

// SaveSnapshot stores snap as the latest state snapshot (atomically,
// fsync'd by bbolt's commit).
func (s *Store) SaveSnapshot(snap *api.StateSnapshot) error {
	data, err := proto.Marshal(snap)
	if err != nil {
		return fmt.Errorf("storage: encode snapshot: %w", err)
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	return s.saveSnapshot(data)
}

// Generation counts the Resets so far; SaveSnapshotBytes takes it.
func (s *Store) Generation() uint64 {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	return s.gen
}

// ErrStaleSnapshot: a Reset replaced the state since the snapshot was
// taken; it was not written.
var ErrStaleSnapshot = errors.New("storage: snapshot of a state replaced since")

// SaveSnapshotBytes stores an encoded StateSnapshot as the latest one,
// unless a Reset happened since Generation returned gen.
func (s *Store) SaveSnapshotBytes(data []byte, gen uint64) error {
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	if gen != s.gen {
		return ErrStaleSnapshot
	}
	return s.saveSnapshot(data)
}

func (s *Store) saveSnapshot(data []byte) error {
	if err := s.meta.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keySnap, data) }); err != nil {
		return fmt.Errorf("%w: %s: snapshot: %v", ErrUnusable, s.path("meta.db"), err)
	}
	return nil
}

// Compact drops the log's records up to seq; a snapshot covering them
// must already be saved.
func (s *Store) Compact(seq uint64) error {
	s.walMu.Lock()
	defer s.walMu.Unlock()
	first, err := s.wal.FirstIndex()
	if err != nil || first == 0 || seq < first {
		return err
	}
	last, err := s.wal.LastIndex()
	if err != nil {
		return err
	}
	// Keep at least the last record: raft-wal keeps its index base there.
	seq = min(seq, last-1)
	if seq < first {
		return nil
	}
	if err := s.wal.DeleteRange(first, seq); err != nil {
		return fmt.Errorf("%w: compact %s: %v", ErrUnusable, s.path("wal"), err)
	}
	return nil
}

// Reset replaces the whole durable state with snap (a snapshot the node
// installed from its predecessor): the snapshot is saved and the staged
// results become the archive, in one transaction; then the log starts
// over after the snapshot.
func (s *Store) Reset(snap *api.StateSnapshot) error {
	data, err := proto.Marshal(snap)
	if err != nil {
		return fmt.Errorf("storage: encode snapshot: %w", err)
	}
	s.snapMu.Lock()
	defer s.snapMu.Unlock()
	s.gen++
	if err := s.meta.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketMeta).Put(keySnap, data); err != nil {
			return err
		}
		return s.installStaged(tx)
	}); err != nil {
		return fmt.Errorf("%w: %s: snapshot: %v", ErrUnusable, s.path("meta.db"), err)
	}
	return s.resetWAL(snap.GetSeq())
}

// SaveConfig records the configuration the node installed.
func (s *Store) SaveConfig(cfg *api.ChainConfig) error {
	data, err := proto.Marshal(cfg)
	if err != nil {
		return fmt.Errorf("storage: encode configuration: %w", err)
	}
	if err := s.meta.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyConfig, data) }); err != nil {
		return fmt.Errorf("%w: %s: configuration: %v", ErrUnusable, s.path("meta.db"), err)
	}
	return nil
}

// Size is the data dir's size on disk in bytes (preallocated log segments
// count whole).
func (s *Store) Size() int64 { return DirSize(s.opts.Dir) }

// DirSize adds up the sizes of the regular files under dir.
func DirSize(dir string) int64 {
	var total int64
	_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				total += info.Size()
			}
		}
		return nil
	})
	return total
}

// Close closes the data dir's files.
func (s *Store) Close() {
	s.walMu.Lock()
	s.closeWAL()
	s.walMu.Unlock()
	if s.hint != nil {
		_ = s.hint.Close()
	}
	if s.meta != nil {
		_ = s.meta.Close()
	}
}
