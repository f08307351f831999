// Package latency is the latency histogram of gavel's load generators
// (gavel bench, gavel bench ws): log-linear buckets of fixed size, so that
// recording costs an index computation and an increment, and histograms
// of many clients merge by adding counts.
package latency

import (
	"math"
	"math/bits"
	"time"
)

// Histogram geometry: values (nanoseconds)
// below 2^(subBits+1) have a bucket each; above, every power of two is
// split into 2^subBits buckets, so a bucket's midpoint is within 1/128
// (0.8%) of any value in it. Values of 2^(maxExp+subBits+1) ns (about 52
// hours) and more share the last bucket.
const (
	subBits     = 6
	subCount    = 1 << subBits
	maxExp      = 40
	histBuckets = (maxExp + 2) * subCount
)

// Histogram is a log-linear (HDR-like) latency histogram of fixed size
// (21 KiB): recording is an index computation and an increment, and two
// histograms merge by adding counts. Its zero value is empty. It is not
// safe for concurrent use.
type Histogram struct {
	counts [histBuckets]uint64
	n      uint64
	max    time.Duration
}

// bucketOf returns the bucket of a duration; a negative one counts as 0.
func bucketOf(d time.Duration) int {
	if d < 0 {
		d = 0
	}
	u := uint64(d)
	if u < 2*subCount {
		return int(u)
	}
	e := bits.Len64(u) - (subBits + 1)
	if e > maxExp {
		return histBuckets - 1
	}
	return e*subCount + int(u>>e)
}

// bucketMid returns the midpoint of bucket i.
func bucketMid(i int) time.Duration {
	if i < 2*subCount {
		return time.Duration(i)
	}
	e := i/subCount - 1
	m := uint64(i%subCount + subCount)
	return time.Duration(m<<e + (uint64(1)<<e)/2)
}

// Record adds one value.
func (h *Histogram) Record(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	h.max = max(h.max, d)
}

// Merge adds o's values to h.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// Quantile returns the value below which a fraction q of the values lie
// (0 for an empty histogram); never more than the largest value recorded.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(bucketMid(i), h.max)
		}
	}
	return h.max
}

// Max is the largest value recorded (0 for an empty histogram).
func (h *Histogram) Max() time.Duration { return h.max }

// Count is how many values were recorded.
func (h *Histogram) Count() uint64 { return h.n }

// Ms converts a duration to milliseconds, rounded to the microsecond.
func Ms(d time.Duration) float64 {
	return math.Round(float64(d)/1e3) / 1e3
}
