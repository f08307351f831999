// Command demofailures runs a gavel cluster on loopback through a series
// of crashes and writes the story as one log and one figure.
//
// It starts 3 masters, nodes n1..n3 and gateway g1 (the binary of --bin,
// ports of its own, so it runs beside a cluster of config.yaml), opens
// auction a1, and lets two bidders, alice and bob, outbid each other
// through the gateway's WebSocket, each reacting to the gateway's outbid
// push. Then, with bids flowing between steps, it SIGKILLs the middle
// node, starts n4 (it joins at the tail), SIGKILLs the head until one
// node is left, and finally the last node, whose bidders then get
// "unavailable". After each kill it waits until the master leader has
// committed an epoch without the killed node, and checks that the
// result the new chain answers is at or above every acknowledged bid;
// before the last kill, that the last node's result is the last
// acknowledged bid.
//
// It writes every process's log, merged in time order with its own lines
// and a header that tells how to read it (--out, docs/logs/failover.log),
// and the chain over time drawn from that log (--figure,
// docs/figures/chain-over-time.svg; tools/chainplot draws the same from
// any such log). scripts/demo-failures builds bin/gavel and runs it.
//
//	go run ./tools/demofailures [--short] [--bin bin/gavel] [--out FILE] [--figure FILE] [--dir DIR] [--keep]
//
// A --dir must be new or empty.
//
// Exit status 0 when every step and check passed, 1 otherwise (the work
// directory with each process's log is then kept).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/internal/conns"
	"github.com/gavel-auction/gavel/tools/runlog"
)

// The cluster's timing: config.yaml's defaults.
const (
	heartbeat      = 50 * time.Millisecond
	failureTimeout = 500 * time.Millisecond
	lease          = 200 * time.Millisecond
)

// options are the command line.
type options struct {
	bin, out, figure, dir string
	short, keep           bool
}

// demo is one run.
type demo struct {
	opts        options
	dir         string
	cfgPath     string
	masters     []string
	nodes       []string // n1..n3 start the chain; the last one joins later
	gateway     string
	addrs       map[string]string // gRPC of masters and nodes, HTTP of the gateway
	stepFor     time.Duration     // bidding between steps
	callTimeout time.Duration     // the gateway's bound on one call: client.timeout
	log         *slog.Logger
	epoch       atomic.Uint64 // the newest epoch the demo has seen
	gate        gate
	book        book
	problems    []string // failed checks

	obs      *wsConn    // the auctioneer's connection: opens a1, watches it, checks results
	reportMu sync.Mutex // guards report
	report   lead       // the newest highest push the auctioneer got

	mu    sync.Mutex // guards procs
	procs map[string]*proc
	conns *conns.Cache // to the masters
}

func main() {
	var o options
	flag.StringVar(&o.bin, "bin", "bin/gavel", "the gavel binary that runs every process")
	flag.BoolVar(&o.short, "short", false, "the fast form, for tests: about 1.5 s of bidding per step instead of 6 s, client.timeout 2s instead of 5s")
	flag.StringVar(&o.out, "out", "docs/logs/failover.log", "the merged log to write")
	flag.StringVar(&o.figure, "figure", "docs/figures/chain-over-time.svg", "the figure to draw from the log (empty: none)")
	flag.StringVar(&o.dir, "dir", "", "work directory, new or empty: config.yaml, each process's log, the masters' data (default: a temporary one, removed unless --keep or a failure)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: demofailures [flags]\n\n"+
			"Runs 3 masters, nodes n1..n3 and gateway g1 on loopback with two bidders, SIGKILLs the middle\n"+
			"node, lets n4 join, SIGKILLs the head until one node is left, then the last one, and writes\n"+
			"the merged log and the chain-over-time figure.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "demofailures: unexpected argument %q\n", flag.Arg(0))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demofailures:", err)
		os.Exit(1)
	}
}

// say prints one line of progress on stdout.
func say(format string, args ...any) {
	fmt.Printf("demo-failures: "+format+"\n", args...)
}

