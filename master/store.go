package master

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	"github.com/hashicorp/raft"
)

// applyResult is what fsm.Apply returns to the leader that proposed the
// entry (raft.ApplyFuture.Response).
type applyResult struct {
	cfg Config
	err error // why the command changed nothing, if it did not
}

// fsm is the master's Raft state machine: the chain configuration. Raft
// calls Apply, Snapshot and Restore from one goroutine; gRPC handlers read
// the configuration concurrently.
type fsm struct {
	log *slog.Logger
	// committed is called after each change, outside mu (for logging).
	committed func(cmd Command, cfg Config)

	// mu guards cfg and changed.
	mu  sync.Mutex
	cfg Config
	// changed is closed, and replaced, whenever cfg changes: watchers wait
	// on it.
	changed chan struct{}
}

func newFSM(log *slog.Logger, committed func(Command, Config)) *fsm {
	return &fsm{log: log, committed: committed, changed: make(chan struct{})}
}

// current returns the configuration and a channel closed at its next change.
func (f *fsm) current() (Config, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cfg, f.changed
}

// config returns the configuration. Callers must not modify its slices.
func (f *fsm) config() Config {
	c, _ := f.current()
	return c
}

func (f *fsm) set(cfg Config) {
	f.mu.Lock()
	f.cfg = cfg
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// Apply applies one committed log entry.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		// Only this package writes entries; a bad one is a bug, but the
		// state machine must stay deterministic: skip it everywhere.
		f.log.Error("skipping malformed master log entry", "index", l.Index, "err", err)
		return applyResult{cfg: f.config(), err: err}
	}
	next, err := Apply(f.config(), cmd)
	if err != nil {
		return applyResult{cfg: f.config(), err: err}
	}
	f.set(next)
	if f.committed != nil {
		f.committed(cmd, next)
	}
	return applyResult{cfg: next}
}

// Snapshot captures the configuration; it is small, so it is copied.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	return &fsmSnapshot{cfg: f.config().Clone()}, nil
}

// Restore replaces the configuration with a snapshot's.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var cfg Config
	if err := json.NewDecoder(rc).Decode(&cfg); err != nil {
		return fmt.Errorf("master: restoring snapshot: %w", err)
	}
	f.set(cfg)
	f.log.Info("configuration restored from snapshot", "epoch", cfg.Epoch, "config", cfg.String())
	return nil
}

// fsmSnapshot is a point-in-time copy of the configuration.
type fsmSnapshot struct{ cfg Config }

// Persist writes the snapshot as JSON.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	err := json.NewEncoder(sink).Encode(s.cfg)
	if err != nil {
		return errors.Join(err, sink.Cancel())
	}
	return sink.Close()
}

// Release is a no-op: the snapshot holds no resources.
func (s *fsmSnapshot) Release() {}
