package latency

import (
	"testing"
	"time"
)

// TestHistogram checks quantiles within the buckets' 1% on a uniform
// spread, the maximum, merging, and the bucket geometry.
func TestHistogram(t *testing.T) {
	var h Histogram
	if h.Quantile(0.99) != 0 {
		t.Fatal("empty Histogram has a quantile")
	}
	// 1..10000 microseconds, once each.
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		want := time.Duration(q*10000) * time.Microsecond
		got := h.Quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.01 || diff < -0.01 {
			t.Errorf("quantile(%v) = %v, want %v within 1%%", q, got, want)
		}
	}
	if h.Max() != 10*time.Millisecond {
		t.Errorf("max %v", h.Max())
	}
	var m Histogram
	m.Merge(&h)
	m.Merge(&h)
	if m.Count() != 20000 || m.Quantile(0.5) != h.Quantile(0.5) {
		t.Errorf("merge: n %d p50 %v", m.Count(), m.Quantile(0.5))
	}
	// Every bucket's midpoint maps back to the bucket, and buckets grow.
	for i := 1; i < histBuckets; i++ {
		if bucketOf(bucketMid(i)) != i {
			t.Fatalf("bucketOf(bucketMid(%d)) = %d", i, bucketOf(bucketMid(i)))
		}
		if bucketMid(i) <= bucketMid(i-1) {
			t.Fatalf("bucket %d midpoint %v not above bucket %d's", i, bucketMid(i), i-1)
		}
	}
	if bucketOf(-1) != 0 || bucketOf(1<<62) != histBuckets-1 {
		t.Fatal("out-of-range values are not clamped")
	}
}
