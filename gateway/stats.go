package gateway

import (
	"math"
	"sync"
	"time"
)

// Bid statistics for the metrics push: the bids this gateway relayed and
// their latency (command in to reply out), over a sliding window of the
// last statsWindow whole seconds, in a histogram of logarithmic buckets.

const (
	// statsWindow is the window, in seconds, of bids_per_s and latency_ms.
	statsWindow = 5
	// nBuckets latency buckets: bucket i holds latencies up to
	// bucketBase * bucketGrowth^i; the last one everything above.
	nBuckets     = 72
	bucketBase   = 0.05 // ms
	bucketGrowth = 1.25 // each bucket 25% wider: quantiles within 25%
)

// statsSlot is one second of the window.
type statsSlot struct {
	sec     int64 // Unix second this slot counts; slots of older seconds are stale
	count   uint64
	buckets [nBuckets]uint32
}

// bidStats is the sliding-window histogram. Safe for concurrent use.
type bidStats struct {
	mu    sync.Mutex // guards slots
	slots [statsWindow + 1]statsSlot
}

// bucketOf returns the bucket of a latency.
func bucketOf(d time.Duration) int {
	ms := float64(d) / float64(time.Millisecond)
	if ms <= bucketBase {
		return 0
	}
	i := int(math.Ceil(math.Log(ms/bucketBase) / math.Log(bucketGrowth)))
	return min(max(i, 0), nBuckets-1)
}

// bucketUpper returns the upper bound of bucket i in milliseconds.
func bucketUpper(i int) float64 {
	return bucketBase * math.Pow(bucketGrowth, float64(i))
}

// record counts one bid that took d, answered at now.
func (s *bidStats) record(now time.Time, d time.Duration) {
	sec := now.Unix()
	s.mu.Lock()
	defer s.mu.Unlock()
	sl := &s.slots[sec%int64(len(s.slots))]
	if sl.sec != sec {
		*sl = statsSlot{sec: sec}
	}
	sl.count++
	sl.buckets[bucketOf(d)]++
}

// snapshot returns the bids per second and the latency quantiles (ms) over
// the statsWindow whole seconds before now's second; zeros without bids.
func (s *bidStats) snapshot(now time.Time) (perSec float64, lat latencyMs) {
	sec := now.Unix()
	var total uint64
	var merged [nBuckets]uint64
	s.mu.Lock()
	for i := range s.slots {
		sl := &s.slots[i]
		if sl.sec < sec-statsWindow || sl.sec >= sec {
			continue
		}
		total += sl.count
		for b, n := range sl.buckets {
			merged[b] += uint64(n)
		}
	}
	s.mu.Unlock()
	if total == 0 {
		return 0, latencyMs{}
	}
	quantile := func(q float64) float64 {
		rank := uint64(math.Ceil(q * float64(total)))
		var cum uint64
		for b, n := range merged {
			cum += n
			if cum >= rank {
				return math.Round(bucketUpper(b)*100) / 100
			}
		}
		return math.Round(bucketUpper(nBuckets-1)*100) / 100
	}
	perSec = math.Round(float64(total)/statsWindow*10) / 10
	return perSec, latencyMs{P50: quantile(0.5), P90: quantile(0.9), P99: quantile(0.99)}
}
