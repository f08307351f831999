package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gavel-auction/gavel/client"
)

// The benchmarks of the gateway's per-connection cost and of its fan-out,
// in one process with a one-node chain. Their clients are raw TCP
// connections speaking just enough WebSocket (rawWS below) so that the
// client side costs next to nothing in the figures: no goroutine and no
// buffer per idle watcher.
//
//	go test -run '^$' -bench IdleWatchers -benchtime 1x ./gateway/
//	GAVEL_BENCH_HEAPPROFILE=heap.out go test -run '^$' -bench IdleWatchers -benchtime 1x -memprofilerate 1 ./gateway/
//	go test -run '^$' -bench Fanout -benchtime 1x -cpuprofile cpu.out ./gateway/
//
// GAVEL_BENCH_WATCHERS overrides the number of watchers of both (2000 by
// default; each costs two file descriptors in this process).

// benchWatchers is the number of watchers, from GAVEL_BENCH_WATCHERS.
func benchWatchers(b *testing.B, def int) int {
	if s := os.Getenv("GAVEL_BENCH_WATCHERS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			b.Fatalf("GAVEL_BENCH_WATCHERS=%q: want a positive number", s)
		}
		return n
	}
	return def
}

// memStats is the process's live memory after a full collection.
type memStats struct {
	heap, stack uint64 // live heap bytes; goroutine stack bytes in use
	goroutines  int
	rss         uint64 // resident set size (all of the process: chain, gateway, clients)
}

func measureMem() memStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return memStats{heap: m.HeapAlloc, stack: m.StackInuse, goroutines: runtime.NumGoroutine(), rss: readRSS()}
}

// readRSS returns the process's resident set size (Linux; 0 elsewhere).
func readRSS() uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize())
}

// writeHeapProfile writes the heap profile now (after measureMem's
// collections): what the watchers hold, with -test.memprofilerate=1.
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}

// rawWS is a minimal WebSocket client: the handshake, masked text frames
// out, and (only when read is called) unmasked frames in.
type rawWS struct {
	c  net.Conn
	br *bufio.Reader // nil until the first read
}

// dialRaw connects to ws://addr/ws?query and completes the handshake
// without keeping any buffer.
func dialRaw(addr, query string) (*rawWS, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	req := "GET /ws?" + query + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		c.Close()
		return nil, err
	}
	// Read the response byte by byte up to its blank line, so that no
	// frame that follows it is consumed.
	var resp []byte
	one := make([]byte, 1)
	for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
		if _, err := c.Read(one); err != nil {
			c.Close()
			return nil, fmt.Errorf("handshake: %w (read %q)", err, resp)
		}
		resp = append(resp, one[0])
	}
	if !bytes.HasPrefix(resp, []byte("HTTP/1.1 101")) {
		c.Close()
		return nil, fmt.Errorf("handshake refused: %q", resp)
	}
	_ = c.SetDeadline(time.Time{})
	return &rawWS{c: c}, nil
}

// send writes one masked text frame (payload < 126 bytes).
func (w *rawWS) send(text string) error {
	if len(text) >= 126 {
		return fmt.Errorf("rawWS.send: %d bytes is too long", len(text))
	}
	f := make([]byte, 0, 6+len(text))
	f = append(f, 0x81, 0x80|byte(len(text)), 1, 2, 3, 4)
	for i := range len(text) {
		f = append(f, text[i]^byte(i%4+1))
	}
	_, err := w.c.Write(f)
	return err
}

