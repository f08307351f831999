package chain

import (
	"cmp"
	"maps"
	"slices"

	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
)

// Snapshot transfer. A predecessor that must restart a downstream peer
// from its state (a joining node, or a successor that needs updates no
// longer retained) sends a snapshot in chunks of at most
// Options.SnapshotChunkBytes, one per Forward: first the marshaled
// StateSnapshot, frozen when the transfer began, then the archive's
// results, read from the Archive as the transfer goes. The handshake reply
// carries the first chunk; the receiver acknowledges every chunk but the
// last (SnapshotAck), and the sender keeps at most snapshotWindow chunks
// unacknowledged, so a transfer of any size holds only a few chunks in
// flight. Updates after the snapshot's seq follow the last chunk on the
// same link.
//
// The receiver keeps the state's bytes until the last chunk and hands the
// archived results to the edge as they come (ArchiveOp.Stage); on the last
// chunk it installs the state, and the results set aside replace its
// archive (ArchiveOp.Install). A transfer that breaks (a lost chunk, a
// broken link) leaves the receiver's state as it was: it says Hello again,
// and the predecessor starts over.
//
// The archive is read only once the peer has acknowledged a chunk, in a
// later Ready than the one that began the transfer: by then the edge has
// made every archive write of that Ready, including the install of a
// snapshot this replica received itself just before. (A later install
// cancels the transfer.) The archive part may hold results retired after
// the snapshot's seq:
// harmless, since a result never changes once archived and a read looks in
// the state first; the receiver retires those auctions again, with the
// same results, when it applies the updates that retire them.

const (
	// DefaultSnapshotChunkBytes is Options.SnapshotChunkBytes' default.
	DefaultSnapshotChunkBytes = 2 << 20
	// snapshotWindow is how many chunks a sender keeps unacknowledged.
	snapshotWindow = 4
	// snapshotPatience multiplies the Hello retry period while a transfer
	// is under way: a receiver that gets chunks waits that much longer
	// between two before it asks again.
	snapshotPatience = 20
	// archiveBatch is how many archived results one read asks for.
	archiveBatch = 256
)

// snapshotOut is a snapshot in transfer to one downstream peer.
type snapshotOut struct {
	seq   uint64
	state []byte // the marshaled state, sent first
	off   int    // bytes of state sent
	// pending are results retired in this Ready, not yet in the archive:
	// sent before the archive's.
	pending []*api.AuctionInfo
	after   string // the last archived id sent
	next    uint32 // index of the next chunk
	acked   uint32 // chunks the peer has acknowledged
}

// snapshotIn is a snapshot being received from the predecessor.
type snapshotIn struct {
	seq   uint64
	next  uint32 // the chunk expected next
	state []byte
}

// SnapshotStats count the snapshot chunks this replica sent and received.
type SnapshotStats struct {
	ChunksSent, ChunksReceived, Sent, Installed uint64
}

// SnapshotStats returns the replica's snapshot transfer counts.
func (r *Replica) SnapshotStats() SnapshotStats { return r.snapStats }

// startSnapshot begins a snapshot transfer to l (anew, if one was under
// way): the state is frozen now.
func (r *Replica) startSnapshot(l *link) {
	snap := r.state.Snapshot()
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(snap)
	if err != nil {
		// Cannot happen for a state's own snapshot; the peer asks again.
		r.logger().Error("snapshot not sent: cannot encode the state", "peer", l.id, "err", err)
		l.snap = nil
		return
	}
	pending := slices.SortedFunc(maps.Values(r.retiring), func(a, b *api.AuctionInfo) int {
		return cmp.Compare(a.Auction, b.Auction)
	})
	l.snap = &snapshotOut{seq: snap.Seq, state: data, pending: pending}
	l.next, l.holds = snap.Seq+1, snap.Seq
	r.logger().Info("snapshot transfer started", "peer", l.id, "seq", snap.Seq, "auctions", len(snap.Auctions),
		"state_bytes", len(data), "retired", r.state.Retired(), "chunk_bytes", r.opts.SnapshotChunkBytes)
}

// sendChunks sends l's next snapshot chunks, as many as the window
// allows; first (a handshake reply), when given, carries the first of
// them. It clears l.snap once the last chunk is sent.
func (r *Replica) sendChunks(l *link, first *api.Forward) {
	s := l.snap
	for r.chunkDue(s) {
		c := &api.SnapshotChunk{Seq: s.seq, Index: s.next, StateBytes: uint64(len(s.state))}
		budget := r.opts.SnapshotChunkBytes
		if n := min(budget, len(s.state)-s.off); n > 0 {
			c.State = s.state[s.off : s.off+n : s.off+n]
			s.off += n
			budget -= n
		}
		if s.off == len(s.state) && budget > 0 && (r.opts.Archive == nil || s.acked > 0) {
			var err error
			if c.Archived, c.Last, err = r.archiveChunk(s, budget); err != nil {
				r.logger().Error("snapshot transfer abandoned: cannot read the archive", "peer", l.id, "err", err)
				l.snap = nil
				return
			}
		}
		f := first
		if f == nil {
			f = &api.Forward{}
		}
		first = nil
		f.Chunk = c
		r.sendForward(l, f)
		s.next++
		r.snapStats.ChunksSent++
		if c.Last {
			l.snap = nil
			r.snapStats.Sent++
			r.logger().Info("snapshot sent", "peer", l.id, "seq", s.seq, "chunks", s.next, "state_bytes", len(s.state))
			return
		}
	}
}

