package wsbench

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// memSample is one reading of the gateway's process metrics.
type memSample struct {
	rss, heapInuse, heapAlloc, stackInuse, goroutines float64
}

// The Prometheus metrics a memSample reads (the Go and process collectors
// of client_golang, which the gateway registers).
var memMetrics = map[string]func(*memSample) *float64{
	"process_resident_memory_bytes": func(m *memSample) *float64 { return &m.rss },
	"go_memstats_heap_inuse_bytes":  func(m *memSample) *float64 { return &m.heapInuse },
	"go_memstats_heap_alloc_bytes":  func(m *memSample) *float64 { return &m.heapAlloc },
	"go_memstats_stack_inuse_bytes": func(m *memSample) *float64 { return &m.stackInuse },
	"go_goroutines":                 func(m *memSample) *float64 { return &m.goroutines },
}

// scrapeMemory reads the gateway's memory from its /metrics (text
// format), within 5 seconds.
func scrapeMemory(ctx context.Context, hc *http.Client, url string) (memSample, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return memSample{}, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return memSample{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return memSample{}, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	var m memSample
	found := 0
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		field := memMetrics[name]
		if !ok || field == nil {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			return memSample{}, fmt.Errorf("GET %s: %s: %v", url, name, err)
		}
		*field(&m) = v
		found++
	}
	if err := sc.Err(); err != nil {
		return memSample{}, fmt.Errorf("GET %s: %v", url, err)
	}
	if found < len(memMetrics) {
		return memSample{}, fmt.Errorf("GET %s: lacks some of process_resident_memory_bytes, go_memstats_heap_inuse_bytes, "+
			"go_memstats_heap_alloc_bytes, go_memstats_stack_inuse_bytes, go_goroutines", url)
	}
	return m, nil
}

// memSamples is how many readings sampleMemory takes, defaultMemEvery
// apart unless Config says otherwise.
const (
	memSamples      = 3
	defaultMemEvery = time.Second
)

// sampleMemory takes memSamples readings every apart and returns the
// smallest value of each metric: the bench cannot force a collection in
// the gateway, and the smallest heap seen is the nearest to its live heap.
func sampleMemory(ctx context.Context, hc *http.Client, url string, every time.Duration) (memSample, error) {
	var low memSample
	for i := range memSamples {
		if i > 0 {
			select {
			case <-ctx.Done():
				return memSample{}, ctx.Err()
			case <-time.After(every):
			}
		}
		m, err := scrapeMemory(ctx, hc, url)
		if err != nil {
			return memSample{}, err
		}
		if i == 0 {
			low = m
			continue
		}
		low.rss, low.heapInuse = min(low.rss, m.rss), min(low.heapInuse, m.heapInuse)
		low.heapAlloc, low.goroutines = min(low.heapAlloc, m.heapAlloc), min(low.goroutines, m.goroutines)
		low.stackInuse = min(low.stackInuse, m.stackInuse)
	}
	return low, nil
}
