package wsbench

import (
	"context"
	"encoding/json"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/latency"
)

// run runs the bench against g (started over http unless it was) with
// small numbers and returns its report.
func run(t *testing.T, g *fakeGateway, mod func(*Config)) *Report {
	t.Helper()
	target := Target{Addr: g.addr()}
	if g.srv.URL == "" {
		target = g.start(false)
	}
	cfg := Config{Target: target, Chain: fakeChain{g}, Watchers: 30, Bidders: 3, Auctions: 4,
		Rate: 200, Duration: 300 * time.Millisecond, Timeout: 5 * time.Second, memEvery: 10 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// A healthy run: every connection made, every bid's push delivered once
// to each watcher of its auction, the gateway's memory read per watcher.
func TestRunHealthy(t *testing.T) {
	for _, tc := range []struct {
		name, via string
		tls, auth bool
	}{{"ws", "ws", false, false}, {"grpc", "grpc", false, false}, {"wss-auth", "ws", true, true}} {
		via := tc.via
		t.Run(tc.name, func(t *testing.T) {
			g := newFakeGateway(t)
			g.auth = tc.auth
			target := g.start(tc.tls)
			rep := run(t, g, func(c *Config) { c.Via, c.Target = via, target })
			conns := 30
			if via == "ws" {
				conns += 3
			}
			if rep.ConnectionsMade != conns || rep.ConnectionsFailed != 0 || rep.WatchersLost != 0 {
				t.Errorf("connections: %+v", rep)
			}
			if rep.BidsSent != 60 || rep.BidsOK != 60 || rep.BidsErrors+rep.BidsUnanswered+rep.BidsSkipped != 0 {
				t.Errorf("bids: sent %d ok %d errors %d unanswered %d skipped %d, want 60 sent and ok",
					rep.BidsSent, rep.BidsOK, rep.BidsErrors, rep.BidsUnanswered, rep.BidsSkipped)
			}
			// 60 bids over 4 auctions, 30 watchers round robin: 8 or 7 each.
			if want := uint64(15*8*2 + 15*7*2); rep.PushesExpected != want || rep.PushesReceived != want {
				t.Errorf("pushes: expected %d received %d, want %d", rep.PushesExpected, rep.PushesReceived, want)
			}
			if rep.Missed+rep.Duplicated+rep.PushesConflated+rep.PushesUnmatched != 0 {
				t.Errorf("missed %d duplicated %d conflated %d unmatched %d", rep.Missed, rep.Duplicated, rep.PushesConflated, rep.PushesUnmatched)
			}
			if rep.Healthy() != "" || rep.Interrupted {
				t.Errorf("unhealthy: %s", rep.Healthy())
			}
			if rep.RSSPerWatcher != 1000 || rep.HeapPerWatcher != 500 || rep.StackPerWatcher != 200 || rep.GoroutinesPerWatcher != 1 {
				t.Errorf("memory per watcher: rss %v heap %v stack %v goroutines %v", rep.RSSPerWatcher, rep.HeapPerWatcher,
					rep.StackPerWatcher, rep.GoroutinesPerWatcher)
			}
			if rep.LatencyMaxMs > 1000 || rep.FromSendP50Ms <= 0 {
				t.Errorf("latency: %+v", rep)
			}
			if len(g.opened) != 4 || !strings.HasPrefix(g.opened[0], "wsbench-"+rep.Run+"-") {
				t.Errorf("opened %v", g.opened)
			}
			if runtime.GOOS == "linux" && rep.SourceAddrs != sourceAddrs {
				t.Errorf("source addresses: %d, want %d on loopback", rep.SourceAddrs, sourceAddrs)
			}
			g.mu.Lock()
			open := g.conns
			g.mu.Unlock()
			if open != 0 {
				t.Errorf("%d connections still open after the run", open)
			}
			if _, err := json.Marshal(rep); err != nil {
				t.Error(err)
			}
		})
	}
}

// The accounting sees what the gateway must not do (a watcher left
// without the last highest of its auction, a seq delivered twice) and
// tells apart what it may do (skip a highest the watcher got a later
// one of).
func TestRunCountsFaults(t *testing.T) {
	g := newFakeGateway(t)
	var mu sync.Mutex // guards dropped and doubled
	var dropped, doubled uint64
	// One auction: bid k has seq k.
	g.drop = func(w int, seq uint64) bool {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case w == 0 && seq == 2:
			return true // a later one follows: conflated
		case w == 1 && seq >= 10:
			dropped++ // nothing after: missed
			return true
		}
		return false
	}
	g.dup = func(w int, seq uint64) bool {
		mu.Lock()
		defer mu.Unlock()
		if w == 2 && seq == 3 {
			doubled++
			return true
		}
		return false
	}
	rep := run(t, g, func(c *Config) {
		c.Via, c.Watchers, c.Auctions, c.Bidders, c.Timeout = "grpc", 8, 1, 1, 300*time.Millisecond
	})
	mu.Lock()
	defer mu.Unlock()
	if rep.Duplicated != 1 || doubled != 1 {
		t.Errorf("duplicated %d, want 1 (%d doubled)", rep.Duplicated, doubled)
	}
	if rep.Missed != dropped || dropped == 0 {
		t.Errorf("missed %d, want %d", rep.Missed, dropped)
	}
	if rep.PushesConflated != 1 {
		t.Errorf("conflated %d, want 1", rep.PushesConflated)
	}
	if rep.PushesReceived != rep.PushesExpected-dropped-1+1 {
		t.Errorf("received %d, expected %d", rep.PushesReceived, rep.PushesExpected)
	}
	if rep.Healthy() == "" {
		t.Error("a run with missed and duplicated pushes is healthy")
	}
}

// A push the gateway conflated away (a later one came) is conflated, not
// missed.
func TestRunConflated(t *testing.T) {
	g := newFakeGateway(t)
	// One auction: every bid's seq is on it. Watcher 0 skips seqs 3 and 4.
	g.drop = func(w int, seq uint64) bool { return w == 0 && (seq == 3 || seq == 4) }
	rep := run(t, g, func(c *Config) { c.Watchers = 5; c.Auctions = 1 })
	if rep.PushesConflated != 2 || rep.Missed != 0 || rep.Duplicated != 0 {
		t.Errorf("conflated %d missed %d duplicated %d, want 2, 0, 0", rep.PushesConflated, rep.Missed, rep.Duplicated)
	}
	if rep.PushesReceived != rep.PushesExpected-2 || rep.Healthy() != "" {
		t.Errorf("received %d of %d; healthy: %q", rep.PushesReceived, rep.PushesExpected, rep.Healthy())
	}
}

// The run stops when its context ends, closes everything and says so.
func TestRunInterrupted(t *testing.T) {
	g := newFakeGateway(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	start := time.Now()
	rep, err := Run(ctx, Config{Target: g.start(false), Chain: fakeChain{g}, Watchers: 10, Bidders: 2, Auctions: 2,
		Rate: 100, Duration: time.Minute, memEvery: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("took %v to stop", took)
	}
	if !rep.Interrupted || rep.Healthy() != "interrupted" || rep.BidsSent == 0 {
		t.Errorf("report %+v", rep)
	}
}

// A gateway nobody listens at: an error, after a bounded number of
// attempts.
func TestRunNoGateway(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	g := newFakeGateway(t)
	_, err = Run(context.Background(), Config{Target: Target{Addr: addr}, Chain: fakeChain{g}, Watchers: 1000, Bidders: 1,
		Rate: 1, Duration: time.Second, Timeout: time.Second, memEvery: 10 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), ErrNoConnection.Error()) {
		t.Fatalf("err %v, want %v", err, ErrNoConnection)
	}
}

func TestConfigChecked(t *testing.T) {
	ok := Config{Target: Target{Addr: "127.0.0.1:1"}, Chain: fakeChain{}, Watchers: 1, Bidders: 1, Rate: 1, Duration: time.Second}
	for name, mod := range map[string]func(*Config){
		"via":      func(c *Config) { c.Via = "smoke" },
		"watchers": func(c *Config) { c.Watchers = 0 },
		"bidders":  func(c *Config) { c.Bidders = -1 },
		"rate":     func(c *Config) { c.Rate = 0 },
		"duration": func(c *Config) { c.Duration = 0 },
		"idle":     func(c *Config) { c.Idle = -time.Second },
		"chain":    func(c *Config) { c.Chain = nil },
	} {
		c := ok
		mod(&c)
		if err := c.check(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := ok.check(); err != nil || ok.Via != "ws" || ok.Auctions != DefaultAuctions || ok.Timeout != DefaultTimeout {
		t.Errorf("defaults: %v %+v", err, ok)
	}
}

// The closed-loop Bidder matches replies by id and skips pushes.
func TestBidder(t *testing.T) {
	g := newFakeGateway(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	target := g.start(false)
	w, err := DialBidder(ctx, target, "w", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// The bidder watches the auction too, so pushes come between replies.
	if err := w.ws.WriteMessage(1, []byte("watch a1")); err != nil {
		t.Fatal(err)
	}
	b, err := DialBidder(ctx, target, "alice", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i := range 5 {
		r, err := w.Bid(ctx, "a1", int64(i+1))
		if err != nil || r.Outcome != "success" || r.Version == 0 {
			t.Fatalf("bid %d: %+v %v", i, r, err)
		}
		if _, err := b.Bid(ctx, "a1", int64(100+i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Error(err)
	}
	if g.lastSeq() != 10 {
		t.Errorf("%d bids sequenced, want 10", g.lastSeq())
	}
}

func TestFields(t *testing.T) {
	msg := []byte(`{"type":"highest","auction":"wsbench-1-2","amount":7,"bidder":"bidder-1","closes_at":17,"seq":12345,"server_time":9,"id":42}`)
	if got := string(stringField(msg, patType)); got != "highest" {
		t.Errorf("type %q", got)
	}
	if got := string(stringField(msg, patAuction)); got != "wsbench-1-2" {
		t.Errorf("auction %q", got)
	}
	if n, ok := uintField(msg, patSeq); !ok || n != 12345 {
		t.Errorf("seq %d %v", n, ok)
	}
	if n, ok := idOf(msg); !ok || n != 42 {
		t.Errorf("id %d %v", n, ok)
	}
	if _, ok := idOf([]byte(`{"type":"bid","bid":3}`)); ok {
		t.Error(`"bid": taken for an id`)
	}
	if _, ok := uintField([]byte(`{"seq":"x"}`), patSeq); ok {
		t.Error("a string seq read as a number")
	}
}

// Coverage: a watcher that ends at seq L covers the successful bids up
// to L; the others are missed.
func TestCoverage(t *testing.T) {
	tr := newTracker(2)
	for _, s := range []uint64{30, 10, 20} {
		tr.succeeded(0, s, 0, time.Millisecond)
	}
	tr.succeeded(1, 40, 0, time.Millisecond)
	exp, cov := tr.coverage([][]uint64{{30, 20, 0}, {40}})
	if exp != 3*3+1 || cov != 3+2+0+1 {
		t.Errorf("expected %d covered %d, want 10 and 6", exp, cov)
	}
	if tr.finalSeq(0) != 30 || tr.finalSeq(1) != 40 {
		t.Errorf("final seqs %d %d", tr.finalSeq(0), tr.finalSeq(1))
	}
}

// A push before its bid's reply is held, then counted with latency 0
// from the reply; one whose seq no reply names is unmatched.
func TestEarlyPushes(t *testing.T) {
	tr := newTracker(1)
	sh := &tr.shards[0]
	tr.delivered(0, 7, 5*time.Millisecond, sh)
	tr.delivered(0, 8, 5*time.Millisecond, sh)
	tr.succeeded(0, 7, time.Millisecond, 6*time.Millisecond)
	tr.delivered(0, 7, 9*time.Millisecond, sh)
	d := tr.totals()
	if d.received != 3 || d.matched != 2 || d.early != 1 || d.unmatched != 1 {
		t.Errorf("totals %+v", *d)
	}
	if d.fromReply.Max() != 3*time.Millisecond || d.fromSend.Max() != 8*time.Millisecond || d.fromReply.Quantile(0.5) != 0 {
		t.Errorf("latencies: from reply max %v p50 %v, from send max %v", d.fromReply.Max(), d.fromReply.Quantile(0.5), d.fromSend.Max())
	}
}

func TestLoopbackSources(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("loopback spreading is for Linux")
	}
	if got := loopbackSources("127.0.0.1:7401"); len(got) != sourceAddrs || got[0].String() != "127.0.0.2" {
		t.Errorf("loopback: %v", got)
	}
	for _, a := range []string{"10.0.0.1:7401", "[::1]:7401", "localhost:7401", "nonsense"} {
		if got := loopbackSources(a); got != nil {
			t.Errorf("%s: %v", a, got)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h latency.Histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	if p := h.Quantile(0.5); p < 495*time.Microsecond || p > 505*time.Microsecond {
		t.Errorf("p50 %v", p)
	}
	if h.Quantile(1) != time.Millisecond || h.Max() != time.Millisecond {
		t.Errorf("max %v %v", h.Quantile(1), h.Max())
	}
	h.Record(-time.Second)
	if h.Quantile(0) != 0 {
		t.Errorf("a negative value: %v", h.Quantile(0))
	}
}