// archiveChunk takes archived results for the next chunk, up to budget
// bytes (at least one result); last is set once the archive has no more.
func (r *Replica) archiveChunk(s *snapshotOut, budget int) (out []*api.AuctionInfo, last bool, err error) {
	for len(s.pending) > 0 && budget > 0 {
		out = append(out, s.pending[0])
		budget -= proto.Size(s.pending[0])
		s.pending = s.pending[1:]
	}
	for budget > 0 {
		if r.opts.Archive == nil {
			return out, true, nil
		}
		batch, err := r.opts.Archive.Results(s.after, archiveBatch)
		if err != nil {
			return nil, false, err
		}
		for _, info := range batch {
			if budget <= 0 {
				return out, false, nil
			}
			out = append(out, info)
			budget -= proto.Size(info)
			s.after = info.Auction
		}
		if len(batch) < archiveBatch {
			return out, true, nil
		}
	}
	return out, false, nil
}

// chunkDue reports whether s may send its next chunk: within the window,
// and, for chunks of the archive, once the peer has acknowledged one.
func (r *Replica) chunkDue(s *snapshotOut) bool {
	if s.next >= s.acked+snapshotWindow {
		return false
	}
	return s.next == 0 || s.off < len(s.state) || r.opts.Archive == nil || s.acked > 0
}

// stepSnapshotAck lets l's transfer send more chunks.
func (r *Replica) stepSnapshotAck(l *link, a *api.SnapshotAck) {
	if s := l.snap; s != nil && a.GetSeq() == s.seq && a.GetIndex() < s.next {
		s.acked = max(s.acked, a.GetIndex()+1)
	}
}

// sendable reports whether Ready has something to send to l: updates, or
// snapshot chunks the window allows.
func (r *Replica) sendable(l *link) bool {
	switch {
	case !l.ready:
		return false
	case l.snap != nil:
		return r.chunkDue(l.snap)
	}
	return l.next <= r.state.Seq()
}

// stepChunk takes one chunk from the predecessor; handshake is set on
// the Forward that starts a transfer. It returns true once the last chunk
// is in and the snapshot installed.
func (r *Replica) stepChunk(c *api.SnapshotChunk, handshake bool) bool {
	in := r.snapIn
	switch {
	case handshake && c.GetIndex() == 0:
		in = &snapshotIn{seq: c.GetSeq(), state: make([]byte, 0, min(c.GetStateBytes(), 64<<20))}
		r.snapIn = in
		r.archiveOps = append(r.archiveOps, ArchiveOp{Reset: true})
		r.logger().Info("snapshot transfer from predecessor", "from", r.upstream, "seq", c.GetSeq(),
			"state_bytes", c.GetStateBytes())
	case in == nil || c.GetSeq() != in.seq || c.GetIndex() != in.next:
		// A chunk of a transfer this replica is not receiving (one
		// abandoned before): dropped. A transfer that stalls is asked for
		// again by Tick.
		return false
	}
	in.next++
	r.snapStats.ChunksReceived++
	r.lastHelloTick = r.ticks // a transfer under way answers the Hello
	if uint64(len(in.state)+len(c.GetState())) > c.GetStateBytes() {
		r.logger().Error("snapshot chunk overruns the state's size; transfer dropped", "from", r.upstream,
			"seq", in.seq, "chunk", c.GetIndex())
		r.snapIn = nil
		return false
	}
	in.state = append(in.state, c.GetState()...)
	if len(c.GetArchived()) > 0 {
		r.archiveOps = append(r.archiveOps, ArchiveOp{Stage: c.GetArchived()})
	}
	if !c.GetLast() {
		r.send(r.upstream, &api.ChainMessage{Body: &api.ChainMessage_SnapshotAck{
			SnapshotAck: &api.SnapshotAck{Seq: in.seq, Index: c.GetIndex()}}})
		return false
	}
	r.snapIn = nil
	snap := &api.StateSnapshot{}
	if uint64(len(in.state)) != c.GetStateBytes() {
		r.logger().Error("snapshot ended short of the state's size; refused", "from", r.upstream,
			"seq", in.seq, "got", len(in.state), "want", c.GetStateBytes())
		return false
	}
	if err := proto.Unmarshal(in.state, snap); err != nil {
		r.logger().Error("snapshot does not decode; refused", "from", r.upstream, "seq", in.seq, "err", err)
		return false
	}
	if !r.installSnapshot(snap) {
		return false
	}
	r.archiveOps = append(r.archiveOps, ArchiveOp{Install: true})
	r.snapStats.Installed++
	return true
}
