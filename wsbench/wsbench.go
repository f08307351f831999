// Package wsbench measures a gavel gateway (docs/gateway.md) under many
// WebSocket connections: what an idle watcher costs the gateway in
// memory, and how fast and how completely the highest pushes of an
// open-loop stream of bids reach every watcher. It is the logic of
// `gavel bench ws`; its Bidder also serves `gavel bench --via ws`, the
// closed-loop bench through the gateway.
//
// A run (Run) goes through these steps, each bounded in count and time:
//
//  1. open Config.Auctions fresh auctions, wsbench-RUN-I, through the
//     chain's client API (Config.Chain);
//  2. read the gateway's memory from its /metrics: process RSS, Go heap
//     and goroutine stacks in use, goroutines; the smallest of 3 readings
//     1 s apart;
//  3. connect Config.Watchers watchers, round robin over the auctions,
//     Config.DialConcurrency at a time: each sends `watch AUCTION` and
//     waits for `watching`. On Linux, connections to a gateway on
//     loopback come from 127.0.0.2 ... 127.0.0.17 so that ephemeral ports
//     never run short;
//  4. let them idle for Config.Idle and read the memory again: (after -
//     before) / watchers connected is what an idle watcher costs;
//  5. connect Config.Bidders bidders (Via "ws": a WebSocket each, named
//     with ?bidder=; Via "grpc": names on the chain client) and hand them
//     Config.Rate bids per second in all, paced by a ticker, for
//     Config.Duration. The load is open loop: the pacer never waits, and a
//     bidder too far behind skips the bid. Bid k goes to auction k mod
//     Auctions and bidder k mod Bidders, for one more than the last amount
//     sent to that auction, so that bids succeed unless another overtook
//     them;
//  6. wait until every bid is answered (at most Config.Timeout), and
//     until every watcher has the last successful bid of its auction, as
//     long as pushes keep coming (at most twice Config.Duration, at least
//     30 s); then close every connection (close frame 1000) and report.
//
// # Delivery accounting
//
// A successful bid's reply carries its version, which is the seq of the
// highest push it causes. For each auction, the successful bids' seqs
// and the times of their sending and of their replies (on the bench's one
// monotonic clock) are kept by seq; each highest push a watcher receives
// is looked up by (auction, seq):
//
//   - pushes expected: the successful bids times the watchers of their
//     auction;
//   - pushes received: every highest push watchers got during the run;
//   - duplicated: pushes whose seq is not above the last seq the watcher
//     had (a repeat or a regression); zero in a healthy run;
//   - conflated: (bid, watcher) pairs where the watcher never got the
//     bid's push but got a later one. The gateway may do that to a
//     watcher that falls behind (docs/gateway.md: a slow connection gets
//     the newest highest, older ones waiting for it are dropped): allowed;
//   - missed: (bid, watcher) pairs where the watcher got neither the bid's
//     push nor any later one of its auction by the time the bench stopped
//     waiting, which the protocol never allows: a watcher always ends with
//     its auction's last highest. Zero in a healthy run. Pushes that were
//     late rather than lost count here too when the bench gave up waiting
//     for them: then Report.WatchersBehind is not zero;
//   - unmatched: pushes whose seq no successful reply named (a bid whose
//     reply was lost, for instance).
//
// So received = expected - conflated - missed + unmatched + duplicated.
// The delivery latency of a matched push is its arrival minus the arrival
// of its bid's reply at the bidder. A push may come before that reply (the
// tail's commit can reach the gateway as fast as the head's answer
// reaches the bidder): such an early push counts as 0 there. The latency
// from the bid's sending to the push is reported too, and is never
// negative.
package wsbench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gavel-auction/gavel/latency"
)

// Defaults for the zero values of Config.
const (
	DefaultAuctions        = 100
	DefaultTimeout         = 5 * time.Second
	DefaultDialConcurrency = 256
)

