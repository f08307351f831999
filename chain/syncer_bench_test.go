package chain

import (
	"fmt"
	"testing"

	"github.com/gavel-auction/gavel/api"
)

// BenchmarkSyncer measures the syncer (syncer.go) writing updates to a
// real data dir with sync always: the driver hands over `group` Readies
// of one update each, then waits for them (flush), so that group is how
// many Readies one fsync covers. ns/op is per update: with group 1 every
// update pays a whole fsync, as a lone client's does; with more, the
// Readies queued while the disk writes share the next one, as they do
// under load. The data dir is in the test's temporary directory: put
// TMPDIR on the disk to measure.
func BenchmarkSyncer(b *testing.B) {
	for _, group := range []int{1, 8, 64} {
		b.Run(fmt.Sprintf("group=%d", group), func(b *testing.B) {
			n, err := NewNode(NodeOptions{ID: "n1", Addr: "127.0.0.1:1", DataDir: b.TempDir(), Sync: true})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(n.Stop)
			seq := uint64(0)
			b.ResetTimer()
			for i := 0; i < b.N; i += group {
				for range group {
					seq++
					n.syncer.submit(syncJob{gen: 1, seq: seq, ups: []*api.Update{benchUpdate(seq)}})
				}
				if _, got, err := n.syncer.flush(); err != nil || got != seq {
					b.Fatalf("flush: seq %d, %v; want %d", got, err, seq)
				}
			}
		})
	}
}
