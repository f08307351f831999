package wsbench

import (
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/gavel-auction/gavel/latency"
)

// The delivery tracker matches the pushes watchers receive to the bids
// that caused them. A successful bid's reply carries its version, which
// is the seq of the highest push it causes; the tracker keeps, for every
// auction, the bench-clock times of each successful bid (sent, replied) by
// seq, and each push received is looked up there as it arrives. A push can
// arrive before the reply of its bid reaches the bidder (the tail's commit
// travels to the gateway as fast as the head's answer): the tracker then
// holds its arrival time until the reply comes, and counts it as early.
// Every clock reading is the bench process's monotonic clock.

// bidTimes are a successful bid's sent and reply times, since the bench's
// start.
type bidTimes struct {
	sent, reply time.Duration
}

// auctionTrack is one auction's successful bids and early pushes.
type auctionTrack struct {
	// replies maps seq (uint64) to *bidTimes; written once per seq,
	// under mu, and read without a lock by every watcher of the auction.
	replies sync.Map

	mu sync.Mutex // guards the fields below
	// succ are the seqs of the successful bids, in reply order.
	succ []uint64
	// early holds the arrival times of pushes whose seq no reply has
	// named yet.
	early map[uint64][]time.Duration
	// fromReply and fromSend are the latencies of early pushes, resolved
	// when their bid's reply came: fromReply counts them as 0.
	fromReply, fromSend latency.Histogram
	earlyN              uint64 // early pushes resolved (matched, with a latency)
}

// latShard is a share of the delivery latencies: watcher i records into
// shard i % len(shards), so that watchers on different shards never
// contend.
type latShard struct {
	mu sync.Mutex // guards the fields below
	// fromReply: push arrival - the bid's reply at its bidder;
	// fromSend: push arrival - the bid's sending.
	fromReply, fromSend latency.Histogram
	received            uint64 // highest pushes received (duplicates excluded)
	matched             uint64 // of which with the seq of a successful bid known then
	early               uint64 // of which arrived before the bid's reply
}

// tracker is the delivery bookkeeping of a run.
type tracker struct {
	auctions []auctionTrack
	shards   []latShard
}

// latShards is the number of latency shards.
const latShards = 64

func newTracker(auctions int) *tracker {
	t := &tracker{auctions: make([]auctionTrack, auctions), shards: make([]latShard, latShards)}
	for i := range t.auctions {
		t.auctions[i].early = map[uint64][]time.Duration{}
	}
	return t
}

// succeeded records that a bid on auction a succeeded with version seq,
// and resolves the pushes of seq that came before its reply.
func (t *tracker) succeeded(a int, seq uint64, sent, reply time.Duration) {
	at := &t.auctions[a]
	at.mu.Lock()
	defer at.mu.Unlock()
	if _, dup := at.replies.Load(seq); dup {
		return // a version named twice: the second adds nothing
	}
	at.replies.Store(seq, &bidTimes{sent: sent, reply: reply})
	at.succ = append(at.succ, seq)
	if times, ok := at.early[seq]; ok {
		delete(at.early, seq)
		for _, arr := range times {
			at.fromReply.Record(max(0, arr-reply))
			at.fromSend.Record(arr - sent)
		}
		at.earlyN += uint64(len(times))
	}
}

// delivered records that a watcher (recording into shard sh) received
// the highest push seq of auction a at arr.
func (t *tracker) delivered(a int, seq uint64, arr time.Duration, sh *latShard) {
	at := &t.auctions[a]
	v, ok := at.replies.Load(seq)
	if !ok {
		at.mu.Lock()
		if v, ok = at.replies.Load(seq); !ok {
			at.early[seq] = append(at.early[seq], arr)
			at.mu.Unlock()
			sh.mu.Lock()
			sh.received++
			sh.mu.Unlock()
			return
		}
		at.mu.Unlock()
	}
	bt := v.(*bidTimes)
	sh.mu.Lock()
	sh.received++
	sh.matched++
	if arr < bt.reply {
		sh.early++ // arrived while the reply was being recorded
	}
	sh.fromReply.Record(arr - bt.reply)
	sh.fromSend.Record(arr - bt.sent)
	sh.mu.Unlock()
}

// finalSeq returns the highest seq of a successful bid on auction a (0
// when none succeeded).
func (t *tracker) finalSeq(a int) uint64 {
	at := &t.auctions[a]
	at.mu.Lock()
	defer at.mu.Unlock()
	var m uint64
	for _, s := range at.succ {
		m = max(m, s)
	}
	return m
}

// deliveryTotals are the tracker's counts at the end of a run.
type deliveryTotals struct {
	received, matched, early, unmatched uint64
	fromReply, fromSend                 latency.Histogram
}

// totals merges the shards and the auctions' early pushes; pushes still
// early at the end named no successful bid known to the bench: unmatched.
func (t *tracker) totals() *deliveryTotals {
	d := &deliveryTotals{}
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		d.received += sh.received
		d.matched += sh.matched
		d.early += sh.early
		d.fromReply.Merge(&sh.fromReply)
		d.fromSend.Merge(&sh.fromSend)
		sh.mu.Unlock()
	}
	for i := range t.auctions {
		at := &t.auctions[i]
		at.mu.Lock()
		d.matched += at.earlyN
		d.early += at.earlyN
		d.fromReply.Merge(&at.fromReply)
		d.fromSend.Merge(&at.fromSend)
		for _, times := range at.early {
			d.unmatched += uint64(len(times))
		}
		at.mu.Unlock()
	}
	return d
}

// received returns the pushes received so far.
func (t *tracker) received() (n uint64) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		n += sh.received
		sh.mu.Unlock()
	}
	return n
}

// progress returns the pushes received so far and the p99 of the
// delivery latency (from the reply).
func (t *tracker) progress() (received uint64, p99 time.Duration) {
	var h latency.Histogram
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		received += sh.received
		h.Merge(&sh.fromReply)
		sh.mu.Unlock()
	}
	return received, h.Quantile(0.99)
}

// coverage counts, for watchers whose last seqs per auction are given,
// the pushes the run should have delivered and how many of them no
// watcher could have had conflated away:
//
//   - expected: successful bids times the watchers of their auction;
//   - covered: of those, the (bid, watcher) pairs where the watcher got
//     the bid's seq or a later one (a push it got, or one that replaced it
//     in its queue);
//   - expected - covered is missed: the watcher got nothing at or after
//     the bid's seq.
func (t *tracker) coverage(lastSeqs [][]uint64) (expected, covered uint64) {
	for a := range t.auctions {
		at := &t.auctions[a]
		at.mu.Lock()
		succ := slices.Clone(at.succ)
		at.mu.Unlock()
		slices.Sort(succ)
		expected += uint64(len(succ)) * uint64(len(lastSeqs[a]))
		for _, last := range lastSeqs[a] {
			covered += uint64(sort.Search(len(succ), func(i int) bool { return succ[i] > last }))
		}
	}
	return expected, covered
}