// read returns the payload of the next data frame, answering pings.
func (w *rawWS) read() ([]byte, error) {
	if w.br == nil {
		w.br = bufio.NewReaderSize(w.c, 4096)
	}
	for {
		var h [2]byte
		if _, err := io.ReadFull(w.br, h[:]); err != nil {
			return nil, err
		}
		n := int(h[1] & 0x7f)
		switch n {
		case 126:
			var ext [2]byte
			if _, err := io.ReadFull(w.br, ext[:]); err != nil {
				return nil, err
			}
			n = int(binary.BigEndian.Uint16(ext[:]))
		case 127:
			var ext [8]byte
			if _, err := io.ReadFull(w.br, ext[:]); err != nil {
				return nil, err
			}
			n = int(binary.BigEndian.Uint64(ext[:]))
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(w.br, p); err != nil {
			return nil, err
		}
		switch h[0] & 0x0f {
		case 0x9: // ping: pong with the same payload (short: no mask needed beyond the fixed one)
			f := []byte{0x8a, 0x80 | byte(len(p)), 0, 0, 0, 0}
			if _, err := w.c.Write(append(f, p...)); err != nil {
				return nil, err
			}
		case 0x8:
			return nil, io.EOF
		case 0x1, 0x2:
			return p, nil
		}
	}
}

// jsonField returns the raw value of "key": in a flat JSON object (enough
// for the gateway's pushes), or "".
func jsonField(obj []byte, key string) string {
	i := bytes.Index(obj, []byte(`"`+key+`":`))
	if i < 0 {
		return ""
	}
	v := obj[i+len(key)+3:]
	if len(v) > 0 && v[0] == '"' {
		if j := bytes.IndexByte(v[1:], '"'); j >= 0 {
			return string(v[1 : j+1])
		}
		return ""
	}
	j := bytes.IndexAny(v, ",}")
	if j < 0 {
		return ""
	}
	return string(v[:j])
}

// waitWatchers waits until the gateway counts n watches.
func waitWatchers(b *testing.B, g *Gateway, n int) {
	b.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		w, _ := g.hub.counts()
		if w == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d watchers registered, want %d", w, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// dialWatchers opens n raw connections, each watching one of auctions
// (round robin), 32 dials at a time.
func dialWatchers(b *testing.B, addr string, n int, auctions []string) []*rawWS {
	b.Helper()
	ws := make([]*rawWS, n)
	errs := make(chan error, n)
	sem := make(chan struct{}, 32)
	var wg sync.WaitGroup
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			w, err := dialRaw(addr, fmt.Sprintf("bidder=w%d", i))
			if err == nil {
				err = w.send("watch " + auctions[i%len(auctions)])
			}
			if err != nil {
				errs <- err
				return
			}
			ws[i] = w
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return ws
}

// BenchmarkIdleWatchers measures what an idle watcher costs the gateway:
// live heap, goroutine stacks and goroutines per connection that watches
// an auction and receives nothing. The figures include the benchmark's
// own raw client sockets (a net.Conn each, a few hundred bytes) and are
// taken after a full garbage collection; the process's RSS grows by more
// (the collector lets the heap reach twice the live data, GOGC=100).
func BenchmarkIdleWatchers(b *testing.B) {
	n := benchWatchers(b, 2000)
	c := startStaticChain(b, 1)
	auctions := []string{"a1", "a2", "a3", "a4", "a5", "a6", "a7", "a8", "a9", "a10"}
	for _, a := range auctions {
		c.open(a, time.Hour, 0)
		c.bid(a, "first", 10)
	}
	g, addr := startGateway(b, c, nil, func(o *Options) {
		o.PongWait = 10 * time.Minute // the raw clients do not answer pings
		o.MetricsInterval = time.Hour
	})
	// Warm up: one watcher per auction, so that the upstreams exist and
	// are not counted per watcher.
	warm := dialWatchers(b, addr, len(auctions), auctions)
	waitWatchers(b, g, len(auctions))
	time.Sleep(200 * time.Millisecond)
	b.ResetTimer()
	var perHeap, perStack, perG, perRSS float64
	for range b.N {
		before := measureMem()
		ws := dialWatchers(b, addr, n, auctions)
		waitWatchers(b, g, n+len(warm))
		time.Sleep(500 * time.Millisecond) // let every goroutine park
		after := measureMem()
		perHeap += float64(int64(after.heap)-int64(before.heap)) / float64(n)
		perStack += float64(int64(after.stack)-int64(before.stack)) / float64(n)
		perG += float64(after.goroutines-before.goroutines) / float64(n)
		perRSS += float64(int64(after.rss)-int64(before.rss)) / float64(n)
		if path := os.Getenv("GAVEL_BENCH_HEAPPROFILE"); path != "" {
			writeHeapProfile(b, path)
		}
		if os.Getenv("GAVEL_BENCH_HOLD") != "" {
			b.Logf("holding %d watchers; pid %d", n, os.Getpid())
			time.Sleep(time.Minute)
		}
		b.StopTimer()
		for _, w := range ws {
			w.c.Close()
		}
		waitWatchers(b, g, len(warm))
		b.StartTimer()
	}
	runs := float64(b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric((perHeap+perStack)/runs, "B/watcher")
	b.ReportMetric(perHeap/runs, "heapB/watcher")
	b.ReportMetric(perStack/runs, "stackB/watcher")
	b.ReportMetric(perG/runs, "goroutines/watcher")
	b.ReportMetric(perRSS/runs, "rssB/watcher")
	for _, w := range warm {
		w.c.Close()
	}
}

// BenchmarkFanout measures the delivery of highest pushes: watchers
// (GAVEL_BENCH_WATCHERS, 2000 by default) spread over 100 auctions, bids
// placed at the chain at GAVEL_BENCH_RATE bids/s (1000) for 5 s, open
// loop. Delivery latency is from the bid's reply to the push reaching a
// watcher (0 when the push came first). Every watcher should get every
// successful bid of its auction once, in order: missed counts those it
// never got, nor any later one; conflated those a later push replaced
// (the gateway's answer to a watcher that falls behind, ConflateAfter).
func BenchmarkFanout(b *testing.B) {
	n := benchWatchers(b, 2000)
	rate := 1000
	if s := os.Getenv("GAVEL_BENCH_RATE"); s != "" {
		rate, _ = strconv.Atoi(s)
	}
	const nAuctions = 100
	runFor := 5 * time.Second
	c := startStaticChain(b, 1)
	var auctions []string
	for i := range nAuctions {
		a := fmt.Sprintf("f%d", i)
		auctions = append(auctions, a)
		c.open(a, time.Hour, 0)
	}
	g, addr := startGateway(b, c, nil, func(o *Options) { o.MetricsInterval = time.Hour })
	ws := dialWatchers(b, addr, n, auctions)
	waitWatchers(b, g, n)

	type recv struct {
		auction string
		seq     uint64
		at      time.Time
	}
	got := make([][]recv, n)
	var readers sync.WaitGroup
	for i, w := range ws {
		readers.Go(func() {
			for {
				p, err := w.read()
				if err != nil {
					return
				}
				if jsonField(p, "type") != "highest" {
					continue
				}
				seq, _ := strconv.ParseUint(jsonField(p, "seq"), 10, 64)
				got[i] = append(got[i], recv{jsonField(p, "auction"), seq, time.Now()})
			}
		})
	}

	type placed struct {
		auction string
		seq     uint64
		at      time.Time
	}
	var mu sync.Mutex
	var replies []placed
	var next [nAuctions]atomic.Int64
	b.ResetTimer()
	start := time.Now()
	work := make(chan int, 4096)
	var bidders sync.WaitGroup
	for range 64 {
		bidders.Go(func() {
			for i := range work {
				a := i % nAuctions
				amount := next[a].Add(1)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				r, err := c.client.Bid(ctx, auctions[a], "bidder", amount, "")
				cancel()
				if err == nil && r.Outcome.String() == "SUCCESS" {
					mu.Lock()
					replies = append(replies, placed{auctions[a], r.Version, time.Now()})
					mu.Unlock()
				}
			}
		})
	}
	total := int(float64(rate) * runFor.Seconds())
	tick := time.NewTicker(time.Millisecond)
	for sent := 0; sent < total; {
		<-tick.C
		due := min(total, int(float64(rate)*time.Since(start).Seconds()))
		for ; sent < due; sent++ {
			work <- sent
		}
	}
	tick.Stop()
	close(work)
	bidders.Wait()
	elapsed := time.Since(start)
	time.Sleep(time.Second) // the last pushes arrive
	b.StopTimer()
	for _, w := range ws {
		w.c.Close()
	}
	readers.Wait()

	replyAt := map[string]time.Time{}
	perAuction := map[string][]uint64{}
	for _, r := range replies {
		replyAt[r.auction+"/"+strconv.FormatUint(r.seq, 10)] = r.at
		perAuction[r.auction] = append(perAuction[r.auction], r.seq)
	}
	var lat []time.Duration
	missed, conflated, dup := 0, 0, 0
	for i := range n {
		a := auctions[i%nAuctions]
		seen := map[uint64]int{}
		var last uint64 // the newest seq the watcher got
		for _, r := range got[i] {
			seen[r.seq]++
			last = max(last, r.seq)
			if at, ok := replyAt[r.auction+"/"+strconv.FormatUint(r.seq, 10)]; ok {
				lat = append(lat, max(0, r.at.Sub(at)))
			}
		}
		for _, s := range perAuction[a] {
			switch {
			case seen[s] > 1:
				dup++
			case seen[s] == 1:
			case s < last:
				conflated++ // a newer push replaced it
			default:
				missed++
			}
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		if len(lat) == 0 {
			return 0
		}
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(len(replies))/elapsed.Seconds(), "bids/s")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "pushes/s")
	b.ReportMetric(q(0.5), "p50-ms")
	b.ReportMetric(q(0.99), "p99-ms")
	b.ReportMetric(q(1)*1, "max-ms")
	b.ReportMetric(float64(missed), "missed")
	b.ReportMetric(float64(conflated), "conflated")
	b.ReportMetric(float64(dup), "duplicated")
}

// BenchmarkBids compares closed-loop bids through the gateway with the
// same load straight at the chain: 64 bidders (GAVEL_BENCH_BIDDERS) on 8
// auctions for 3 s each way, against a one-node chain in this process.
// Through the gateway each bidder is a WebSocket connection sending JSON
// bids with ids, one at a time; at the chain each is a client.BidSession.
// Both share the process's CPUs with the chain and the clients.
func BenchmarkBids(b *testing.B) {
	bidders := 64
	if s := os.Getenv("GAVEL_BENCH_BIDDERS"); s != "" {
		bidders, _ = strconv.Atoi(s)
	}
	const nAuctions = 8
	runFor := 3 * time.Second
	c := startStaticChain(b, 1)
	var auctions []string
	for i := range nAuctions {
		a := fmt.Sprintf("b%d", i)
		auctions = append(auctions, a)
		c.open(a, time.Hour, 0)
	}
	_, addr := startGateway(b, c, nil, func(o *Options) { o.MetricsInterval = time.Hour })
	var next [nAuctions]atomic.Int64

	// run runs bidders closed-loop for runFor and returns the bids/s; only
	// the way GAVEL_BENCH_ONLY names (grpc, mux or ws) when it is set.
	only := os.Getenv("GAVEL_BENCH_ONLY")
	run := func(way string, bid func(i int, auction string, amount int64) error) float64 {
		if only != "" && only != way {
			return 0
		}
		var n atomic.Int64
		var wg sync.WaitGroup
		stop := time.Now().Add(runFor)
		start := time.Now()
		for i := range bidders {
			wg.Go(func() {
				for k := i; time.Now().Before(stop); k++ {
					a := k % nAuctions
					if err := bid(i, auctions[a], next[a].Add(1)); err != nil {
						b.Error(err)
						return
					}
					n.Add(1)
				}
			})
		}
		wg.Wait()
		return float64(n.Load()) / time.Since(start).Seconds()
	}

	sessions := make([]*client.BidSession, bidders)
	for i := range sessions {
		sessions[i] = c.client.NewBidSession()
		defer sessions[i].Close()
	}
	b.ResetTimer()
	grpcRate := run("grpc", func(i int, a string, amount int64) error {
		_, err := sessions[i].Bid(context.Background(), a, fmt.Sprint("g", i), amount, "")
		return err
	})

	mux := c.client.NewBidMux(0)
	defer mux.Close()
	muxRate := run("mux", func(i int, a string, amount int64) error {
		_, err := mux.Bid(context.Background(), a, fmt.Sprint("m", i), amount, "")
		return err
	})

	conns := make([]*websocket.Conn, bidders)
	ids := make([]int, bidders)
	for i := range conns {
		ws, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://%s/ws?bidder=w%d", addr, i), nil)
		if err != nil {
			b.Fatal(err)
		}
		defer ws.Close()
		conns[i] = ws
	}
	wsRate := run("ws", func(i int, a string, amount int64) error {
		ids[i]++
		line := fmt.Sprintf(`{"op":"bid","auction":%q,"amount":%d,"id":%d}`, a, amount, ids[i])
		if err := conns[i].WriteMessage(websocket.TextMessage, []byte(line)); err != nil {
			return err
		}
		for {
			_, p, err := conns[i].ReadMessage()
			if err != nil {
				return err
			}
			if jsonField(p, "type") == "bid" {
				if o := jsonField(p, "outcome"); o != "success" && o != "fail" {
					return fmt.Errorf("bid reply %s", p)
				}
				return nil
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(grpcRate, "grpc-bids/s")
	b.ReportMetric(muxRate, "mux-bids/s")
	b.ReportMetric(wsRate, "ws-bids/s")
	if grpcRate > 0 {
		b.ReportMetric(wsRate/grpcRate, "ws/grpc")
	}
}