// Config is one run of the bench.
type Config struct {
	// Target is the gateway.
	Target Target
	// Chain opens the auctions, and takes the bids with Via "grpc".
	Chain Chain
	// Via is how bids are placed: "ws" (default), each bidder on a
	// WebSocket of its own to the gateway, or "grpc", straight at the
	// chain's head with Chain.
	Via string
	// Watchers is how many watcher connections to open (at least 1).
	Watchers int
	// Bidders is how many bidders share the bids (at least 1).
	Bidders int
	// Auctions is how many auctions the watchers and bids are spread over
	// (default DefaultAuctions).
	Auctions int
	// Rate is the bids per second, in all (above 0).
	Rate float64
	// Duration is how long bids are sent (above 0).
	Duration time.Duration
	// Idle is how long the watchers stay idle, once all are connected,
	// before the gateway's memory is read again.
	Idle time.Duration
	// Timeout bounds each open, dial, watch and bid, and the wait for the
	// last replies and pushes at the end (default DefaultTimeout).
	Timeout time.Duration
	// DialConcurrency bounds the connections being opened at once
	// (default DefaultDialConcurrency).
	DialConcurrency int
	// Run names the auctions wsbench-RUN-I; random when empty.
	Run string
	// Progress, when set, gets a progress line every second while the
	// watchers connect and while bids are sent.
	Progress func(line string)
	// Warn, when set, gets the problems that do not stop a run (no
	// /metrics, a low limit of open files).
	Warn func(line string)

	// memEvery is the time between two readings of the gateway's memory
	// (default defaultMemEvery); tests shorten it.
	memEvery time.Duration
}

