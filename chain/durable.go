package chain

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/storage"
)

// This file is the node's side of its data dir: recovery at start, the
// durability rule on every Ready, snapshots and compaction.
//
// The rule: the driver writes a Ready's applied updates to the log (one
// batch, one fsync with sync always) before it sends the Ready's messages
// or delivers its replies. A forward, an ack and a reply therefore only
// ever speak of updates on this node's stable storage, and since the tail
// acknowledges only what it holds on disk, a committed update is on the
// disk of every chain member. Reads are answered only after the updates
// they could observe are on disk too (flushForRead).

// recover opens the data dir and gives the replica the history found in
// it; it returns the last configuration the node had installed.
func (n *Node) recover() (*api.ChainConfig, error) {
	start := time.Now()
	st, rec, err := storage.Open(storage.Options{Dir: n.opts.DataDir, Cluster: n.opts.Cluster, Node: n.opts.ID,
		Sync: n.opts.Sync, SegmentSize: n.opts.SegmentSize, Logger: n.log})
	if err != nil {
		return nil, fmt.Errorf("chain: node %s: %w", n.opts.ID, err)
	}
	state := auction.New()
	if rec.Snapshot != nil {
		if state, err = auction.Restore(rec.Snapshot); err != nil {
			st.Close()
			return nil, fmt.Errorf("chain: node %s: snapshot in %s/meta.db: %w", n.opts.ID, n.opts.DataDir, err)
		}
	}
	var retired []*api.AuctionInfo
	for _, u := range rec.Updates {
		if u.GetSeq() <= state.Seq() {
			continue
		}
		res, err := state.Apply(u)
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("chain: node %s: log in %s/wal: %w", n.opts.ID, n.opts.DataDir, err)
		}
		retired = append(retired, res.Retired...)
	}
	// The log's retirements may not have reached the archive before the
	// node stopped: writing them again changes nothing.
	if err := st.Archive(retired); err != nil {
		st.Close()
		return nil, fmt.Errorf("chain: node %s: %w", n.opts.ID, err)
	}
	log := rec.Updates
	if len(log) > 0 && log[len(log)-1].GetSeq() != state.Seq() {
		log = nil
	}
	// With masters the master chooses every role after a restart (a
	// rebuilt chain's head is the longest history there is); without, a
	// head or tail resumes its old position only with a complete history.
	complete := len(n.opts.Masters) > 0 || (n.opts.Sync && !rec.Torn)
	if err := n.replica.Restore(Recovered{State: state, Log: log, Complete: complete}); err != nil {
		st.Close()
		return nil, err
	}
	n.store = st
	n.mem, n.replica.opts.Archive = nil, st
	n.snapSeq = rec.Snapshot.GetSeq()
	n.prevSnapSeq = n.snapSeq
	if len(log) > 0 {
		n.prevSnapSeq = min(n.snapSeq, log[0].GetSeq()-1)
	}
	n.recovered = state.Seq() > 0
	if n.recovered {
		n.log.Info("recovered from data dir", "node", n.opts.ID, "data_dir", n.opts.DataDir,
			"seq", state.Seq(), "snapshot_seq", n.snapSeq, "log_records", len(rec.Updates),
			"auctions", state.Len(), "torn_tail", rec.Torn, "config_epoch", rec.Config.GetEpoch(),
			"took", time.Since(start).Round(time.Millisecond))
	}
	return rec.Config, nil
}

// persist makes a Ready's updates durable; driver only. It returns false
// when the data dir failed: the Ready is then dropped, and the node stops.
func (n *Node) persist(rd Ready) bool {
	if n.storageErr != nil {
		n.failReplies(rd)
		return false
	}
	if n.store == nil {
		n.mem.apply(rd)
		// Memory only: the log is bounded the same way, without files.
		if a := n.replica.Applied(); a >= n.snapSeq+uint64(n.opts.SnapshotEvery) {
			n.replica.Compact(n.snapSeq)
			n.snapSeq = a
		}
		return true
	}
	err := n.persistArchiveOps(rd)
	if err == nil && !rd.StateReplaced && len(rd.Applied) > 0 {
		ups := n.upBuf[:0]
		for _, a := range rd.Applied {
			ups = append(ups, a.Update)
		}
		start := time.Now()
		err = n.store.Append(ups)
		n.metrics.fsync.Observe(time.Since(start).Seconds())
		clear(ups)
		n.upBuf = ups[:0]
		if err == nil {
			// After the log: a crash in between is repaired by recovery.
			err = n.store.Archive(retiredBy(rd.Applied))
		}
	}
	if err != nil {
		n.storageFailed(err)
		n.failReplies(rd)
		return false
	}
	n.metrics.durable.Set(float64(n.store.Last()))
	if !n.snapshotting && n.replica.Applied() >= n.snapSeq+uint64(n.opts.SnapshotEvery) {
		n.takeSnapshot()
	}
	return true
}

