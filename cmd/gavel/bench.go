package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/latency"
	"github.com/gavel-auction/gavel/wsbench"
)

// benchWorker is one closed-loop client's tally.
type benchWorker struct {
	mu   sync.Mutex // guards the fields below: the worker takes it once per bid, the progress reporter once a second
	hist latency.Histogram
	ok   uint64
	fail uint64
	exc  uint64
	errs uint64
}

// benchTotals is the merged tally of every worker.
type benchTotals struct {
	hist                latency.Histogram
	ok, fail, exc, errs uint64
}

func (t *benchTotals) ops() uint64 { return t.ok + t.fail + t.exc + t.errs }

// collect merges every worker's tally into t (reset first).
func (t *benchTotals) collect(ws []*benchWorker) {
	*t = benchTotals{}
	for _, w := range ws {
		w.mu.Lock()
		t.hist.Merge(&w.hist)
		t.ok += w.ok
		t.fail += w.fail
		t.exc += w.exc
		t.errs += w.errs
		w.mu.Unlock()
	}
}

// benchJSON is the --json report of a bench run.
type benchJSON struct {
	Clients   int     `json:"clients"`
	Seconds   float64 `json:"seconds"`
	Auctions  int     `json:"auctions"`
	Bidders   int     `json:"bidders"`
	Ops       uint64  `json:"ops"`
	OpsPerS   float64 `json:"ops_per_s"`
	OK        uint64  `json:"ok"`
	Fail      uint64  `json:"fail"`
	Exception uint64  `json:"exception"`
	Errors    uint64  `json:"errors"`
	P50Ms     float64 `json:"p50_ms"`
	P90Ms     float64 `json:"p90_ms"`
	P99Ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
}

// benchParams are bench's settings.
type benchParams struct {
	clients, auctions, bidders int
	duration, warmup, timeout  time.Duration
	// unary sends each bid as its own Bid call instead of on the client's
	// BidStream session.
	unary bool
	// via is "grpc" (bids straight at the chain) or "ws" (through a
	// gateway's WebSocket, one connection per client).
	via string
}

// bidFunc places one bid of a closed-loop client and waits for its
// outcome.
type bidFunc func(ctx context.Context, auction, bidder string, amount int64, requestID string) (*api.BidReply, error)