// Report is the outcome of a run; its JSON form is what `gavel bench ws
// --json` prints. Counts of pushes are of highest pushes; see the
// package comment for how they relate. Latencies are in milliseconds,
// memory in bytes.
type Report struct {
	Via         string  `json:"via"`          // Config.Via
	Gateway     string  `json:"gateway"`      // the gateway's host:port
	Run         string  `json:"run"`          // the auctions are wsbench-RUN-I
	Watchers    int     `json:"watchers"`     // Config.Watchers
	Bidders     int     `json:"bidders"`      // Config.Bidders
	Auctions    int     `json:"auctions"`     // Config.Auctions
	Rate        float64 `json:"rate"`         // Config.Rate
	Seconds     float64 `json:"seconds"`      // time bids were sent for
	Interrupted bool    `json:"interrupted"`  // the context ended the run early
	FDLimit     uint64  `json:"fd_limit"`     // open files the bench may hold
	SourceAddrs int     `json:"source_addrs"` // loopback source addresses spread over (0: the system's choice)

	// Connections: watchers and (Via "ws") bidders.
	ConnectionsMade   int     `json:"connections_made"`
	ConnectionsFailed int     `json:"connections_failed"`
	ConnectSeconds    float64 `json:"connect_seconds"`         // to connect the watchers
	ConnectError      string  `json:"connect_error,omitempty"` // the first failure's
	WatchersLost      int     `json:"watchers_lost"`           // connections that ended before the bench closed them
	LostError         string  `json:"lost_error,omitempty"`    // why the first one ended

	// Bids, by outcome.
	BidsSent      uint64 `json:"bids_sent"`
	BidsOK        uint64 `json:"bids_ok"`   // success
	BidsFail      uint64 `json:"bids_fail"` // too low
	BidsException uint64 `json:"bids_exception"`
	BidsErrors    uint64 `json:"bids_errors"` // no outcome: unavailable, connection lost, timed out (grpc)
	// BidsUnanswered were sent and had no reply Timeout after the last bid
	// was handed over (Via "ws"), a sign of bids sent faster than the
	// gateway takes them.
	BidsUnanswered uint64  `json:"bids_unanswered"`
	BidsSkipped    uint64  `json:"bids_skipped"`        // not sent: the bidder was too far behind
	BidsPerS       float64 `json:"bids_per_s"`          // sent
	AnsweredPerS   float64 `json:"answered_per_s"`      // success, fail and exception
	BidError       string  `json:"bid_error,omitempty"` // the last error of some bidder
	BidP50Ms       float64 `json:"bid_p50_ms"`          // bid sent -> reply
	BidP99Ms       float64 `json:"bid_p99_ms"`
	BidMaxMs       float64 `json:"bid_max_ms"`

	// DrainSeconds is how long the bench waited, after the last bid, for
	// the last replies and pushes; WatchersBehind how many watchers still
	// lacked their auction's last highest when it stopped waiting (their
	// missing pushes count as missed).
	DrainSeconds   float64 `json:"drain_seconds"`
	WatchersBehind int     `json:"watchers_behind"`

	// Pushes (see the package comment).
	PushesExpected  uint64 `json:"pushes_expected"`
	PushesReceived  uint64 `json:"pushes_received"`
	PushesConflated uint64 `json:"pushes_conflated"`
	PushesUnmatched uint64 `json:"pushes_unmatched"`
	PushesEarly     uint64 `json:"pushes_early"`   // came before their bid's reply
	OtherMessages   uint64 `json:"other_messages"` // to watchers, besides highest pushes
	Missed          uint64 `json:"missed"`
	Duplicated      uint64 `json:"duplicated"`

	// Delivery latency: push arrival - the bid's reply (early pushes: 0).
	LatencyP50Ms float64 `json:"latency_p50_ms"`
	LatencyP90Ms float64 `json:"latency_p90_ms"`
	LatencyP99Ms float64 `json:"latency_p99_ms"`
	LatencyMaxMs float64 `json:"latency_max_ms"`
	// Push arrival - the bid's sending.
	FromSendP50Ms float64 `json:"from_send_p50_ms"`
	FromSendP99Ms float64 `json:"from_send_p99_ms"`
	FromSendMaxMs float64 `json:"from_send_max_ms"`

	// The gateway's memory before any watcher connected and with every
	// watcher idle, and the difference per watcher connected; MemoryError
	// says why there are none.
	MemoryError             string  `json:"memory_error,omitempty"`
	GatewayRSSBefore        int64   `json:"gateway_rss_before"` // process_resident_memory_bytes
	GatewayRSSAfter         int64   `json:"gateway_rss_after"`
	GatewayHeapBefore       int64   `json:"gateway_heap_before"` // go_memstats_heap_inuse_bytes
	GatewayHeapAfter        int64   `json:"gateway_heap_after"`
	GatewayStackBefore      int64   `json:"gateway_stack_before"` // go_memstats_stack_inuse_bytes
	GatewayStackAfter       int64   `json:"gateway_stack_after"`
	GatewayGoroutinesBefore int64   `json:"gateway_goroutines_before"` // go_goroutines
	GatewayGoroutinesAfter  int64   `json:"gateway_goroutines_after"`
	RSSPerWatcher           float64 `json:"rss_per_watcher"`
	HeapPerWatcher          float64 `json:"heap_per_watcher"`
	StackPerWatcher         float64 `json:"stack_per_watcher"`
	GoroutinesPerWatcher    float64 `json:"goroutines_per_watcher"`
	// BenchPerWatcher is the bench's own Go memory (heap and stacks in
	// use) per watcher, with every watcher idle.
	BenchPerWatcher float64 `json:"bench_per_watcher"`
}

