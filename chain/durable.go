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
// The rule: a client hears of an update only once it is on the disk of
// every chain member. Without masters each Ready is written before it is
// sent (asyncDurable); with them, as follows. The driver hands a Ready's applied updates to the
// syncer (syncer.go), which writes them to the log in the background (one
// batch, one fsync with sync always, for every Ready queued meanwhile),
// and sends the Ready's forwards at once, so that the members' fsyncs
// overlap. The replica (Options.AsyncDurable) acknowledges upstream only
// what is on its own disk and what its successor acknowledged, and the
// head answers a client only once the chained ack and its own disk cover
// the update; the syncer's report (Persisted) releases them. Reads, and
// the watch events a tail publishes, wait until the updates they could
// observe are on this node's disk too (flushForRead, heldChanges).

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

// persist hands a Ready's updates to the syncer (or, without a data dir,
// bounds the log in memory); driver only. It returns false once the data
// dir has failed: the Ready is then dropped, and the node stops.
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
	n.submitDurable(rd)
	if !n.asyncDurable() {
		// Written before the Ready is sent (see asyncDurable).
		gen, seq, err := n.syncer.flush()
		if err != nil {
			n.storageFailed(err)
			n.failReplies(rd)
			return false
		}
		n.persisted(n.replica, gen, seq, nil)
	}
	if !n.snapshotting && n.replica.Applied() >= n.snapSeq+uint64(n.opts.SnapshotEvery) {
		n.takeSnapshot()
	}
	return true
}

// submitDurable hands a Ready's durable work to the syncer; driver only.
// What it writes is taken now, on the driver: the updates, the results
// they retire, the snapshot an install replaces the state with.
func (n *Node) submitDurable(rd Ready) {
	gen := n.replica.StateGen()
	last := lastInstall(rd.Archive)
	if len(rd.Archive) > 0 || rd.StateReplaced {
		// A snapshot in transfer, set aside, or installed: it is the new
		// durable state (with the results it carries and those its
		// Ready's updates retire), and the log starts over after it.
		ops := rd.Archive
		var snap *api.StateSnapshot
		var retired []*api.AuctionInfo
		if last >= 0 || rd.StateReplaced {
			snap, retired = n.replica.State().Snapshot(), retiredBy(rd.Applied)
			n.snapSeq, n.prevSnapSeq = snap.GetSeq(), snap.GetSeq()
		}
		st := n.store
		n.syncer.submit(syncJob{gen: gen, seq: snap.GetSeq(), other: func() error {
			for i, op := range ops {
				if op.Reset {
					if err := st.ResetStaged(); err != nil {
						return err
					}
				}
				if err := st.Stage(op.Stage); err != nil {
					return err
				}
				if i == last {
					if err := st.Stage(retired); err != nil {
						return err
					}
				}
			}
			if snap == nil {
				return nil
			}
			return st.Reset(snap)
		}})
	}
	if !rd.StateReplaced && len(rd.Applied) > 0 {
		ups := make([]*api.Update, len(rd.Applied))
		for i, a := range rd.Applied {
			ups[i] = a.Update
		}
		n.syncer.submit(syncJob{gen: gen, seq: ups[len(ups)-1].GetSeq(), ups: ups, retired: retiredBy(rd.Applied)})
	}
}

// heldChanges are watch changes of state generation gen, up to seq, that
// wait for the syncer.
type heldChanges struct {
	gen, seq uint64
	changes  []recorded
}

// persisted takes the syncer's report that the updates up to seq of state
// generation gen are on disk (or that the data dir failed); driver only.
func (n *Node) persisted(r *Replica, gen, seq uint64, err error) {
	if err != nil {
		n.storageFailed(err)
		return
	}
	r.Persisted(gen, seq)
	if gen == r.StateGen() {
		n.metrics.durable.Set(float64(seq))
	}
	i := 0
	for ; i < len(n.heldChanges); i++ {
		h := n.heldChanges[i]
		if h.gen == gen && h.seq > seq {
			break
		}
		if h.gen == r.StateGen() {
			n.watches.publish(h.changes, n.opts.ID, r.Epoch(), n.opts.Now().UnixMilli())
		}
	}
	n.heldChanges = n.heldChanges[i:]
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
	if n.syncer != nil && n.storageErr == nil && r.Durable() < r.Applied() {
		gen, seq, err := n.syncer.flush()
		n.persisted(r, gen, seq, err)
	}
}