func cmdBench(ctx context.Context, e *env, args []string) error {
	if rest, ok := subcommand(args, "ws"); ok {
		return cmdBenchWS(ctx, e, rest)
	}
	f := newFlags(e, "bench", "[--clients N] [--duration D] [--via grpc|ws] [flags]", `
Closed-loop load generator. Opens --auctions fresh auctions (bench-<run>-<i>),
then runs --clients concurrent clients; each places a bid, waits for its
outcome, and places the next, until --duration has passed after --warmup.
Each bid picks a random auction and bidder and bids one above the highest
amount any client has sent to that auction, so most bids succeed and some
fail (too low). Bids go straight to the chain head, each client on its own
BidStream (--unary: one Bid call per bid, as the bid command does).

With --via ws the bids go through a gateway instead (--gateway, default the
first of the config): each client has a WebSocket of its own, as bidder
bidder-<i mod --bidders>, and sends each bid as a JSON command with an id,
waiting for the reply that echoes it. Compare:

  gavel bench --clients 64
  gavel bench --clients 64 --via ws

Prints throughput, outcome counts and latency quantiles of the bids after the
warmup; a progress line goes to stderr every second (not with --json).
--timeout bounds each bid.

gavel bench ws (see gavel bench ws --help) measures the gateway's pushes
to many watchers instead.`)
	var p benchParams
	f.IntVar(&p.clients, "clients", 64, "concurrent clients")
	f.DurationVar(&p.duration, "duration", 10*time.Second, "measured run time, after the warmup")
	f.IntVar(&p.auctions, "auctions", 8, "auctions to spread the bids over")
	f.IntVar(&p.bidders, "bidders", 32, "distinct bidder names")
	f.DurationVar(&p.warmup, "warmup", time.Second, "unmeasured time before the run")
	f.BoolVar(&p.unary, "unary", false, "one unary Bid call per bid instead of a stream per client")
	f.StringVar(&p.via, "via", "grpc", "grpc: bids straight at the chain; ws: through a gateway's WebSocket")
	gw := f.String("gateway", "", "with --via ws: the gateway, an id of the config or host:port (default: the config's first)")
	cpuprofile := f.String("cpuprofile", "", "write a CPU profile of the bench process to this file")
	_ = f.MarkHidden("cpuprofile")
	com, err := parseCommonNoArgs(f, args)
	if err != nil {
		return err
	}
	switch {
	case p.clients <= 0:
		return f.usageErr("--clients must be positive")
	case p.auctions <= 0:
		return f.usageErr("--auctions must be positive")
	case p.bidders <= 0:
		return f.usageErr("--bidders must be positive")
	case p.duration <= 0:
		return f.usageErr("--duration must be positive")
	case p.warmup < 0:
		return f.usageErr("--warmup must not be negative")
	case p.via != "grpc" && p.via != "ws":
		return f.usageErr("--via must be grpc or ws, got %q", p.via)
	case p.via == "ws" && p.unary:
		return f.usageErr("--unary applies to --via grpc only")
	case p.via != "ws" && f.Changed("gateway"):
		return f.usageErr("--gateway applies to --via ws only")
	}
	cl, cfg, err := com.asAdmin().client()
	if err != nil {
		return err
	}
	defer cl.Close()
	p.timeout = com.timeout
	actx, err := com.authorize(ctx, cfg, adminID, auth.RoleAdmin)
	if err != nil {
		return err
	}
	var target wsbench.Target
	if p.via == "ws" {
		if target, err = gatewayTarget(f, cfg, *gw); err != nil {
			return err
		}
	}

	if *cpuprofile != "" {
		stop, err := startCPUProfile(*cpuprofile)
		if err != nil {
			return exception("bench: %v", err)
		}
		defer stop()
	}

	// The load generator shares the machine with the nodes it measures:
	// a larger GC target keeps its own collection work (its live heap is
	// tiny, so the default collects every few MB of garbage) out of their way.
	defer debug.SetGCPercent(debug.SetGCPercent(400))

	run := client.NewRequestID()[:8]
	ids, err := benchOpen(actx, cl, run, p)
	if err != nil {
		return err
	}
	newBid := func(int) (bidFunc, func()) {
		if p.unary {
			return cl.Bid, func() {}
		}
		s := cl.NewBidSession()
		return s.Bid, func() { s.Close() }
	}
	if cfg.Auth.Secret != "" {
		newBid = withBidderTokens(newBid, com, cfg)
	}
	via := "straight to the chain"
	if p.via == "ws" {
		bidders, err := benchDialWS(ctx, target, p)
		if err != nil {
			return err
		}
		defer func() {
			for _, b := range bidders {
				b.Close()
			}
		}()
		newBid = func(i int) (bidFunc, func()) { return wsBidFunc(bidders[i]), func() {} }
		via = "through the gateway at " + target.Addr
	}
	if !com.json {
		fmt.Fprintf(e.stderr, "bench: %d clients, %d auctions (bench-%s-*), %d bidders, %v after a %v warmup, %s\n",
			p.clients, p.auctions, run, p.bidders, p.duration, p.warmup, via)
	}
	tot, elapsed := benchRun(ctx, newBid, run, ids, p, func(t *benchTotals, rate float64, elapsed time.Duration, warm bool) {
		if com.json {
			return
		}
		if warm {
			fmt.Fprintf(e.stderr, "bench: warmup %v\n", elapsed.Round(time.Second))
			return
		}
		fmt.Fprintf(e.stderr, "bench: %3.0fs  %8.0f bids/s  p99 %.3fms  (success %d, fail %d, exception %d, error %d)\n",
			elapsed.Seconds(), rate, latency.Ms(t.hist.Quantile(0.99)), t.ok, t.fail, t.exc, t.errs)
	})

	secs := elapsed.Seconds()
	rep := benchJSON{Clients: p.clients, Seconds: float64(elapsed.Round(time.Millisecond)) / 1e9,
		Auctions: p.auctions, Bidders: p.bidders, Ops: tot.ops(), OK: tot.ok, Fail: tot.fail,
		Exception: tot.exc, Errors: tot.errs, P50Ms: latency.Ms(tot.hist.Quantile(0.50)), P90Ms: latency.Ms(tot.hist.Quantile(0.90)),
		P99Ms: latency.Ms(tot.hist.Quantile(0.99)), MaxMs: latency.Ms(tot.hist.Max())}
	if secs > 0 {
		rep.OpsPerS = float64(int64(float64(rep.Ops)/secs*10)) / 10
	}
	if com.json {
		e.printJSON(rep)
	} else {
		fmt.Fprintf(e.stdout, "throughput: %.1f bids/s (%d bids in %.2fs, %d clients)\n", rep.OpsPerS, rep.Ops, secs, p.clients)
		fmt.Fprintf(e.stdout, "outcomes:   success %d, fail %d, exception %d, error %d\n", rep.OK, rep.Fail, rep.Exception, rep.Errors)
		fmt.Fprintf(e.stdout, "latency ms: p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", rep.P50Ms, rep.P90Ms, rep.P99Ms, rep.MaxMs)
	}
	if rep.Ops == 0 {
		return exception("bench: no bid completed")
	}
	if rep.OK == 0 {
		return exception("bench: no bid succeeded")
	}
	return nil
}