// Healthy returns why the run was not healthy, "" when it was: every
// connection made and kept, no push missed or duplicated, some bid
// succeeded.
func (r *Report) Healthy() string {
	switch {
	case r.Interrupted:
		return "interrupted"
	case r.ConnectionsFailed > 0:
		return fmt.Sprintf("%d connections failed: %s", r.ConnectionsFailed, r.ConnectError)
	case r.WatchersLost > 0:
		return fmt.Sprintf("%d watchers lost their connection: %s", r.WatchersLost, r.LostError)
	case r.Missed > 0 || r.Duplicated > 0:
		why := fmt.Sprintf("%d pushes missed, %d duplicated", r.Missed, r.Duplicated)
		if r.WatchersBehind > 0 {
			why += fmt.Sprintf(" (%d watchers still behind when the bench stopped waiting, %.1fs after the last bid)",
				r.WatchersBehind, r.DrainSeconds)
		}
		return why
	case r.BidsOK == 0:
		return "no bid succeeded"
	}
	return ""
}

// bench is one run.
type bench struct {
	cfg      Config
	start    time.Time
	dialer   *dialer
	auctions []string
	track    *tracker

	watchers []*watcher // the connected ones, in the order of connection
	bidders  []*bidder
	readers  sync.WaitGroup // every connection's reader goroutine
	closing  atomic.Bool    // the bench is closing the connections
	skipped  atomic.Uint64  // bids the pacer could not hand over
}

// now is the bench's clock: the time since its start (monotonic).
func (b *bench) now() time.Duration { return time.Since(b.start) }

// progress reports a progress line, if anyone listens.
func (b *bench) progress(format string, args ...any) {
	if b.cfg.Progress != nil {
		b.cfg.Progress(fmt.Sprintf(format, args...))
	}
}

// warn reports a problem that does not stop the run.
func (b *bench) warn(format string, args ...any) {
	if b.cfg.Warn != nil {
		b.cfg.Warn(fmt.Sprintf(format, args...))
	}
}

// Errors of Run.
var (
	// ErrConfig is returned (wrapped) for a Config that cannot run.
	ErrConfig = errors.New("wsbench: bad configuration")
	// ErrNoConnection is returned (wrapped) when no watcher could connect.
	ErrNoConnection = errors.New("no watcher could connect")
)