func run(ctx context.Context, o options) (err error) {
	bin, err := filepath.Abs(o.bin)
	if err != nil {
		return err
	}
	if st, err := os.Stat(bin); err != nil || st.IsDir() {
		return fmt.Errorf("--bin %s: not a gavel binary (build it: go build -o bin/gavel ./cmd/gavel)", o.bin)
	}
	o.bin = bin
	dir := o.dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "gavel-demo-failures-"); err != nil {
			return err
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	} else if entries, err := os.ReadDir(dir); err != nil {
		return err
	} else if len(entries) > 0 {
		// The processes' logs are appended to and the masters would
		// restore the last run's Raft state, with its addresses.
		return fmt.Errorf("--dir %s is not empty: give a new or empty directory", o.dir)
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return err
	}
	defer func() {
		if err == nil && !o.keep && o.dir == "" {
			os.RemoveAll(dir)
		} else {
			fmt.Fprintf(os.Stderr, "demofailures: the work directory (config.yaml, each process's log) is %s\n", dir)
		}
	}()
	logFile, err := os.Create(filepath.Join(dir, "demo.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	d := &demo{opts: o, dir: dir, masters: []string{"m1", "m2", "m3"}, nodes: []string{"n1", "n2", "n3", "n4"},
		gateway: "g1", addrs: map[string]string{}, stepFor: 6 * time.Second, callTimeout: 5 * time.Second,
		log:   slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelInfo})),
		procs: map[string]*proc{}, conns: conns.New(grpc.WithTransportCredentials(insecure.NewCredentials()))}
	if o.short {
		d.stepFor, d.callTimeout = 1500*time.Millisecond, 2*time.Second
	}
	if err := d.writeConfig(); err != nil {
		return err
	}
	// A bound on the whole run, whatever happens.
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	err = d.scenario(ctx)
	if err != nil {
		d.log.Error("demo: stopped: "+err.Error(), "epoch", d.epoch.Load())
	}
	d.log.Info("demo: stop the gateway, the nodes and the masters (SIGTERM)", "epoch", d.epoch.Load())
	d.stopAll()
	d.killAll()
	d.conns.Close()
	if err == nil && len(d.problems) > 0 {
		err = fmt.Errorf("checks failed: %s", strings.Join(d.problems, "; "))
	}
	out, figure := o.out, o.figure
	if err != nil {
		// A failed run's log goes to the work directory, not over a good one.
		out, figure = filepath.Join(dir, "failover.log"), filepath.Join(dir, "chain-over-time.svg")
	}
	if werr := d.writeLog(out, err == nil); werr != nil {
		return errors.Join(err, werr)
	}
	say("log written to %s", out)
	if figure != "" {
		if ferr := drawFigure(out, figure); ferr != nil {
			return errors.Join(err, ferr)
		}
		say("figure written to %s", figure)
	}
	return err
}

