package wsbench

import (
	"math"
	"math/bits"
	"time"
)

// Histogram geometry (the same as gavel bench's): values (nanoseconds)
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

// histogram is a log-linear (HDR-like) latency histogram of fixed size
// (21 KiB): recording is an index computation and an increment, and two
// histograms merge by adding counts. It is not safe for concurrent use.
type histogram struct {
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

// record adds one value.
func (h *histogram) record(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.n++
	h.max = max(h.max, d)
}

// merge adds o's values to h.
func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.max = max(h.max, o.max)
}

// quantile returns the value below which a fraction q of the values lie
// (0 for an empty histogram); never more than the largest value recorded.
func (h *histogram) quantile(q float64) time.Duration {
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

// ms converts a duration to milliseconds, rounded to the microsecond.
func ms(d time.Duration) float64 {
	return math.Round(float64(d)/1e3) / 1e3
}