// persistArchiveOps makes the archive ops of a snapshot being received;
// at the install, the snapshot becomes the durable state: the whole
// current state is saved, with the staged results and those of the
// Ready's updates (applied after the install) as the archive, and the log
// starts over after it. Driver only.
func (n *Node) persistArchiveOps(rd Ready) error {
	last := lastInstall(rd.Archive)
	for i, op := range rd.Archive {
		if op.Reset {
			if err := n.store.ResetStaged(); err != nil {
				return err
			}
		}
		if err := n.store.Stage(op.Stage); err != nil {
			return err
		}
		if i != last {
			continue
		}
		if err := n.store.Stage(retiredBy(rd.Applied)); err != nil {
			return err
		}
		snap := n.replica.State().Snapshot()
		if err := n.store.Reset(snap); err != nil {
			return err
		}
		n.snapSeq, n.prevSnapSeq = snap.GetSeq(), snap.GetSeq()
	}
	return nil
}

// failReplies answers a dropped Ready's clients with ErrUnavailable.
func (n *Node) failReplies(rd Ready) {
	for _, rep := range rd.Replies {
		if p, ok := n.pending[rep.Handle]; ok {
			delete(n.pending, rep.Handle)
			p.to.deliver(p.cmd, Reply{Handle: rep.Handle, Err: ErrUnavailable})
		}
	}
}

// storageFailed stops the node after its data dir failed (a full or
// broken disk); driver only. It answers nothing any more and stops
// heartbeating, so the master removes it and the chain goes on without it.
func (n *Node) storageFailed(err error) {
	if n.storageErr != nil {
		return
	}
	n.storageErr = err
	n.log.Error("data dir write failed: the node stops serving", "node", n.opts.ID, "epoch", n.replica.Epoch(),
		"data_dir", n.opts.DataDir, "err", err)
	n.watches.endAll(toStatus(ErrUnavailable))
	for h, p := range n.pending {
		delete(n.pending, h)
		p.to.deliver(p.cmd, Reply{Handle: h, Err: ErrUnavailable})
	}
}

// takeSnapshot encodes the state on the driver and writes it on a
// background goroutine; once it is durable, the log is compacted up to the
// snapshot before it, on disk and in the replica.
func (n *Node) takeSnapshot() {
	snap := n.replica.State().Snapshot()
	data, err := proto.Marshal(snap)
	if err != nil {
		n.log.Error("snapshot not taken", "node", n.opts.ID, "err", err)
		return
	}
	seq, prev, st, gen := snap.GetSeq(), n.snapSeq, n.store, n.store.Generation()
	n.snapshotting = true
	n.bg.Add(1)
	go func() {
		defer n.bg.Done()
		start := time.Now()
		err := st.SaveSnapshotBytes(data, gen)
		if err == nil {
			err = st.Compact(prev)
		}
		took := time.Since(start)
		n.enqueue(input{f: func(r *Replica) {
			n.snapshotting = false
			if errors.Is(err, storage.ErrStaleSnapshot) {
				return // a snapshot from the predecessor replaced this state
			}
			if err != nil {
				n.storageFailed(err)
				return
			}
			n.prevSnapSeq, n.snapSeq = prev, seq
			r.Compact(prev)
			n.log.Debug("snapshot taken", "node", n.opts.ID, "seq", seq, "bytes", len(data),
				"log_from", prev+1, "took", took.Round(time.Microsecond))
		}})
	}()
}

// saveConfig records an installed configuration in the data dir; driver
// only.
func (n *Node) saveConfig(cfg *api.ChainConfig) {
	if n.store == nil || n.storageErr != nil {
		return
	}
	if err := n.store.SaveConfig(cfg); err != nil {
		n.storageFailed(err)
	}
}

// durable is the last seq on stable storage (applied, without a data dir);
// driver only.
func (n *Node) durable(r *Replica) uint64 {
	if n.store == nil {
		return r.Applied()
	}
	return n.store.Last()
}

// flushForRead writes out what the replica applied before a read sees it;
// driver only.
func (n *Node) flushForRead(r *Replica) {
	if n.store != nil && r.HasReady() {
		n.dispatch(r.Ready())
	}
}
