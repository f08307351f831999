package chain

// Interaction tests: scripted scenarios on the simulated cluster, in the
// style of etcd-io/raft's interaction tests. Each file in
// testdata/scenarios is one script, run as one subtest of TestInteraction
// on its own cluster (so CheckInvariants, which newCluster registers, ends
// every script). A script is a sequence of blocks:
//
//	# comments and blank lines between blocks
//	command arg arg key=value
//	optional input lines
//	----
//	expected output, up to a blank line (or the end of the file)
//
// Every command prints, besides its own output, the outcomes of client
// operations delivered while it ran and, while `log on`, the harness's
// and the replicas' log lines, in the order they happened. Runs are
// deterministic (seed 1, or the cluster's seed=), so the expected output is
// exact; `go test ./chain -run TestInteraction -rewrite` regenerates it.
//
// The commands are the table scriptCommands below; each is a thin wrapper
// over the harness.

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/checker"
)

var flagRewrite = flag.Bool("rewrite", false, "TestInteraction: rewrite the expected output in testdata/scenarios")

// scriptCommand is one entry of the command table.
type scriptCommand struct {
	usage      string // the arguments, for error messages
	minN, maxN int    // how many arguments it takes
	run        func(s *script, args []string) error
}

// scriptCommands is every command a script can use. An error is a mistake
// in the script (the test stops); what the system did, failures included,
// is printed.
var scriptCommands = map[string]scriptCommand{
	// cluster: the script's cluster, without random faults, bootstrapped;
	// master=policy runs the master's own policy, with leases
	// (simOptions.Policy), instead of the scripted master.
	"cluster": {"nodes=N [seed=S] [master=policy]", 1, 3, cmdCluster},
	// open: client "admin" opens an auction (an hour long unless dur=) and
	// waits for the outcome.
	"open": {"AUCTION [dur=DURATION]", 1, 2, func(s *script, a []string) error {
		kv, err := keyValues(a[1:], "dur")
		if err != nil {
			return err
		}
		durMs := hourMs
		if d, ok := kv["dur"]; ok {
			us, err := parseSimDuration(d)
			if err != nil {
				return err
			}
			durMs = us / ms
		}
		cl, err := s.idleClient("admin")
		if err != nil {
			return err
		}
		return s.awaitOp(cl.open(a[0], durMs, 1, 1, 0, s.report))
	}},
	// bid: the named client bids; its outcome prints when it arrives.
	"bid": {"CLIENT AUCTION AMOUNT", 3, 3, func(s *script, a []string) error {
		amount, err := strconv.ParseInt(a[2], 10, 64)
		if err != nil {
			return err
		}
		cl, err := s.idleClient(a[0])
		if err != nil {
			return err
		}
		cl.bid(a[1], amount, s.report)
		return nil
	}},
	// read: client "reader" reads at the tail and waits for the answer.
	"read": {"AUCTION", 1, 1, func(s *script, a []string) error {
		cl, err := s.idleClient("reader")
		if err != nil {
			return err
		}
		return s.awaitOp(cl.read(a[0], s.report))
	}},
	// await: run until every client operation has its outcome.
	"await": {"", 0, 0, func(s *script, _ []string) error {
		s.runUntil("every client operation answered", func() bool {
			return !slices.ContainsFunc(s.c.clients, func(cl *simClient) bool { return cl.op != nil })
		})
		return nil
	}},
	// deliver: run until no counted event (message, request, reply,
	// configuration push, timer) is pending; ticks do not count.
	"deliver": {"", 0, 0, func(s *script, _ []string) error {
		s.runUntil("no counted event pending", func() bool { return s.c.pending == 0 })
		return nil
	}},
	// tick: run N ticks (N × tickEvery) of simulated time; run: a duration.
	"tick": {"N", 1, 1, func(s *script, a []string) error {
		n, err := strconv.Atoi(a[0])
		if err != nil {
			return err
		}
		s.c.runFor(int64(n) * tickEvery)
		return nil
	}},
	"run": {"DURATION", 1, 1, func(s *script, a []string) error {
		d, err := parseSimDuration(a[0])
		if err != nil {
			return err
		}
		s.c.runFor(d)
		return nil
	}},
	"crash": {"NODE", 1, 1, func(s *script, a []string) error {
		return s.withNodes(a, func(ids []string) { s.c.crash(ids[0]) })
	}},
	// join: a new node joins (printed); the master appends it on promote.
	"join": {"", 0, 0, func(s *script, _ []string) error {
		// The master appends a joiner only on `promote`.
		s.c.master.noPromote = true
		s.printf("%s", s.c.join())
		return nil
	}},
	"promote": {"NODE", 1, 1, func(s *script, a []string) error {
		return s.withNodes(a, func(ids []string) { s.c.promote(ids[0]) })
	}},
	// hold, release: queue the chain messages on a link; send them on.
	"hold": {"FROM TO", 2, 2, func(s *script, a []string) error {
		return s.withNodes(a, func(ids []string) { s.c.hold(ids[0], ids[1]) })
	}},
	"release": {"FROM TO", 2, 2, func(s *script, a []string) error {
		return s.withNodes(a, func(ids []string) { s.c.release(ids[0], ids[1]) })
	}},
	// partition: cut two nodes, or a node and the master, apart for a
	// duration.
	"partition": {"NODE NODE|master DURATION", 3, 3, func(s *script, a []string) error {
		d, err := parseSimDuration(a[2])
		if err != nil {
			return err
		}
		ids := a[:2]
		if ids[1] == masterID {
			if !s.c.opts.Policy {
				return fmt.Errorf("partition from the master needs cluster master=policy")
			}
			ids = ids[:1]
		}
		return s.withNodes(ids, func([]string) { s.c.partition(a[0], a[1], d) })
	}},
	// pause: the node runs nothing for a duration (a stop-the-world pause).
	"pause": {"NODE DURATION", 2, 2, func(s *script, a []string) error {
		d, err := parseSimDuration(a[1])
		if err != nil {
			return err
		}
		return s.withNodes(a[:1], func(ids []string) { s.c.pause(ids[0], d) })
	}},
	// restart: a crashed node's process starts again with its disk
	// (master=policy: it asks to join and catches up).
	"restart": {"NODE", 1, 1, func(s *script, a []string) error {
		if !s.c.opts.Policy {
			return fmt.Errorf("restart needs cluster master=policy")
		}
		return s.withNodes(a, func(ids []string) { s.c.restart(ids[0]) })
	}},
	// readat: a read that reaches the node now, answered at once: what a
	// client with an old view of the chain gets there.
	"readat": {"NODE AUCTION", 2, 2, func(s *script, a []string) error {
		return s.withNodes(a[:1], func(ids []string) {
			n := s.c.node(ids[0])
			switch info, err := n.r.Read(a[1], s.c.clockOf(n)); {
			case n.crashed || s.c.now < n.pausedUntil:
				s.printf("%s read %s: no answer (crashed or paused)", n.id, a[1])
			case err != nil:
				s.printf("%s read %s: refused: %v", n.id, a[1], err)
			default:
				s.printf("%s read %s: highest=%d bidder=%q version=%d", n.id, a[1], info.Highest, info.Bidder, info.Version)
			}
		})
	}},
	// failmaster: the master leader fails; another takes office after the
	// election delay.
	"failmaster": {"", 0, 0, func(s *script, _ []string) error {
		if !s.c.opts.Policy {
			return fmt.Errorf("failmaster needs cluster master=policy")
		}
		s.c.failMaster()
		return nil
	}},
	// status: every node's role, epoch, applied, committed and readable,
	// and the master's configuration.
	"status": {"", 0, 0, cmdStatus},
	// log: print the harness's and the replicas' log lines while on.
	"log": {"on|off", 1, 1, func(s *script, a []string) error {
		switch a[0] {
		case "on", "off":
			s.logOn = a[0] == "on"
			return nil
		}
		return fmt.Errorf("log %q: want on or off", a[0])
	}},
}

