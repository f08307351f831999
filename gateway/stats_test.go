package gateway

import (
	"testing"
	"time"
)

func TestBidStatsWindow(t *testing.T) {
	var s bidStats
	t0 := time.Unix(1_700_000_000, 0)
	if r, lat := s.snapshot(t0); r != 0 || lat != (latencyMs{}) {
		t.Errorf("empty: %v %+v", r, lat)
	}
	// 5 seconds of 100 bids each: 90 at 1ms, 9 at 10ms, 1 at 100ms.
	for sec := range 5 {
		at := t0.Add(time.Duration(sec) * time.Second)
		for i := range 100 {
			d := time.Millisecond
			switch {
			case i == 99:
				d = 100 * time.Millisecond
			case i >= 90:
				d = 10 * time.Millisecond
			}
			s.record(at, d)
		}
	}
	r, lat := s.snapshot(t0.Add(5 * time.Second))
	if r != 100 {
		t.Errorf("bids/s = %v, want 100", r)
	}
	within := func(name string, got, want float64) {
		if got < want || got > want*bucketGrowth {
			t.Errorf("%s = %v, want within [%v, %v]", name, got, want, want*bucketGrowth)
		}
	}
	within("p50", lat.P50, 1)
	within("p90", lat.P90, 1)
	within("p99", lat.P99, 10)
	// The current second is not counted yet; old seconds fall out.
	s.record(t0.Add(5*time.Second), time.Second)
	if r, _ := s.snapshot(t0.Add(5 * time.Second)); r != 100 {
		t.Errorf("bids/s = %v, want 100 (current second excluded)", r)
	}
	if r, lat := s.snapshot(t0.Add(11 * time.Second)); r != 0 || lat.P99 != 0 {
		t.Errorf("after the window: %v %+v, want zeros", r, lat)
	}
	if b := bucketOf(time.Hour); b != nBuckets-1 {
		t.Errorf("bucketOf(1h) = %d, want the last", b)
	}
}