// scenario runs the cluster through its crashes.
func (d *demo) scenario(ctx context.Context) error {
	for _, id := range d.masters {
		if err := d.start("master", id); err != nil {
			return err
		}
	}
	if err := d.waitLeader(ctx, 15*time.Second); err != nil {
		return err
	}
	for i, id := range d.nodes[:len(d.nodes)-1] {
		if err := d.start("node", id); err != nil {
			return err
		}
		want := d.nodes[:i+1]
		if _, err := d.waitConfig(ctx, fmt.Sprintf("chain %v", want), 15*time.Second, func(c *api.ChainConfig) bool {
			return slices.Equal(chainIDs(c), want) && len(c.GetJoining()) == 0
		}); err != nil {
			return err
		}
	}
	if err := d.start("gateway", d.gateway); err != nil {
		return err
	}
	if err := d.waitHealthy(ctx, d.gateway, 15*time.Second); err != nil {
		return err
	}
	cfg, _, err := d.leaderConfig(ctx)
	if err != nil {
		return err
	}
	say("cluster up: %s, gateway %s at ws://%s/ws", describe(cfg), d.gateway, d.addrs[d.gateway])

	// The auctioneer opens a1 and watches it; the bidders start.
	if d.obs, err = dial(ctx, d.addrs[d.gateway], "auctioneer", d.observe); err != nil {
		return err
	}
	defer d.obs.close()
	m, err := d.obs.call(ctx, map[string]any{"op": "open", "auction": auctionID, "duration": "1h", "item": "a brass lamp"})
	if err != nil || m.Outcome != "success" {
		return fmt.Errorf("open %s: %v %s %s", auctionID, err, m.Reason, m.Detail)
	}
	d.log.Info("demo: auctioneer opened "+auctionID+" (1h): alice and bob bid on it through "+d.gateway,
		"auction", auctionID, "epoch", d.epoch.Load())
	if m, err := d.obs.call(ctx, map[string]any{"op": "watch", "auction": auctionID}); err != nil || m.Type != "watching" {
		return fmt.Errorf("watch %s: %v", auctionID, err)
	}
	bctx, stopBidders := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var bidders []*bidder
	defer func() {
		stopBidders()
		wg.Wait()
		for _, b := range bidders {
			b.ws.close()
		}
	}()
	for _, name := range []string{"alice", "bob"} {
		b, err := newBidder(ctx, d, name)
		if err != nil {
			return err
		}
		bidders = append(bidders, b)
		wg.Add(1)
		go func() { defer wg.Done(); b.run(bctx) }()
	}
	if err := d.bidFor(ctx); err != nil {
		return err
	}

	// The middle node.
	if cfg, _, err = d.leaderConfig(ctx); err != nil {
		return err
	}
	if ids := chainIDs(cfg); len(ids) == 3 {
		if err := d.killAndSplice(ctx, ids[1], "middle"); err != nil {
			return err
		}
	} else {
		return fmt.Errorf("want a chain of 3 before killing its middle, have %s", describe(cfg))
	}
	if err := d.bidFor(ctx); err != nil {
		return err
	}

	// A new node joins at the tail.
	if err := d.join(ctx, d.nodes[len(d.nodes)-1]); err != nil {
		return err
	}
	if err := d.bidFor(ctx); err != nil {
		return err
	}

	// The head, until one node is left.
	for {
		if cfg, _, err = d.leaderConfig(ctx); err != nil {
			return err
		}
		ids := chainIDs(cfg)
		if len(ids) <= 1 {
			break
		}
		if err := d.killAndSplice(ctx, ids[0], "head"); err != nil {
			return err
		}
		if err := d.bidFor(ctx); err != nil {
			return err
		}
	}
	return d.lastKill(ctx, cfg)
}