// scriptLimit bounds how long (simulated) a command waits for the system.
const scriptLimit = settleLimit

// TestInteraction runs every script in testdata/scenarios; -rewrite
// replaces their expected output with what the commands print.
func TestInteraction(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "scenarios", "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scripts in testdata/scenarios (%v)", err)
	}
	for _, path := range files {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".txt"), func(t *testing.T) { runScript(t, path) })
	}
}

// ---------------------------------------------------------------------------
// Script files.

// scriptBlock is one command of a script and what surrounds it.
type scriptBlock struct {
	pre   []string // comment and blank lines before the command, verbatim
	line  int      // the command's line number
	cmd   string
	input []string
	want  []string
	got   string
}

// parseScript splits a script into blocks, and the comment and blank
// lines after the last one.
func parseScript(path, text string) ([]*scriptBlock, []string, error) {
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	var blocks []*scriptBlock
	var pre []string
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			pre = append(pre, l)
			continue
		}
		b := &scriptBlock{pre: pre, line: i + 1, cmd: l}
		pre = nil
		for i++; i < len(lines) && lines[i] != "----"; i++ {
			b.input = append(b.input, lines[i])
		}
		if i == len(lines) {
			return nil, nil, fmt.Errorf("%s:%d: %q has no ---- line", path, b.line, b.cmd)
		}
		for i++; i < len(lines) && lines[i] != ""; i++ {
			b.want = append(b.want, lines[i])
		}
		blocks = append(blocks, b)
	}
	return blocks, pre, nil
}

