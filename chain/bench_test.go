package chain

import (
	"fmt"
	"testing"

	"github.com/gavel-auction/gavel/api"
)

// BenchmarkReplicaChain3 measures the protocol core alone: three replicas
// wired directly (no network), bids proposed at the head in groups of
// `group` (as the node loop's group commit does), forwarded, applied,
// acknowledged and answered. It is the ceiling the gRPC edge works under.
func BenchmarkReplicaChain3(b *testing.B) {
	for _, group := range []int{1, 64} {
		b.Run(fmt.Sprintf("group=%d", group), func(b *testing.B) {
			cfg := &api.ChainConfig{Epoch: 1, Chain: []*api.Member{{Id: "n1"}, {Id: "n2"}, {Id: "n3"}}}
			rs := map[string]*Replica{}
			for _, m := range cfg.Chain {
				rs[m.Id] = NewReplica(Options{ID: m.Id})
				if err := rs[m.Id].Reconfigure(cfg); err != nil {
					b.Fatal(err)
				}
			}
			deliver := func() int {
				replies := 0
				for progress := true; progress; {
					progress = false
					for _, id := range []string{"n1", "n2", "n3"} {
						r := rs[id]
						if !r.HasReady() {
							continue
						}
						rd := r.Ready()
						replies += len(rd.Replies)
						for _, m := range rd.Messages {
							rs[m.To].Step(m)
						}
						progress = true
					}
				}
				return replies
			}
			deliver()
			head := rs["n1"]
			head.Propose(0, &api.Command{Op: &api.Command_Open{Open: &api.OpenAuction{Auction: "a", DurationMs: 1 << 30}}}, 1)
			deliver()
			if _, ok := head.State().Get("a"); !ok {
				b.Fatal("the auction did not open: the bids would measure nothing")
			}
			b.ReportAllocs()
			b.ResetTimer()
			amount := int64(0)
			for i := 0; i < b.N; i += group {
				for j := 0; j < group; j++ {
					amount++
					head.Propose(Handle(amount), &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{
						Auction: "a", Bidder: "b" + fmt.Sprint(j%32), Amount: amount, RequestId: fmt.Sprint(amount)}}}, 2)
				}
				if got := deliver(); got != group {
					b.Fatalf("%d replies for %d bids", got, group)
				}
			}
		})
	}
}
