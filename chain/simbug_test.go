package chain

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// TestSimCatchesBrokenLease breaks the lease on purpose — every tail
// serves reads for a second past its lease, longer than the master's
// failure timeout — and expects the lease simulation to find a failing
// seed among the seeds CI runs (TestSimLeases's), and that seed to pass
// once the bug is off: the simulation's faults (partitions from the
// master, pauses) and checks (stale reads, porcupine) are what leases are
// for.
func TestSimCatchesBrokenLease(t *testing.T) {
	broken := simKind{policy: true, leaseOverrunMs: 1000}
	for seed := uint64(1); seed <= uint64(*flagLeaseSeeds); seed++ {
		msgs := probeSeed(t, seed, broken)
		if len(msgs) == 0 {
			continue
		}
		t.Logf("seed %d fails with the broken lease (the first %d seeds pass): %s", seed, seed-1, msgs[0])
		if again := probeSeed(t, seed, simKind{policy: true}); len(again) > 0 {
			t.Errorf("seed %d fails with the lease intact too: %s", seed, again[0])
		}
		return
	}
	t.Errorf("no seed of 1..%d fails with tails serving 1s past their lease: the simulation misses it", *flagLeaseSeeds)
}

// probeSeed runs one seed against a test double that collects failures
// instead of failing t, and returns them.
func probeSeed(t *testing.T, seed uint64, kind simKind) []string {
	p := &seedProbe{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer p.runCleanups()
		runSimWith(p, seed, kind)
	}()
	<-done
	return p.msgs
}

// seedProbe is a testing.TB whose failures are recorded, not reported.
type seedProbe struct {
	testing.TB
	msgs     []string
	cleanups []func()
}

func (p *seedProbe) Helper()             {}
func (p *seedProbe) Log(...any)          {}
func (p *seedProbe) Logf(string, ...any) {}
func (p *seedProbe) Cleanup(f func())    { p.cleanups = append(p.cleanups, f) }
func (p *seedProbe) Failed() bool        { return len(p.msgs) > 0 }
func (p *seedProbe) Error(args ...any) {
	p.msgs = append(p.msgs, strings.TrimSpace(fmt.Sprintln(args...)))
}
func (p *seedProbe) Errorf(f string, args ...any) { p.msgs = append(p.msgs, fmt.Sprintf(f, args...)) }
func (p *seedProbe) Fatal(args ...any)            { p.Error(args...); runtime.Goexit() }
func (p *seedProbe) Fatalf(f string, args ...any) { p.Errorf(f, args...); runtime.Goexit() }
func (p *seedProbe) runCleanups() {
	for i := len(p.cleanups) - 1; i >= 0; i-- {
		p.cleanups[i]()
	}
}
