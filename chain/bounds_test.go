package chain

import (
	"flag"
	"fmt"
	"testing"
)

var flagBoundsSeeds = flag.Int("boundsseeds", 500, "TestSimBounds: run seeds 1..N")

// TestSimBounds runs random schedules, with and without the master's
// policy, on a chain that trims its state: closed auctions retire into
// each node's archive while bidders still read and bid on them, request
// ids are forgotten past a small limit, logs are compacted every few
// updates so that joining and restarted nodes get snapshots, and those go
// in chunks of a few dozen bytes. Every run ends with CheckInvariants,
// which also compares the live chain members' archives.
// `go test ./chain -run TestSimBounds -seed 42` replays one seed.
func TestSimBounds(t *testing.T) {
	for _, policy := range []bool{false, true} {
		kind := simKind{policy: policy, bounds: true}
		if *flagSeed != 0 {
			runSimWith(t, *flagSeed, kind)
			continue
		}
		for seed := uint64(1); seed <= uint64(*flagBoundsSeeds); seed++ {
			t.Run(fmt.Sprintf("policy=%v/seed=%d", policy, seed), func(t *testing.T) {
				t.Parallel()
				runSimWith(t, seed, kind)
			})
		}
	}
}