// check fills in the defaults of c and checks it.
func (c *Config) check() error {
	if c.Via == "" {
		c.Via = "ws"
	}
	if c.Auctions == 0 {
		c.Auctions = DefaultAuctions
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.DialConcurrency <= 0 {
		c.DialConcurrency = DefaultDialConcurrency
	}
	if c.memEvery <= 0 {
		c.memEvery = defaultMemEvery
	}
	switch {
	case c.Via != "ws" && c.Via != "grpc":
		return fmt.Errorf("%w: via %q: want ws or grpc", ErrConfig, c.Via)
	case c.Watchers <= 0 || c.Bidders <= 0 || c.Auctions <= 0:
		return fmt.Errorf("%w: watchers, bidders and auctions must be positive", ErrConfig)
	case !(c.Rate > 0) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("%w: rate must be positive", ErrConfig)
	case c.Duration <= 0 || c.Idle < 0:
		return fmt.Errorf("%w: duration must be positive, idle not negative", ErrConfig)
	case c.Chain == nil || c.Target.Addr == "":
		return fmt.Errorf("%w: no chain or no gateway", ErrConfig)
	}
	return nil
}

// Run runs the bench of cfg and reports. It returns an error, and no
// report, only when it cannot start: a bad Config, an auction that cannot
// be opened, no watcher that could connect. When ctx ends it stops what
// it is doing, closes every connection and reports what it measured
// (Interrupted set).
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	if cfg.Run == "" {
		var r [4]byte
		_, _ = rand.Read(r[:])
		cfg.Run = hex.EncodeToString(r[:])
	}
	b := &bench{cfg: cfg, start: time.Now(), dialer: newDialer(cfg.Target, cfg.Timeout), track: newTracker(cfg.Auctions)}
	rep := &Report{Via: cfg.Via, Gateway: cfg.Target.Addr, Run: cfg.Run, Watchers: cfg.Watchers, Bidders: cfg.Bidders,
		Auctions: cfg.Auctions, Rate: cfg.Rate, SourceAddrs: len(b.dialer.sources)}

	conns := uint64(cfg.Watchers)
	if cfg.Via == "ws" {
		conns += uint64(cfg.Bidders)
	}
	limit, err := RaiseFileLimit(conns + 256)
	rep.FDLimit = limit
	switch {
	case err != nil:
		b.warn("cannot raise the limit of open files (%d): %v", limit, err)
	case limit < conns+32:
		b.warn("the limit of open files is %d, for %d connections: some will fail; raise the hard limit (ulimit -Hn, as root)", limit, conns)
	}

	if err := b.open(ctx); err != nil {
		return nil, err
	}

	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg.Target.TLS}}
	defer hc.CloseIdleConnections()
	url := cfg.Target.MetricsURL()
	before, merr := sampleMemory(ctx, hc, url, cfg.memEvery)
	if merr != nil && ctx.Err() == nil {
		b.warn("gateway memory: %v", merr)
	}

	defer b.closeAll()
	if err := b.connectWatchers(ctx, rep); err != nil {
		return nil, err
	}
	if ctx.Err() == nil && merr == nil {
		sleep(ctx, cfg.Idle)
		var after memSample
		if after, merr = sampleMemory(ctx, hc, url, cfg.memEvery); merr == nil {
			rep.memory(before, after, len(b.watchers))
			if after.heapInuse < before.heapInuse {
				b.warn("the gateway's heap shrank while watchers connected (%.1f -> %.1f MiB): it was collecting the garbage "+
					"of an earlier load; for a clean baseline, measure a gateway just started (scripts/launch restart g1)",
					before.heapInuse/(1<<20), after.heapInuse/(1<<20))
			}
		} else if ctx.Err() == nil {
			b.warn("gateway memory: %v", merr)
		}
	}
	if n := len(b.watchers); n > 0 {
		var mem runtime.MemStats
		runtime.ReadMemStats(&mem)
		rep.BenchPerWatcher = math.Round(float64(mem.HeapInuse+mem.StackInuse)/float64(n)*10) / 10
	}
	if merr != nil {
		rep.MemoryError = merr.Error()
	}

	if ctx.Err() == nil {
		b.connectBidders(ctx, rep)
	}
	if ctx.Err() == nil {
		rep.Seconds = b.drive(ctx).Seconds()
	}
	if ctx.Err() == nil {
		t0 := time.Now()
		rep.WatchersBehind = b.drain(ctx)
		rep.DrainSeconds = math.Round(time.Since(t0).Seconds()*1000) / 1000
	}
	rep.Interrupted = ctx.Err() != nil
	for _, bd := range b.bidders {
		bd.abandon() // interrupted: what was still pending
	}
	b.closeAll()
	b.report(rep)
	return rep, nil
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// open opens the run's auctions, open long enough to outlive it.
func (b *bench) open(ctx context.Context) error {
	life := b.cfg.Duration + b.cfg.Idle + time.Hour
	b.auctions = make([]string, b.cfg.Auctions)
	for i := range b.auctions {
		b.auctions[i] = fmt.Sprintf("wsbench-%s-%d", b.cfg.Run, i)
		octx, cancel := context.WithTimeout(ctx, b.cfg.Timeout)
		err := b.cfg.Chain.Open(octx, b.auctions[i], life)
		cancel()
		if err != nil {
			return fmt.Errorf("open %s: %w", b.auctions[i], err)
		}
	}
	return nil
}

// maxBlindFailures is how many watchers may fail to connect, none having
// succeeded, before the bench stops trying: the gateway is not there.
const maxBlindFailures = 100

