package chain

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
)

// Archive is where a node keeps the final results of retired auctions
// (see auction.Limits), outside the replica's memory. The replica only
// reads it, as etcd-io/raft reads its Storage: to answer reads and bids of
// retired auctions, and to send the results in snapshots. The edge writes
// it from what Ready hands out: each Applied's Result.Retired, and the
// ArchiveOps of a snapshot being received.
//
// Retirement is replicated: every replica retires the same auctions at the
// same update, so every archive that has followed the same history holds
// the same results. Results never change once archived.
//
// The replica calls it from the goroutine that drives it.
type Archive interface {
	// Result returns the archived result of auction id.
	Result(id string) (*api.AuctionInfo, bool, error)
	// Results returns up to max archived results with ids after `after`
	// (all from ""), in id order.
	Results(after string, max int) ([]*api.AuctionInfo, error)
}

// ArchiveOp is one change to the archive for a snapshot being received;
// the edge makes a Ready's ops in order, before its other writes.
type ArchiveOp struct {
	// Reset drops the results set aside for an earlier transfer: a new
	// one begins.
	Reset bool
	// Stage sets results of the snapshot in transfer aside.
	Stage []*api.AuctionInfo
	// Install: the snapshot is installed (Ready.StateReplaced); the
	// results set aside, and those the Ready's Applied retire, replace
	// the archive.
	Install bool
}

// retiredBy returns the results retired by a Ready's applied updates.
func retiredBy(applied []Applied) []*api.AuctionInfo {
	var out []*api.AuctionInfo
	for _, a := range applied {
		out = append(out, a.Result.Retired...)
	}
	return out
}

// lastInstall is the index of the last Install among ops, or -1.
func lastInstall(ops []ArchiveOp) int {
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].Install {
			return i
		}
	}
	return -1
}

// memArchive is the Archive of a node without a data dir, and of tests: a
// map in memory, which grows with every retired auction.
type memArchive struct {
	results, staged map[string]*api.AuctionInfo
}

var _ Archive = (*memArchive)(nil)

func newMemArchive() *memArchive {
	return &memArchive{results: map[string]*api.AuctionInfo{}, staged: map[string]*api.AuctionInfo{}}
}

// Result returns a copy of the archived result of id.
func (a *memArchive) Result(id string) (*api.AuctionInfo, bool, error) {
	info, ok := a.results[id]
	if !ok {
		return nil, false, nil
	}
	return proto.Clone(info).(*api.AuctionInfo), true, nil
}

// Results returns up to max archived results after `after`, in id order.
func (a *memArchive) Results(after string, max int) ([]*api.AuctionInfo, error) {
	var out []*api.AuctionInfo
	for _, id := range slices.Sorted(maps.Keys(a.results)) {
		if strings.Compare(id, after) <= 0 {
			continue
		}
		if len(out) == max {
			break
		}
		out = append(out, a.results[id])
	}
	return out, nil
}

// Len is the number of archived results.
func (a *memArchive) Len() int { return len(a.results) }

// apply makes the archive writes of a Ready.
func (a *memArchive) apply(rd Ready) {
	last := lastInstall(rd.Archive)
	for i, op := range rd.Archive {
		if op.Reset {
			clear(a.staged)
		}
		for _, info := range op.Stage {
			a.staged[info.Auction] = info
		}
		if i == last {
			for _, info := range retiredBy(rd.Applied) {
				a.staged[info.Auction] = info
			}
			a.results, a.staged = a.staged, map[string]*api.AuctionInfo{}
		}
	}
	if last < 0 {
		for _, info := range retiredBy(rd.Applied) {
			a.results[info.Auction] = info
		}
	}
}

// archived returns the final result of a retired auction: one retired
// since the last Ready, or one in the archive.
func (r *Replica) archived(id string) (*api.AuctionInfo, bool, error) {
	if info, ok := r.retiring[id]; ok {
		return proto.Clone(info).(*api.AuctionInfo), true, nil
	}
	if r.opts.Archive == nil {
		return nil, false, nil
	}
	return r.opts.Archive.Result(id)
}

// proposeRetired answers, sequencing nothing, a bid on a retired auction
// (CLOSED) or an open of a retired auction's id (AUCTION_EXISTS); it
// reports whether it answered. Only auctions missing from the state are
// looked up in the archive.
func (r *Replica) proposeRetired(h Handle, cmd *api.Command) bool {
	id := cmd.GetBid().GetAuction()
	if id == "" {
		id = cmd.GetOpen().GetAuction()
	}
	if _, live := r.state.Get(id); live {
		return false
	}
	info, ok, err := r.archived(id)
	switch {
	case err != nil:
		r.replies = append(r.replies, Reply{Handle: h, Err: fmt.Errorf("%w: reading the archive: %v", ErrUnavailable, err)})
		return true
	case !ok:
		return false
	}
	res := auction.Result{Outcome: api.Outcome_EXCEPTION, Auction: id}
	if bid := cmd.GetBid(); bid != nil {
		res.Reason, res.Amount = api.Reason_CLOSED, bid.Amount
		res.Detail = fmt.Sprintf("auction %q is closed (and retired: its result is archived)", id)
	} else {
		res.Reason = api.Reason_AUCTION_EXISTS
		res.Detail = fmt.Sprintf("auction %q already exists (closed and retired at version %d)", id, info.Version)
	}
	// The answer stands once the close (at the auction's version at the
	// latest) is committed: this head may have retired it ahead of the tail.
	r.wait(info.Version, h, res)
	return true
}
