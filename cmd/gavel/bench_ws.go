package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/config"

	"github.com/gavel-auction/gavel/pki"
	"github.com/gavel-auction/gavel/wsbench"
)

// benchTokenTTL is how long the tokens bench mints for a gateway in auth
// mode stay valid.
const benchTokenTTL = 24 * time.Hour

// benchWatcherName prefixes the bidder a watcher's token names (auth
// mode): wsbench-watcher-1, -2, ..., one per connection, since a gateway
// takes only gateway.max_connections_per_bidder connections of one
// bidder. Watchers place no bid.
const benchWatcherName = "wsbench-watcher"

func cmdBenchWS(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "bench ws", "--watchers N --bidders B --rate R --duration D [flags]", `
Measures a gateway under many WebSocket connections (package wsbench).
Opens --auctions fresh auctions (wsbench-<run>-<i>) on the chain, reads
the gateway's memory from its /metrics, connects --watchers watchers
round robin over the auctions (each sends "watch AUCTION" and waits for
"watching"; --dial-concurrency at a time), lets them idle for --idle and
reads the memory again. Then --bidders bidders send --rate bids per second
in all for --duration, open loop: paced by a ticker, never waiting for
replies (a bidder with 256 bids unanswered skips the next ones), each bid
one above the last amount sent to its auction, through the gateway, each
bidder on a WebSocket of its own (--via ws), or straight at the chain
head (--via grpc). Every watcher should get the highest push of every
successful bid on its auction (seq = the bid's version).

Reports connections made and failed; bids sent, skipped, their outcomes
and unanswered ones (no reply --timeout after the last); pushes expected
(successful bids x watchers of their auction) and received; missed (a
watcher got neither a bid's push nor any later one of its auction) and
duplicated (a seq not above the watcher's previous), both zero in a
healthy run; conflated (a later push replaced it, as the gateway may do
for a slow watcher); the delivery latency (push arrival minus the arrival
of the bid's reply; pushes that beat the reply count 0) and from the
bid's sending; and the gateway's memory per idle watcher, (after -
before) / watchers, of RSS, Go heap and goroutine stacks. A progress line
goes to stderr every second (not with --json). Exit 2 if the run was not
healthy: a connection failed or was lost, a push missed or duplicated,
no bid succeeded.

For tens of thousands of watchers the bench raises its limit of open
files (as root also the hard limit) and, on Linux with the gateway on
loopback, connects from 127.0.0.2-127.0.0.17; the gateway needs a limit
as high (ulimit -n before scripts/launch up). --timeout bounds each
dial, watch and bid, and the wait for the last replies and pushes.`)
	var c wsbench.Config
	f.IntVar(&c.Watchers, "watchers", 1000, "watcher connections")
	f.IntVar(&c.Bidders, "bidders", 8, "bidders sharing the bids (with --via ws, a connection each)")
	f.Float64Var(&c.Rate, "rate", 100, "bids per second, in all")
	f.DurationVar(&c.Duration, "duration", 10*time.Second, "how long bids are sent")
	f.IntVar(&c.Auctions, "auctions", wsbench.DefaultAuctions, "auctions the watchers and the bids are spread over")
	gw := f.String("gateway", "", "the gateway: an id of the config or host:port (default: the config's first)")
	f.StringVar(&c.Via, "via", "ws", "ws: bids through the gateway; grpc: straight at the chain")
	f.DurationVar(&c.Idle, "idle", 2*time.Second, "how long the watchers idle before the gateway's memory is read")
	f.IntVar(&c.DialConcurrency, "dial-concurrency", wsbench.DefaultDialConcurrency, "connections being opened at once")
	com, err := parseCommonNoArgs(f, args)
	if err != nil {
		return err
	}
	switch {
	case c.Watchers <= 0:
		return f.usageErr("--watchers must be positive")
	case c.Bidders <= 0:
		return f.usageErr("--bidders must be positive")
	case !(c.Rate > 0) || c.Rate > 1e6:
		return f.usageErr("--rate must be positive (and at most 1e6), got %v", c.Rate)
	case c.Duration <= 0:
		return f.usageErr("--duration must be positive")
	case c.Auctions <= 0:
		return f.usageErr("--auctions must be positive")
	case c.Via != "ws" && c.Via != "grpc":
		return f.usageErr("--via must be ws or grpc, got %q", c.Via)
	case c.Idle < 0:
		return f.usageErr("--idle must not be negative")
	case c.DialConcurrency <= 0:
		return f.usageErr("--dial-concurrency must be positive")
	}
	cl, cfg, err := com.asAdmin().client()
	if err != nil {
		return err
	}
	defer cl.Close()
	if c.Target, err = gatewayTarget(f, cfg, *gw); err != nil {
		return err
	}
	c.Chain = authChain{Chain: wsbench.ClientChain(cl), com: com, cfg: cfg}
	c.Timeout = com.timeout
	c.Run = client.NewRequestID()[:8]
	c.Warn = func(line string) { fmt.Fprintf(e.stderr, "bench ws: warning: %s\n", line) }
	if !com.json {
		c.Progress = func(line string) { fmt.Fprintf(e.stderr, "bench ws: %s\n", line) }
		scheme := "ws"
		if c.Target.TLS != nil {
			scheme = "wss"
		}
		fmt.Fprintf(e.stderr, "bench ws: %d watchers on %d auctions (wsbench-%s-*) at %s://%s, %d bidders via %s, %g bids/s for %v\n",
			c.Watchers, c.Auctions, c.Run, scheme, c.Target.Addr, c.Bidders, c.Via, c.Rate, c.Duration)
	}
	rep, err := wsbench.Run(ctx, c)
	if err != nil {
		return exception("bench ws: %v", err)
	}
	if com.json {
		e.printJSON(rep)
	} else {
		printWSReport(e, rep)
	}
	if why := rep.Healthy(); why != "" {
		return exception("bench ws: %s", why)
	}
	return nil
}