// formatScript writes the blocks back, each with the output it got.
func formatScript(blocks []*scriptBlock, post []string) string {
	var lines []string
	for _, b := range blocks {
		lines = append(lines, b.pre...)
		lines = append(lines, b.cmd)
		lines = append(lines, b.input...)
		lines = append(lines, "----")
		if b.got != "" {
			lines = append(lines, strings.Split(b.got, "\n")...)
		}
		lines = append(lines, "")
	}
	lines = append(lines, post...)
	for len(lines) > 0 && strings.TrimSpace(lines[len(lines)-1]) == "" {
		lines = lines[:len(lines)-1]
	}
	return strings.Join(lines, "\n") + "\n"
}

func runScript(t *testing.T, path string) {
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blocks, post, err := parseScript(path, string(text))
	if err != nil {
		t.Fatal(err)
	}
	s := &script{t: t, clients: map[string]*simClient{}}
	for _, b := range blocks {
		if err := s.exec(b); err != nil {
			t.Fatalf("%s:%d: %s: %v", path, b.line, b.cmd, err)
		}
		if strings.Contains(b.got, "\n\n") {
			t.Fatalf("%s:%d: %s: the output has a blank line, which would end it early", path, b.line, b.cmd)
		}
		if want := strings.Join(b.want, "\n"); !*flagRewrite && b.got != want {
			t.Errorf("%s:%d: %s\n--- want:\n%s\n--- got:\n%s", path, b.line, b.cmd, want, b.got)
		}
	}
	if *flagRewrite {
		if err := os.WriteFile(path, []byte(formatScript(blocks, post)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// ---------------------------------------------------------------------------
// The interpreter.

type script struct {
	t       *testing.T
	c       *simCluster
	clients map[string]*simClient
	logOn   bool
	out     []string // what the current command printed so far
}

func (s *script) printf(format string, args ...any) {
	s.out = append(s.out, fmt.Sprintf(format, args...))
}

// exec runs one block's command and sets b.got to what it printed.
func (s *script) exec(b *scriptBlock) error {
	s.out = nil
	fields := strings.Fields(b.cmd)
	cmd, ok := scriptCommands[fields[0]]
	switch args := fields[1:]; {
	case !ok:
		return fmt.Errorf("unknown command %q", fields[0])
	case len(args) < cmd.minN || len(args) > cmd.maxN:
		return fmt.Errorf("usage: %s %s", fields[0], cmd.usage)
	case len(b.input) > 0:
		return fmt.Errorf("%s takes no input lines", fields[0])
	case s.c == nil && fields[0] != "cluster":
		return fmt.Errorf("no cluster yet: a script starts with cluster")
	default:
		if err := cmd.run(s, args); err != nil {
			return err
		}
	}
	b.got = strings.Join(s.out, "\n")
	return nil
}

// cmdCluster makes the script's cluster: like newScenario (no random
// faults), with the script's seed, run until it is quiet (bootstrapped).
func cmdCluster(s *script, a []string) error {
	if s.c != nil {
		return fmt.Errorf("a script has one cluster")
	}
	kv, err := keyValues(a, "nodes", "seed", "master")
	if err != nil {
		return err
	}
	opts := defaultOptions()
	opts.Trace = false // the harness logs client retries when tracing: the output would change
	if opts.Nodes, err = strconv.Atoi(kv["nodes"]); err != nil || opts.Nodes < 1 {
		return fmt.Errorf("nodes=%q: want a positive number", kv["nodes"])
	}
	if v, ok := kv["seed"]; ok {
		if opts.Seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			return fmt.Errorf("seed=%q: %v", v, err)
		}
	}
	switch kv["master"] {
	case "":
	case "policy":
		opts.Policy = true
	default:
		return fmt.Errorf("master=%q: want policy, or leave it out for the scripted master", kv["master"])
	}
	s.c = newCluster(s.t, opts)
	// The replicas log through the harness's *slog.Logger: replacing its
	// handler in place routes their lines through the script too.
	*s.c.log = *slog.New(&scriptLogHandler{s: s, next: s.c.log.Handler()})
	s.runUntil("bootstrap", func() bool {
		// With the policy master, until every member holds a lease.
		return s.c.quiet() && !slices.ContainsFunc(s.c.liveChain(), func(n *simNode) bool {
			return n.r.LeaseLeft(s.c.clockOf(n)) == 0
		})
	})
	return nil
}

func cmdStatus(s *script, _ []string) error {
	for _, n := range s.c.order {
		crashed := ""
		if n.crashed {
			crashed = " crashed"
		}
		lease := ""
		if s.c.opts.Policy && !n.crashed {
			lease = fmt.Sprintf(" lease=%v", n.r.LeaseLeft(s.c.clockOf(n)) > 0)
		}
		if s.c.now < n.pausedUntil {
			crashed = " paused"
		}
		s.printf("%s: role=%v epoch=%d applied=%d committed=%d readable=%v%s%s", n.id, n.r.Role(), n.r.Epoch(),
			n.r.Applied(), n.r.Committed(), n.r.Readable(), lease, crashed)
	}
	cfg := s.c.master.cfg
	s.printf("master: epoch=%d chain=%v joining=%v", cfg.Epoch, memberIDs(cfg.Chain), memberIDs(cfg.Joining))
	return nil
}

// runUntil runs the cluster until cond holds; it prints an error if cond
// does not hold within scriptLimit.
func (s *script) runUntil(what string, cond func() bool) {
	if !s.c.runUntil(cond, scriptLimit) {
		s.printf("error: %s: not reached within %.0fms of simulated time", what, float64(scriptLimit)/1000)
	}
}

// awaitOp runs the cluster until op has an outcome (which report prints).
func (s *script) awaitOp(op *clientOp) error {
	s.runUntil(fmt.Sprintf("%s's %v", op.cl.name, op.in), func() bool { return op.done })
	return nil
}

// idleClient is the client with that name, made on first use; a client
// has one operation at a time.
func (s *script) idleClient(name string) (*simClient, error) {
	cl := s.clients[name]
	if cl == nil {
		cl = s.c.newClient(name)
		s.clients[name] = cl
	}
	if cl.op != nil {
		return nil, fmt.Errorf("client %s is still waiting for %v (await first)", name, cl.op.in)
	}
	return cl, nil
}

// withNodes checks that every id names a node, then runs fn.
func (s *script) withNodes(ids []string, fn func(ids []string)) error {
	for _, id := range ids {
		if s.c.nodes[id] == nil {
			return fmt.Errorf("no node %q", id)
		}
	}
	fn(ids)
	return nil
}

// report prints a client operation's outcome when the client receives it.
func (s *script) report(op *clientOp) {
	var what string
	switch op.in.Kind {
	case checker.KindBid:
		what = fmt.Sprintf("bid %d on %s", op.in.Amount, op.in.Auction)
	case checker.KindOpen:
		what = "open " + op.in.Auction
	default:
		what = "read " + op.in.Auction
	}
	var res string
	switch {
	case op.gaveUp:
		res = "gave up"
	case op.cmd == nil && op.info == nil:
		res = "unknown auction"
	case op.cmd == nil:
		res = fmt.Sprintf("highest=%d bidder=%q state=%v version=%d", op.info.Highest, op.info.Bidder,
			op.info.State, op.info.Version)
	default:
		res = op.res.Outcome.String()
		if op.res.Reason != 0 {
			res += "/" + op.res.Reason.String()
		}
		res += fmt.Sprintf(" seq=%d", op.res.Seq)
		if op.res.Duplicate {
			res += " duplicate"
		}
	}
	if op.node != "" {
		res += " from " + op.node
	}
	if op.attempt > 1 {
		res += fmt.Sprintf(" (attempt %d)", op.attempt)
	}
	s.printf("%s %s: %s", op.cl.name, what, res)
}

// keyValues parses key=value arguments; only the keys given are allowed.
func keyValues(args []string, keys ...string) (map[string]string, error) {
	kv := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || !slices.Contains(keys, k) {
			return nil, fmt.Errorf("argument %q: want one of %v as key=value", a, keys)
		}
		kv[k] = v
	}
	return kv, nil
}

// parseSimDuration parses a Go duration ("200ms") into simulated µs.
func parseSimDuration(s string) (int64, error) {
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("duration %q: want e.g. 50ms", s)
	}
	return d.Microseconds(), nil
}

// ---------------------------------------------------------------------------
// Log lines.

// scriptLogHandler prints log records into the current command's output
// while `log on`, as "node: message key=value ...", without the simulated
// time; records go on to the harness's own handler (-simlog) as well.
type scriptLogHandler struct {
	s     *script
	next  slog.Handler
	attrs []string // key=value, from WithAttrs
	node  string
	group string // key prefix, from WithGroup
}

func (h *scriptLogHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.s.logOn && l >= slog.LevelInfo || h.next.Enabled(ctx, l)
}

func (h *scriptLogHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.s.logOn && r.Level >= slog.LevelInfo {
		node, attrs := h.node, slices.Clone(h.attrs)
		r.Attrs(func(a slog.Attr) bool {
			if h.group == "" && a.Key == "node" {
				node = a.Value.String()
			} else {
				attrs = append(attrs, h.format(a))
			}
			return true
		})
		line := node + ": "
		if r.Level != slog.LevelInfo {
			line += r.Level.String() + " "
		}
		h.s.printf("%s", strings.Join(append([]string{line + r.Message}, attrs...), " "))
	}
	if h.next.Enabled(ctx, r.Level) {
		return h.next.Handle(ctx, r)
	}
	return nil
}

func (h *scriptLogHandler) format(a slog.Attr) string {
	v := a.Value.Resolve().String()
	if v == "" || strings.ContainsAny(v, " =\"") {
		v = strconv.Quote(v)
	}
	return h.group + a.Key + "=" + v
}

func (h *scriptLogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	n := *h
	n.next = h.next.WithAttrs(as)
	n.attrs = slices.Clone(h.attrs)
	for _, a := range as {
		if h.group == "" && a.Key == "node" {
			n.node = a.Value.String()
		} else {
			n.attrs = append(n.attrs, h.format(a))
		}
	}
	return &n
}

func (h *scriptLogHandler) WithGroup(g string) slog.Handler {
	n := *h
	n.next = h.next.WithGroup(g)
	n.group = h.group + g + "."
	return &n
}