// benchOpen opens the run's auctions, open long enough to outlive it.
func benchOpen(ctx context.Context, cl *client.Client, run string, p benchParams) ([]string, error) {
	ids := make([]string, p.auctions)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-%s-%d", run, i)
		octx, cancel := context.WithTimeout(ctx, p.timeout)
		r, err := cl.Open(octx, &api.OpenAuction{Auction: ids[i], Item: "gavel bench " + run,
			DurationMs: (p.warmup + p.duration + time.Hour).Milliseconds(), MinIncrement: 1})
		cancel()
		if err != nil {
			return nil, exception("bench: open %s: %v", ids[i], err)
		}
		if r.Outcome != api.Outcome_SUCCESS {
			return nil, exception("bench: open %s: %s", ids[i], outcomeLine(r.Outcome, r.Reason, r.Detail, ""))
		}
	}
	return ids, nil
}

// benchRun runs the closed loop and returns the totals of the measured
// bids and the measured time. Client i places its bids with the function
// newBid(i) returns, and calls the cleanup returned with it when it ends.
// progress is called every second with the totals so far, the bids per
// second since the previous call, and the time since the start of the
// measurement (of the warmup when warm is set).
func benchRun(ctx context.Context, newBid func(i int) (bidFunc, func()), run string, ids []string, p benchParams,
	progress func(t *benchTotals, rate float64, elapsed time.Duration, warm bool)) (*benchTotals, time.Duration) {
	bidders := make([]string, p.bidders)
	for i := range bidders {
		bidders[i] = fmt.Sprintf("bidder-%d", i)
	}
	highest := make([]atomic.Int64, len(ids))
	workers := make([]*benchWorker, p.clients)
	start := time.Now()
	from := start.Add(p.warmup)
	end := from.Add(p.duration)
	seed := rand.Uint64()

	var wg sync.WaitGroup
	for i := range workers {
		w := &benchWorker{}
		workers[i] = w
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			bid, done := newBid(i)
			defer done()
			prefix := fmt.Sprintf("%s-%d-", run, i)
			for n := 0; ; n++ {
				t0 := time.Now()
				if !t0.Before(end) || ctx.Err() != nil {
					return
				}
				a := rng.IntN(len(ids))
				amount := highest[a].Add(1)
				bctx, cancel := context.WithTimeout(ctx, p.timeout)
				r, err := bid(bctx, ids[a], bidders[rng.IntN(len(bidders))], amount, prefix+strconv.Itoa(n))
				cancel()
				lat := time.Since(t0)
				if t0.Before(from) || (err != nil && ctx.Err() != nil) {
					continue // warmup, or interrupted
				}
				w.mu.Lock()
				w.hist.Record(lat)
				switch {
				case err != nil:
					w.errs++
				case r.Outcome == api.Outcome_SUCCESS:
					w.ok++
				case r.Outcome == api.Outcome_FAIL:
					w.fail++
				default:
					w.exc++
				}
				w.mu.Unlock()
			}
		})
	}

	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var tot benchTotals
	var lastOps uint64
	lastT := from
	for {
		select {
		case <-done:
			tot.collect(workers)
			stop := time.Now()
			if stop.After(end) {
				stop = end
			}
			return &tot, max(stop.Sub(from), 0)
		case now := <-tick.C:
			if now.Before(from) {
				progress(&tot, 0, now.Sub(start), true)
				continue
			}
			if now.Sub(from) < 500*time.Millisecond {
				continue // the warmup just ended: no second to report yet
			}
			tot.collect(workers)
			ops := tot.ops()
			progress(&tot, float64(ops-lastOps)/now.Sub(lastT).Seconds(), now.Sub(from), false)
			lastOps, lastT = ops, now
		}
	}
}

// startCPUProfile writes a CPU profile to path until stop is called.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// withBidderTokens wraps the bid functions of newBid so that each bid
// carries its bidder's token, signed with cfg's auth.secret once per
// bidder: nodes that run with auth.secret take no bid without one.
func withBidderTokens(newBid func(int) (bidFunc, func()), com *common, cfg *config.Config) func(int) (bidFunc, func()) {
	var mu sync.Mutex // guards tokens
	tokens := map[string]string{}
	return func(i int) (bidFunc, func()) {
		bid, done := newBid(i)
		return func(ctx context.Context, auctionID, bidder string, amount int64, requestID string) (*api.BidReply, error) {
			mu.Lock()
			tok, ok := tokens[bidder]
			if !ok {
				var err error
				if tok, err = com.tokenFor(cfg, bidder, auth.RoleBidder); err != nil {
					mu.Unlock()
					return nil, err
				}
				tokens[bidder] = tok
			}
			mu.Unlock()
			return bid(auth.WithToken(ctx, tok), auctionID, bidder, amount, requestID)
		}, done
	}
}