// subcommand reports whether args name subcommand name first, after the
// common flags that `gavel --config F bench ws` puts before it (see
// hoistGlobalFlags), and returns args without it.
func subcommand(args []string, name string) ([]string, bool) {
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" {
		if !strings.Contains(args[i], "=") && args[i] != "--json" {
			i++ // the flag's value
		}
		i++
	}
	if i >= len(args) || args[i] != name {
		return args, false
	}
	return append(append([]string{}, args[:i]...), args[i+1:]...), true
}

// printWSReport prints a bench ws report for people.
func printWSReport(e *env, r *wsbench.Report) {
	w := e.stdout
	fmt.Fprintf(w, "connections:  %d made, %d failed (watchers connected in %.2fs), %d watchers lost\n",
		r.ConnectionsMade, r.ConnectionsFailed, r.ConnectSeconds, r.WatchersLost)
	if r.MemoryError != "" {
		fmt.Fprintf(w, "gateway memory: unknown (%s)\n", r.MemoryError)
	} else {
		fmt.Fprintf(w, "gateway memory per idle watcher: RSS %s, heap %s, stacks %s, %.2f goroutines\n",
			kib(r.RSSPerWatcher), kib(r.HeapPerWatcher), kib(r.StackPerWatcher), r.GoroutinesPerWatcher)
		fmt.Fprintf(w, "gateway memory before -> after: RSS %s -> %s, heap %s -> %s, stacks %s -> %s\n",
			mib(r.GatewayRSSBefore), mib(r.GatewayRSSAfter), mib(r.GatewayHeapBefore), mib(r.GatewayHeapAfter),
			mib(r.GatewayStackBefore), mib(r.GatewayStackAfter))
	}
	fmt.Fprintf(w, "bench memory per watcher: %s (Go heap and stacks)\n", kib(r.BenchPerWatcher))
	fmt.Fprintf(w, "bids:         %d sent in %.2fs (%.1f/s, %d skipped) via %s: success %d, fail %d, exception %d, error %d, unanswered %d\n",
		r.BidsSent, r.Seconds, r.BidsPerS, r.BidsSkipped, r.Via, r.BidsOK, r.BidsFail, r.BidsException, r.BidsErrors, r.BidsUnanswered)
	fmt.Fprintf(w, "bid replies:  %.1f/s; ms p50 %.3f  p99 %.3f  max %.3f (bid sent -> reply)\n",
		r.AnsweredPerS, r.BidP50Ms, r.BidP99Ms, r.BidMaxMs)
	fmt.Fprintf(w, "pushes:       expected %d, received %d (conflated %d, unmatched %d, before the reply %d)\n",
		r.PushesExpected, r.PushesReceived, r.PushesConflated, r.PushesUnmatched, r.PushesEarly)
	fmt.Fprintf(w, "missed:       %d, duplicated %d (waited %.2fs after the last bid; %d watchers still behind)\n",
		r.Missed, r.Duplicated, r.DrainSeconds, r.WatchersBehind)
	fmt.Fprintf(w, "delivery ms:  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f  (push arrival - bid reply)\n",
		r.LatencyP50Ms, r.LatencyP90Ms, r.LatencyP99Ms, r.LatencyMaxMs)
	fmt.Fprintf(w, "bid->push ms: p50 %.3f  p99 %.3f  max %.3f  (push arrival - bid sent)\n",
		r.FromSendP50Ms, r.FromSendP99Ms, r.FromSendMaxMs)
}