// waitLeader waits until a master says it leads.
func (d *demo) waitLeader(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if _, _, err := d.leaderConfig(ctx); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no master leader after %v", timeout)
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

// bidFor lets the bidders bid for one step's time.
func (d *demo) bidFor(ctx context.Context) error {
	before := d.book.counts()
	if err := sleep(ctx, d.stepFor); err != nil {
		return err
	}
	after := d.book.counts()
	best, _ := d.book.highest()
	say("  %d bids answered in %v; highest acknowledged %d by %s", sum(after)-sum(before), d.stepFor, best.amount, best.bidder)
	return nil
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

// observe takes the auctioneer's pushes: the newest highest bid the
// tail reported.
func (d *demo) observe(m msg) {
	if m.Type != "highest" || m.Auction != auctionID {
		return
	}
	d.reportMu.Lock()
	if m.Seq > d.report.seq {
		d.report = lead{amount: m.Amount, bidder: m.Bidder, seq: m.Seq, at: time.Now()}
	}
	d.reportMu.Unlock()
}

// killAndSplice SIGKILLs a chain member and waits until the master leader
// has committed an epoch without it; then checks the new chain's result.
func (d *demo) killAndSplice(ctx context.Context, id, role string) error {
	before, _, err := d.leaderConfig(ctx)
	if err != nil {
		return err
	}
	d.log.Warn(fmt.Sprintf("demo: SIGKILL %s (%s)", id, role), "node", id, "role", role, "epoch", before.Epoch,
		"config", describe(before))
	t0 := time.Now()
	if err := d.kill(id); err != nil {
		return err
	}
	cfg, err := d.waitConfig(ctx, "an epoch without "+id, 15*time.Second, func(c *api.ChainConfig) bool {
		return c.GetEpoch() > before.GetEpoch() && !names(c, id)
	})
	if err != nil {
		return err
	}
	took := time.Since(t0).Seconds()
	d.log.Info(fmt.Sprintf("demo: %s committed without %s, %.3f s after its kill", describe(cfg), id, took),
		"node", id, "epoch", cfg.Epoch, "config", describe(cfg))
	say("SIGKILL %s (%s) in %s: %s committed %.3f s later", id, role, describe(before), describe(cfg), took)
	return d.checkAfter(ctx, cfg)
}

// join starts a node and waits until the master leader has appended it
// as the tail; then checks the new chain's result.
func (d *demo) join(ctx context.Context, id string) error {
	t0 := time.Now()
	if err := d.start("node", id); err != nil {
		return err
	}
	cfg, err := d.waitConfig(ctx, id+" appended at the tail", 15*time.Second, func(c *api.ChainConfig) bool {
		ids := chainIDs(c)
		return len(ids) > 0 && ids[len(ids)-1] == id && !slices.Contains(joiningIDs(c), id)
	})
	if err != nil {
		return err
	}
	took := time.Since(t0).Seconds()
	d.log.Info(fmt.Sprintf("demo: %s: %s is the tail, %.3f s after its start", describe(cfg), id, took),
		"node", id, "epoch", cfg.Epoch, "config", describe(cfg))
	say("start %s: joined and appended as the tail in %s, %.3f s later", id, describe(cfg), took)
	return d.checkAfter(ctx, cfg)
}

// checkAfter reads a1's result from the chain of a new epoch (through the
// gateway: the tail answers) and checks that it is at or above every bid
// acknowledged before the read was sent.
func (d *demo) checkAfter(ctx context.Context, cfg *api.ChainConfig) error {
	best, _ := d.book.highest()
	m, err := d.result(ctx)
	if err != nil {
		return fmt.Errorf("result after %s: %w", describe(cfg), err)
	}
	ok := m.Highest >= best.amount
	verdict := "at or above every acknowledged bid: none lost"
	level := slog.LevelInfo
	if !ok {
		verdict = "BELOW an acknowledged bid: an acknowledged bid was lost"
		level = slog.LevelError
		d.problems = append(d.problems, fmt.Sprintf("after %s the result %d is below the acknowledged %d", describe(cfg), m.Highest, best.amount))
	}
	d.log.Log(ctx, level, fmt.Sprintf("demo: check after e%d: result %d by %s, %s (highest acknowledged: %d by %s)",
		cfg.Epoch, m.Highest, m.Bidder, verdict, best.amount, best.bidder),
		"epoch", cfg.Epoch, "highest", m.Highest, "leader", m.Bidder, "version", m.Version, "acknowledged", best.amount, "ok", ok)
	return nil
}

// result reads a1's result through the auctioneer's connection, bounded
// by a little more than the gateway's own bound on the call.
func (d *demo) result(ctx context.Context) (msg, error) {
	ctx, cancel := context.WithTimeout(ctx, d.callTimeout+5*time.Second)
	defer cancel()
	return d.obs.result(ctx, auctionID)
}

// pushedAtLeast returns the auctioneer's newest highest push once it is
// at or above amount, or, after within, whatever it is then. The push
// comes from the gateway's watch of the tail, not in order with any
// reply: it may still be on its way when the bid's answer is in.
func (d *demo) pushedAtLeast(ctx context.Context, amount int64, within time.Duration) (lead, error) {
	deadline := time.Now().Add(within)
	for {
		d.reportMu.Lock()
		pushed := d.report
		d.reportMu.Unlock()
		if pushed.amount >= amount || time.Now().After(deadline) {
			return pushed, nil
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return pushed, err
		}
	}
}

// lastKill pauses the bidders, reads the last node's result and checks it
// against the last acknowledged bid, SIGKILLs the node, lets the bidders
// bid again and waits until one of them is answered "unavailable".
func (d *demo) lastKill(ctx context.Context, cfg *api.ChainConfig) error {
	ids := chainIDs(cfg)
	if len(ids) != 1 {
		return fmt.Errorf("want one node left before the last kill, have %s", describe(cfg))
	}
	id := ids[0]
	if err := d.gate.pause(ctx); err != nil {
		return err
	}
	d.log.Info("demo: bidders paused: every bid has its answer", "epoch", cfg.Epoch)
	best, _ := d.book.highest()
	m, err := d.result(ctx)
	if err != nil {
		return fmt.Errorf("result before the last kill: %w", err)
	}
	pushed, err := d.pushedAtLeast(ctx, best.amount, 2*time.Second)
	if err != nil {
		return err
	}
	ok := m.Highest == best.amount && m.Bidder == best.bidder && pushed.amount == best.amount
	verdict := "the last acknowledged bid: none lost"
	level := slog.LevelInfo
	if !ok {
		verdict = "NOT the last acknowledged bid"
		level = slog.LevelError
		d.problems = append(d.problems, fmt.Sprintf("before the last kill %s reports %d by %s (pushed %d), the last acknowledged bid is %d by %s",
			id, m.Highest, m.Bidder, pushed.amount, best.amount, best.bidder))
	}
	d.log.Log(ctx, level, fmt.Sprintf("demo: check before the last kill: %s reports highest %d by %s (version %d; its last push: %d), %s (%d by %s, version %d)",
		id, m.Highest, m.Bidder, m.Version, pushed.amount, verdict, best.amount, best.bidder, best.version),
		"node", id, "epoch", cfg.Epoch, "highest", m.Highest, "leader", m.Bidder, "version", m.Version, "pushed", pushed.amount,
		"acknowledged", best.amount, "ok", ok)

	d.log.Warn(fmt.Sprintf("demo: SIGKILL %s (last)", id), "node", id, "role", "last", "epoch", cfg.Epoch, "config", describe(cfg))
	t0 := time.Now()
	if err := d.kill(id); err != nil {
		return err
	}
	d.gate.resume()
	say("SIGKILL %s (last) in %s: the master keeps it (it removes no last member); waiting for \"unavailable\"", id, describe(cfg))

	// The auctioneer reads too; the bidders go on bidding.
	start := time.Now()
	rm, rerr := d.result(ctx)
	switch {
	case errors.Is(rerr, errUnavailable):
		d.log.Warn(fmt.Sprintf("demo: auctioneer result %s: unavailable", auctionID), "bidder", "auctioneer", "reason", "unavailable",
			"ms", time.Since(start).Milliseconds(), "epoch", d.epoch.Load(), "detail", rm.Error)
	case rerr != nil:
		return rerr
	default:
		d.problems = append(d.problems, fmt.Sprintf("after the last kill a result was answered: %d by %s", rm.Highest, rm.Bidder))
	}
	deadline := time.Now().Add(2*d.callTimeout + 5*time.Second)
	for !d.book.unavailableSince(t0) {
		if time.Now().After(deadline) {
			return fmt.Errorf("no bid answered unavailable within %v of the last kill", time.Since(t0).Round(time.Second))
		}
		if err := sleep(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
	say("bids answered \"unavailable\" %.3f s after the last kill", time.Since(t0).Seconds())

	if err := d.book.ordered(); err != nil {
		d.problems = append(d.problems, err.Error())
		d.log.Error("demo: check: "+err.Error(), "epoch", d.epoch.Load(), "ok", false)
	}
	c := d.book.counts()
	best, _ = d.book.highest()
	d.log.Info(fmt.Sprintf("demo: check: %d bids answered (%d success, %d fail, %d exception); acknowledged bids rise with their versions; the highest is %d by %s",
		sum(c), c["success"], c["fail"], c["exception"], best.amount, best.bidder),
		"epoch", d.epoch.Load(), "bids", sum(c), "success", c["success"], "fail", c["fail"], "exception", c["exception"],
		"acknowledged", best.amount, "ok", len(d.problems) == 0)
	return nil
}

// writeLog merges the processes' logs and the demo's into path, with the
// header.
func (d *demo) writeLog(path string, complete bool) error {
	sources := append(append([]string{"demo"}, d.masters...), d.nodes...)
	sources = append(sources, d.gateway)
	var all [][]runlog.Line
	for _, id := range sources {
		f, err := os.Open(filepath.Join(d.dir, id+".log"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		lines, err := runlog.ReadSource(id, f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s.log: %w", id, err)
		}
		all = append(all, lines)
	}
	lines := runlog.Merge(all...)
	// Read the body back to tell its story in the header.
	var body bytes.Buffer
	if err := runlog.Write(&body, nil, lines); err != nil {
		return err
	}
	recs, err := runlog.Read(bytes.NewReader(body.Bytes()))
	if err != nil {
		return err
	}
	story, err := runlog.StoryOf(recs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := runlog.Write(f, d.header(story, recs, complete), nil); err != nil {
		f.Close()
		return err
	}
	if _, err := io.Copy(f, &body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// header explains the log: what ran, how to read a line, the tags, and
// the run's timeline.
func (d *demo) header(story runlog.Story, recs []runlog.Record, complete bool) []string {
	form := "full form: 6 s of bidding between steps"
	if d.opts.short {
		form = "short form (--short): 1.5 s of bidding between steps"
	}
	h := []string{
		"gavel failure run: every process's log and the demo's own lines, merged in time order.",
		"Written by scripts/demo-failures (tools/demofailures); tools/chainplot draws docs/figures/chain-over-time.svg from it.",
		fmt.Sprintf("Run of %s, %s.", time.Now().UTC().Format("2006-01-02 15:04 MST"), form),
	}
	if !complete {
		h = append(h, "THIS RUN FAILED: see the demo's last lines.")
	}
	h = append(h, "",
		"What runs, on loopback ports of its own:",
		"  m1 m2 m3  masters: a Raft group holding the chain configuration; the leader takes heartbeats,",
		"            removes a silent node and appends a caught-up joiner, each by committing a new epoch",
		"  n1 .. n4  chain nodes: bids enter at the head and are acknowledged once the tail has them;",
		"            n1 n2 n3 start the chain, n4 joins it later",
		"  g1        the WebSocket gateway the bidders use",
		"  demo      this run: starts and SIGKILLs the processes; the auctioneer opens auction a1 and",
		"            checks results; alice and bob outbid each other on a1 through g1, each reacting",
		"            to the gateway's outbid push after a 40-120 ms pause",
		fmt.Sprintf("Timing: master.heartbeat %v, master.failure_timeout %v, master.lease %v, client.timeout %v",
			heartbeat, failureTimeout, lease, d.callTimeout),
		"(how long the gateway keeps retrying a call before it answers unavailable).",
		"",
		"Each line: SOURCE  +SECONDS  TAG | the process's own log/slog line",
		"  SOURCE    the process that wrote it; +SECONDS counts from the first line",
		"  TAG       marks the lines of the story (blank on the others); in this run:",
	)
	counts := map[string]int{}
	for _, r := range recs {
		counts[r.Tag]++
	}
	for _, t := range runlog.Legend {
		h = append(h, fmt.Sprintf("    %-8s  %3d  %s", t.Tag, counts[t.Tag], t.Meaning))
	}
	h = append(h,
		"  Bid lines: demo: BIDDER bid AMOUNT: OUTCOME, with version (the chain sequence number of the bid),",
		"  ms (the bidder's wait for the answer: long ones wait out a reconfiguration) and epoch (the newest",
		"  the demo had seen). Info level and above only; the masters that do not lead log the epochs at",
		"  debug level, so each change appears once, from the leader.",
		"",
		"Timeline (+seconds; configurations as the master logs them: eEPOCH [head .. tail] +[joining]):",
	)
	for _, l := range story.Timeline() {
		h = append(h, "  "+l)
	}
	c := d.book.counts()
	best, _ := d.book.highest()
	h = append(h, "",
		fmt.Sprintf("Bids: %d answered: %d success, %d fail (too low: the other bid first), %d exception (unavailable).",
			sum(c), c["success"], c["fail"], c["exception"]),
		fmt.Sprintf("Highest acknowledged: %d by %s (version %d); every check passed: %v.", best.amount, best.bidder, best.version,
			complete && len(d.problems) == 0),
		"")
	return h
}

// drawFigure draws the chain over time from the log at path.
func drawFigure(logPath, figure string) error {
	f, err := os.Open(logPath)
	if err != nil {
		return err
	}
	recs, err := runlog.Read(f)
	f.Close()
	if err != nil {
		return err
	}
	story, err := runlog.StoryOf(recs)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(figure), 0o755); err != nil {
		return err
	}
	return os.WriteFile(figure, runlog.SVG(story, runlog.DefaultTitle), 0o644)
}