// connectWatchers connects the watchers, DialConcurrency at a time,
// and starts their readers.
func (b *bench) connectWatchers(ctx context.Context, rep *Report) error {
	var mu sync.Mutex // guards b.watchers, failed and firstErr
	var failed int
	var firstErr error
	stop := b.ticker(func(elapsed time.Duration) {
		mu.Lock()
		defer mu.Unlock()
		b.progress("%3.0fs  connecting: %d/%d watchers (%d failed)", elapsed.Seconds(), len(b.watchers), b.cfg.Watchers, failed)
	})
	t0 := time.Now()
	parallel(b.cfg.Watchers, b.cfg.DialConcurrency, func(i int) bool {
		if ctx.Err() != nil {
			return false
		}
		w, err := b.connectWatcher(ctx, i)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			if ctx.Err() != nil {
				return false
			}
			failed++
			if firstErr == nil {
				firstErr = err
			}
			return len(b.watchers) > 0 || failed < maxBlindFailures
		}
		b.watchers = append(b.watchers, w)
		b.readers.Add(1)
		go w.read(b)
		return true
	})
	stop()
	rep.ConnectSeconds = math.Round(time.Since(t0).Seconds()*1000) / 1000
	rep.ConnectionsMade, rep.ConnectionsFailed = len(b.watchers), failed
	if firstErr != nil {
		rep.ConnectError = firstErr.Error()
	}
	if len(b.watchers) == 0 && ctx.Err() == nil {
		return fmt.Errorf("%w: %v", ErrNoConnection, firstErr)
	}
	return nil
}

// connectBidders makes the bidders and starts their goroutines: a
// connection, a writer and a reader each with Via "ws"; one goroutine each
// with Via "grpc". A bidder that cannot connect is left out.
func (b *bench) connectBidders(ctx context.Context, rep *Report) {
	var mu sync.Mutex // guards b.bidders and rep's connection fields
	parallel(b.cfg.Bidders, b.cfg.DialConcurrency, func(i int) bool {
		bd := &bidder{name: fmt.Sprintf("bidder-%d", i), in: make(chan bidReq, bidderQueue), pending: map[uint64]pendingBid{}}
		if b.cfg.Via == "ws" {
			ws, err := b.dialer.dial(ctx, bd.name)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				rep.ConnectionsFailed++
				if rep.ConnectError == "" {
					rep.ConnectError = err.Error()
				}
				return ctx.Err() == nil
			}
			rep.ConnectionsMade++
			bd.ws = ws
		} else {
			mu.Lock()
			defer mu.Unlock()
		}
		b.bidders = append(b.bidders, bd)
		return true
	})
}