// kib formats a byte count in KiB.
func kib(b float64) string { return fmt.Sprintf("%.1f KiB", b/1024) }

// mib formats a byte count in MiB.
func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// gatewayTarget returns the gateway bench measures: flag (an id of cfg or
// host:port), or cfg's first gateway; over wss with the cluster's CA and
// the client certificate when tls.ca is set, and with tokens signed with
// auth.secret when it is set.
func gatewayTarget(f *flags, cfg *config.Config, flag string) (wsbench.Target, error) {
	var t wsbench.Target
	switch {
	case flag == "" && len(cfg.Gateways) == 0:
		return t, &exitError{code: exitUsage, msg: fmt.Sprintf("%s lists no gateways (key gateways): give --gateway HOST:PORT", cfg.File)}
	case flag == "":
		t.Addr = cfg.Gateways[0].Addr
	default:
		if g, ok := cfg.GatewayByID(flag); ok {
			t.Addr = g.Addr
		} else if _, _, err := net.SplitHostPort(flag); err == nil {
			t.Addr = flag
		} else {
			return t, f.usageErr("--gateway %q: neither a gateway id of %s nor host:port", flag, cfg.File)
		}
	}
	ident, err := processTLS(cfg, pki.RoleClient, clientID)
	if err != nil {
		return t, err
	}
	if ident != nil {
		t.TLS = ident.ClientConfig()
	}
	if secret := cfg.Auth.Secret; secret != "" {
		var watchers atomic.Int64
		t.Token = func(bidder string) (string, error) {
			if bidder == "" {
				bidder = fmt.Sprintf("%s-%d", benchWatcherName, watchers.Add(1))
			}
			return auth.NewToken([]byte(secret), bidder, auth.RoleBidder, benchTokenTTL, time.Now())
		}
	}
	return t, nil
}

// benchDialWS connects bench --via ws's clients to the gateway: client i
// as bidder-<i mod bidders>.
func benchDialWS(ctx context.Context, t wsbench.Target, p benchParams) ([]*wsbench.Bidder, error) {
	if _, err := wsbench.RaiseFileLimit(uint64(p.clients) + 256); err != nil {
		return nil, exception("bench: raise the limit of open files: %v", err)
	}
	bidders := make([]*wsbench.Bidder, 0, p.clients)
	for i := range p.clients {
		b, err := wsbench.DialBidder(ctx, t, fmt.Sprintf("bidder-%d", i%p.bidders), p.timeout)
		if err != nil {
			for _, b := range bidders {
				b.Close()
			}
			return nil, exception("bench: client %d: %v", i, err)
		}
		bidders = append(bidders, b)
	}
	return bidders, nil
}

// wsBidFunc places a closed-loop client's bids through its gateway
// connection. The connection's bidder bids, whatever bidder the loop
// names; an exception "unavailable" (the gateway could not reach the
// chain) is an error, as the chain's client reports it.
func wsBidFunc(b *wsbench.Bidder) bidFunc {
	return func(ctx context.Context, auction, _ string, amount int64, _ string) (*api.BidReply, error) {
		r, err := b.Bid(ctx, auction, amount)
		if err != nil {
			return nil, err
		}
		rep := &api.BidReply{Outcome: api.Outcome_EXCEPTION, Version: r.Version}
		switch {
		case r.Outcome == "success":
			rep.Outcome = api.Outcome_SUCCESS
		case r.Outcome == "fail":
			rep.Outcome = api.Outcome_FAIL
		case r.Reason == "unavailable":
			return nil, errors.New("gateway: unavailable")
		}
		return rep, nil
	}
}

// authChain is a wsbench.Chain whose calls carry the tokens that nodes with
// auth.secret want: an admin token for an open, the bidder's for a bid
// (see common.authorize; none in open mode).
type authChain struct {
	wsbench.Chain
	com *common
	cfg *config.Config
}

// Open implements wsbench.Chain.
func (a authChain) Open(ctx context.Context, auction string, d time.Duration) error {
	ctx, err := a.com.authorize(ctx, a.cfg, adminID, auth.RoleAdmin)
	if err != nil {
		return err
	}
	return a.Chain.Open(ctx, auction, d)
}

// Bid implements wsbench.Chain.
func (a authChain) Bid(ctx context.Context, auction, bidder string, amount int64) (wsbench.BidResult, error) {
	ctx, err := a.com.authorize(ctx, a.cfg, bidder, auth.RoleBidder)
	if err != nil {
		return wsbench.BidResult{}, err
	}
	return a.Chain.Bid(ctx, auction, bidder, amount)
}
