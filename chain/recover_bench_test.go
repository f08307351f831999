package chain

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/storage"
)

// recoveryUpdates is how many updates BenchmarkRecover puts in a data dir
// (GAVEL_RECOVER_UPDATES overrides the default of one million).
func recoveryUpdates(b *testing.B) int {
	if v := os.Getenv("GAVEL_RECOVER_UPDATES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 100 {
			b.Fatalf("GAVEL_RECOVER_UPDATES=%q: want an integer of at least 100", v)
		}
		return n
	}
	return 1_000_000
}

// benchUpdate is update seq of a realistic history: 8 auctions opened
// first, then bids from 1,000 bidders, each one above the last.
func benchUpdate(seq uint64) *api.Update {
	const auctions = 8
	u := &api.Update{Seq: seq, Epoch: 1 + seq/250_000, TimeMs: 1_700_000_000_000 + int64(seq)}
	if seq <= auctions {
		u.Command = &api.Command{Op: &api.Command_Open{Open: &api.OpenAuction{
			Auction: fmt.Sprint("a", seq), Item: "a brass lamp", ClosesAtMs: 1 << 50, MinIncrement: 1,
			RequestId: fmt.Sprint("open-", seq)}}}
		return u
	}
	u.Command = &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{
		Auction: fmt.Sprint("a", 1+seq%auctions), Bidder: fmt.Sprint("bidder-", seq%1000), Amount: int64(seq),
		RequestId: fmt.Sprint("r", seq)}}}
	return u
}

// writeHistory fills dir with n updates appended in group commits of 64,
// as a node under load writes them. With snapshotEvery > 0 it also takes
// a snapshot (and compacts the log) every snapshotEvery updates, as a
// running node does; with 0 the whole history stays in the log.
func writeHistory(b *testing.B, dir string, n, snapshotEvery int) {
	b.Helper()
	st, _, err := storage.Open(storage.Options{Dir: dir, Cluster: "bench", Node: "n1"})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	state := auction.New()
	var snapSeq uint64
	batch := make([]*api.Update, 0, 64)
	for seq := uint64(1); seq <= uint64(n); seq++ {
		u := benchUpdate(seq)
		if _, err := state.Apply(u); err != nil {
			b.Fatalf("update %d: %v", seq, err)
		}
		batch = append(batch, u)
		if len(batch) == cap(batch) || seq == uint64(n) {
			if err := st.Append(batch); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
		if snapshotEvery > 0 && seq%uint64(snapshotEvery) == 0 && len(batch) == 0 {
			if err := st.SaveSnapshot(state.Snapshot()); err != nil {
				b.Fatal(err)
			}
			if err := st.Compact(snapSeq); err != nil {
				b.Fatal(err)
			}
			snapSeq = seq
		}
	}
}

// BenchmarkRecover measures how long a node takes to come back from its
// data dir (storage.Open reading the snapshot and the log, then replaying
// the log into the auction state): the time from process start to a node
// ready to rejoin, less the process's own start. "log" holds every update
// in the write-ahead log (no snapshot); "snapshot" is what a node running
// with the default chain.snapshot_every leaves behind: a snapshot and the
// log since the one before it.
//
//	go test -run '^$' -bench BenchmarkRecover -benchtime 3x ./chain/
func BenchmarkRecover(b *testing.B) {
	n := recoveryUpdates(b)
	for _, c := range []struct {
		name  string
		every int
	}{{"log", 0}, {"snapshot", DefaultSnapshotEvery}} {
		b.Run(fmt.Sprintf("%s/updates=%d", c.name, n), func(b *testing.B) {
			dir := filepath.Join(b.TempDir(), "n1")
			writeHistory(b, dir, n, c.every)
			size := storage.DirSize(dir)
			b.ResetTimer()
			for b.Loop() {
				node, err := NewNode(NodeOptions{ID: "n1", Addr: "127.0.0.1:1", DataDir: dir, Cluster: "bench",
					Initial: &api.ChainConfig{Epoch: 1, Chain: []*api.Member{{Id: "n1", Addr: "127.0.0.1:1"}}}})
				if err != nil {
					b.Fatal(err)
				}
				if got := node.replica.Applied(); got != uint64(n) {
					b.Fatalf("recovered up to %d, want %d", got, n)
				}
				b.StopTimer()
				node.Stop()
				b.StartTimer()
			}
			b.ReportMetric(float64(size)/(1<<20), "MiB-on-disk")
		})
	}
}