// drive runs the pacer: it hands Rate bids per second to the bidders for
// Duration and returns how long it ran. Every bidder's input is closed
// when it returns.
func (b *bench) drive(ctx context.Context) time.Duration {
	var workers sync.WaitGroup
	for _, bd := range b.bidders {
		if b.cfg.Via == "ws" {
			b.readers.Add(1)
			go bd.readWS(b)
			workers.Go(func() { bd.runWS(b) })
		} else {
			workers.Go(func() { bd.runGRPC(ctx, b) })
		}
	}
	defer func() {
		for _, bd := range b.bidders {
			close(bd.in)
		}
		workers.Wait()
	}()
	if len(b.bidders) == 0 {
		return 0
	}

	rate, total := b.cfg.Rate, int64(math.Round(b.cfg.Rate*b.cfg.Duration.Seconds()))
	every := min(max(time.Duration(float64(time.Second)/rate), time.Millisecond), 20*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var lastSent, lastPushes uint64
	var lastT time.Duration
	stop := b.ticker(func(elapsed time.Duration) {
		var s bidStats
		for _, bd := range b.bidders {
			t := bd.snapshot()
			s.sent, s.ok, s.fail, s.exc, s.errs = s.sent+t.sent, s.ok+t.ok, s.fail+t.fail, s.exc+t.exc, s.errs+t.errs
		}
		pushes, p99 := b.track.progress()
		secs := (elapsed - lastT).Seconds()
		b.progress("%3.0fs  %6.0f bids/s  %8.0f pushes/s  delivery p99 %.3fms  (success %d, fail %d, exception %d, error %d, skipped %d)",
			elapsed.Seconds(), float64(s.sent-lastSent)/secs, float64(pushes-lastPushes)/secs, latency.Ms(p99),
			s.ok, s.fail, s.exc, s.errs, b.skipped.Load())
		lastSent, lastPushes, lastT = s.sent, pushes, elapsed
	})
	defer stop()

	amounts := make([]int64, len(b.auctions))
	start := time.Now()
	var issued int64
	for issued < total {
		select {
		case <-ctx.Done():
			return time.Since(start)
		case now := <-tick.C:
			due := min(total, int64(now.Sub(start).Seconds()*rate))
			for ; issued < due; issued++ {
				a := int(issued % int64(len(b.auctions)))
				amounts[a]++
				select {
				case b.bidders[issued%int64(len(b.bidders))].in <- bidReq{auction: a, amount: amounts[a]}:
				default:
					b.skipped.Add(1)
				}
			}
		}
	}
	return time.Since(start)
}

// ticker calls f with the time elapsed every second until the returned
// stop is called; stop waits for a call in progress.
func (b *bench) ticker(f func(elapsed time.Duration)) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	t0 := time.Now()
	wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				f(now.Sub(t0))
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// minDrain is the least time drain may wait for the watchers to catch
// up, whatever the Duration.
const minDrain = 30 * time.Second

// drain waits until every bid sent is answered (at most Timeout; the
// bids still unanswered then are counted so), then until every watcher
// still connected has its auction's last successful bid, for as long as
// pushes keep coming (none for Timeout: it stops) and at most twice the
// Duration (at least minDrain). It returns how many watchers were still
// behind when it stopped.
func (b *bench) drain(ctx context.Context) (behind int) {
	deadline := time.Now().Add(b.cfg.Timeout)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		pending := 0
		for _, bd := range b.bidders {
			pending += bd.pendingCount()
		}
		if pending == 0 {
			break
		}
		sleep(ctx, 10*time.Millisecond)
	}
	for _, bd := range b.bidders {
		bd.abandon()
	}
	final := make([]uint64, len(b.auctions))
	for a := range final {
		final[a] = b.track.finalSeq(a)
	}
	start := time.Now()
	hardCap := start.Add(max(2*b.cfg.Duration, minDrain))
	lastRecv, lastMove, lastSaid := b.track.received(), start, start
	for ctx.Err() == nil {
		behind = 0
		for _, w := range b.watchers {
			if w.lastSeq.Load() < final[w.auction] {
				behind++
			}
		}
		now := time.Now()
		if r := b.track.received(); r != lastRecv {
			lastRecv, lastMove = r, now
		}
		if behind == 0 || now.Sub(lastMove) > b.cfg.Timeout || now.After(hardCap) {
			break
		}
		if now.Sub(lastSaid) >= time.Second {
			b.progress("draining: %d watchers still without their auction's last highest (%.0fs)", behind, now.Sub(start).Seconds())
			lastSaid = now
		}
		sleep(ctx, 20*time.Millisecond)
	}
	return behind
}

// closeAll closes every connection once: a close frame 1000 on each, a
// wait (at most 5 s) for the gateway to close them in turn, then the
// sockets; it returns when every reader has ended.
func (b *bench) closeAll() {
	if b.closing.Swap(true) {
		return
	}
	var conns []*websocket.Conn
	for _, w := range b.watchers {
		conns = append(conns, w.ws)
	}
	for _, bd := range b.bidders {
		if bd.ws != nil {
			conns = append(conns, bd.ws)
		}
	}
	closeConns(conns)
	done := make(chan struct{})
	go func() {
		b.readers.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
	}
	for _, c := range conns {
		c.Close()
	}
	<-done
}

