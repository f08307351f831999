package e2e

import (
	"slices"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
)

// TestMasterSplicesCrashedNode runs 3 masters and 3 nodes with bidders and
// readers going through every node, SIGKILLs the head, a middle node or the
// tail, and leaves the rest to the master: it must detect the crash from
// the missing heartbeats and splice the node out. Bids go on; the history
// is linearizable, no acknowledged bid is lost, the survivors agree.
func TestMasterSplicesCrashedNode(t *testing.T) {
	for _, tc := range []struct{ name, victim string }{
		{"head", "n1"}, {"middle", "n2"}, {"tail", "n3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newMasterCluster(t, 3)
			w := newWorkload(c, "a1", "a2")
			w.start(6, 2)
			time.Sleep(time.Second)
			killed := time.Now()
			c.kill(tc.victim)
			cfg := c.waitConfig(tc.victim+" removed", 5*time.Second, func(cfg *api.ChainConfig) bool {
				return !slices.Contains(chainIDs(cfg), tc.victim)
			})
			t.Logf("SIGKILLed %s; %s after %v", tc.victim, describeConfig(cfg), time.Since(killed).Round(time.Millisecond))
			before := w.successes()
			time.Sleep(1500 * time.Millisecond)
			w.finish()
			if after := w.successes(); after-before < 20 {
				t.Errorf("only %d bids succeeded after the splice", after-before)
			}
			w.verify(t, chainIDs(cfg)...)
		})
	}
}