// memory fills in the memory figures from the readings before and after
// n watchers connected.
func (r *Report) memory(before, after memSample, n int) {
	r.GatewayRSSBefore, r.GatewayRSSAfter = int64(before.rss), int64(after.rss)
	r.GatewayHeapBefore, r.GatewayHeapAfter = int64(before.heapInuse), int64(after.heapInuse)
	r.GatewayStackBefore, r.GatewayStackAfter = int64(before.stackInuse), int64(after.stackInuse)
	r.GatewayGoroutinesBefore, r.GatewayGoroutinesAfter = int64(before.goroutines), int64(after.goroutines)
	if n > 0 {
		per := func(a, b float64) float64 { return math.Round((a-b)/float64(n)*10) / 10 }
		r.RSSPerWatcher = per(after.rss, before.rss)
		r.HeapPerWatcher = per(after.heapInuse, before.heapInuse)
		r.StackPerWatcher = per(after.stackInuse, before.stackInuse)
		r.GoroutinesPerWatcher = math.Round((after.goroutines-before.goroutines)/float64(n)*100) / 100
	}
}

// report fills in the counts of rep once every reader has ended.
func (b *bench) report(rep *Report) {
	var s bidStats
	for _, bd := range b.bidders {
		t := bd.snapshot()
		s.sent, s.ok, s.fail, s.exc, s.errs = s.sent+t.sent, s.ok+t.ok, s.fail+t.fail, s.exc+t.exc, s.errs+t.errs
		s.unanswered += t.unanswered
		s.lat.Merge(&t.lat)
		if t := bd.lastErrText(); t != "" && rep.BidError == "" {
			rep.BidError = t
		}
	}
	rep.BidsSent, rep.BidsOK, rep.BidsFail, rep.BidsException, rep.BidsErrors = s.sent, s.ok, s.fail, s.exc, s.errs
	rep.BidsUnanswered, rep.BidsSkipped = s.unanswered, b.skipped.Load()
	if rep.Seconds > 0 {
		rep.BidsPerS = math.Round(float64(s.sent)/rep.Seconds*10) / 10
		rep.AnsweredPerS = math.Round(float64(s.ok+s.fail+s.exc)/rep.Seconds*10) / 10
		rep.Seconds = math.Round(rep.Seconds*1000) / 1000
	}
	rep.BidP50Ms, rep.BidP99Ms, rep.BidMaxMs = latency.Ms(s.lat.Quantile(0.5)), latency.Ms(s.lat.Quantile(0.99)), latency.Ms(s.lat.Max())

	lastSeqs := make([][]uint64, len(b.auctions))
	var dups uint64
	for _, w := range b.watchers {
		lastSeqs[w.auction] = append(lastSeqs[w.auction], w.lastSeq.Load())
		dups += w.duplicated
		rep.OtherMessages += w.others
		if w.lost != nil {
			rep.WatchersLost++
			if rep.LostError == "" {
				rep.LostError = w.lost.Error()
			}
		}
	}
	expected, covered := b.track.coverage(lastSeqs)
	d := b.track.totals()
	rep.PushesExpected, rep.PushesReceived = expected, d.received+dups
	rep.Missed, rep.Duplicated = expected-covered, dups
	if covered > d.matched {
		rep.PushesConflated = covered - d.matched
	}
	rep.PushesUnmatched, rep.PushesEarly = d.unmatched, d.early
	rep.LatencyP50Ms, rep.LatencyP90Ms = latency.Ms(d.fromReply.Quantile(0.5)), latency.Ms(d.fromReply.Quantile(0.9))
	rep.LatencyP99Ms, rep.LatencyMaxMs = latency.Ms(d.fromReply.Quantile(0.99)), latency.Ms(d.fromReply.Max())
	rep.FromSendP50Ms, rep.FromSendP99Ms, rep.FromSendMaxMs = latency.Ms(d.fromSend.Quantile(0.5)), latency.Ms(d.fromSend.Quantile(0.99)), latency.Ms(d.fromSend.Max())
}
