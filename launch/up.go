package launch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/config"
)

// running asks every host of hs which processes of ps run there, in
// parallel, and returns their pids by id.
func (l *Launcher) running(ctx context.Context, ps []Proc) (map[string]int, error) {
	byHost := map[Host][]string{}
	for _, p := range ps {
		byHost[l.hostOf(p)] = append(byHost[l.hostOf(p)], p.ID)
	}
	var mu sync.Mutex // guards pids and errs
	pids := map[string]int{}
	var errs []error
	var wg sync.WaitGroup
	for h, idl := range byHost {
		wg.Go(func() {
			resp, err := agent(ctx, h, agentRequest{Op: "ps", IDs: idl})
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			for _, s := range resp.Procs {
				if s.Alive {
					pids[s.ID] = s.PID
				}
			}
		})
	}
	wg.Wait()
	return pids, errors.Join(errs...)
}

// checkPorts probes, on each process's host, every address that a process
// of ps binds, and returns one error per address that cannot be bound,
// naming its key.
func (l *Launcher) checkPorts(ctx context.Context, ps []Proc) error {
	type owner struct {
		p Proc
		b config.BindAddr
	}
	byHost := map[Host][]owner{}
	for _, p := range ps {
		for _, b := range p.Binds {
			byHost[l.hostOf(p)] = append(byHost[l.hostOf(p)], owner{p, b})
		}
	}
	var mu sync.Mutex // guards errs
	var errs []error
	var wg sync.WaitGroup
	for h, os := range byHost {
		wg.Go(func() {
			addrs := make([]string, len(os))
			for i, o := range os {
				addrs[i] = o.b.Addr
			}
			lines, err := probe(ctx, h, addrs)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			for _, line := range lines {
				addr, reason, _ := strings.Cut(line, " ")
				for _, o := range os {
					if o.b.Addr != addr {
						continue
					}
					if reason == "taken" {
						errs = append(errs, fmt.Errorf("port %s of %s %s (%s in %s) is %w on %s",
							port(addr), o.p.Kind, o.p.ID, o.b.Key, l.file, ErrPortTaken, h.Where()))
					} else {
						errs = append(errs, fmt.Errorf("address %s of %s %s (%s in %s) %w on %s: %s",
							addr, o.p.Kind, o.p.ID, o.b.Key, l.file, ErrCannotBind, h.Where(), strings.TrimPrefix(reason, "cannot bind: ")))
					}
				}
			}
		})
	}
	wg.Wait()
	slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
	return errors.Join(errs...)
}

// start starts p on its host and returns its pid. The process gets the
// launcher's GAVEL_* environment variables, so that it reads the
// configuration the launcher read (GAVEL_AUTH_SECRET, say) on every host,
// not only on the launching machine.
func (l *Launcher) start(ctx context.Context, p Proc) (int, error) {
	h := l.hostOf(p)
	resp, err := agent(ctx, h, agentRequest{Op: "start", Kind: p.Kind, ID: p.ID, Config: l.configOn(h), Env: gavelEnv()})
	if err != nil {
		return 0, fmt.Errorf("starting %s %s on %s: %w", p.Kind, p.ID, h.Where(), err)
	}
	return resp.PID, nil
}

// gavelEnv returns the GAVEL_* variables of the launcher's environment,
// the overrides of the configuration (KEY=VALUE).
func gavelEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "GAVEL_") {
			env = append(env, kv)
		}
	}
	return env
}

// stop stops the processes ps on their hosts, in parallel: SIGTERM, then
// SIGKILL after StopWait (at once with kill).
func (l *Launcher) stop(ctx context.Context, idsByHost map[Host][]string, kill bool) error {
	var mu sync.Mutex // guards errs
	var errs []error
	var wg sync.WaitGroup
	for h, idl := range idsByHost {
		if len(idl) == 0 {
			continue
		}
		wg.Go(func() {
			_, err := agent(ctx, h, agentRequest{Op: "stop", IDs: idl, Kill: kill, Wait: l.o.StopWait})
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// stopProcs stops ps, gateways first, then nodes, masters last.
func (l *Launcher) stopProcs(ctx context.Context, ps []Proc) error {
	var hps []hostProc
	for _, p := range ps {
		hps = append(hps, hostProc{l.hostOf(p), p.ID, p.Kind})
	}
	return l.stopInOrder(ctx, hps)
}

// hostProc is process id, of kind, on host h.
type hostProc struct {
	h        Host
	id, kind string
}

// stopInOrder stops ps in the stages of StopOrder, each stage on all its
// hosts at once.
func (l *Launcher) stopInOrder(ctx context.Context, ps []hostProc) error {
	var errs []error
	for _, stage := range StopOrder(ps, func(p hostProc) string { return p.kind }) {
		by := map[Host][]string{}
		for _, p := range stage {
			by[p.h] = append(by[p.h], p.id)
		}
		errs = append(errs, l.stop(ctx, by, false))
	}
	return errors.Join(errs...)
}

// logTail returns the last lines of id's log on h, indented.
func (l *Launcher) logTail(ctx context.Context, h Host, id string) string {
	out, err := h.Run(ctx, "tail -n 8 "+shQuote(logPath(id))+" 2>/dev/null; true", nil)
	if err != nil || len(strings.TrimSpace(string(out))) == 0 {
		return ""
	}
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
		b.WriteString("\n  " + line)
	}
	return b.String()
}

// notReady is the error for p that did not come up: what happened, where
// its log is, and the log's end.
func (l *Launcher) notReady(ctx context.Context, p Proc, what string) error {
	h := l.hostOf(p)
	where := ""
	if h != Host(l.local) {
		where = " on " + h.Where()
	}
	return fmt.Errorf("%s %s%s %w: %s; see %s:%s", p.Kind, p.ID, where, ErrNotReady, what, l.logOf(p.ID, h), l.logTail(ctx, h, p.ID))
}

// waitReady waits until p answers: a master or node its status call, a
// gateway its /healthz. It fails early when p's process exits.
func (l *Launcher) waitReady(ctx context.Context, p Proc) error {
	end := time.Now().Add(l.o.ReadyTimeout)
	var checked time.Time
	for {
		if l.answers(ctx, p) {
			return nil
		}
		if time.Since(checked) >= 300*time.Millisecond {
			checked = time.Now()
			pids, err := l.running(ctx, []Proc{p})
			if err != nil {
				return err
			}
			if _, ok := pids[p.ID]; !ok {
				return l.notReady(ctx, p, "exited")
			}
		}
		if time.Now().After(end) {
			return l.notReady(ctx, p, fmt.Sprintf("did not answer on %s within %v", p.Addr, l.o.ReadyTimeout))
		}
		if err := sleep(ctx, l.o.Poll); err != nil {
			return err
		}
	}
}

// answers reports whether p answers now.
func (l *Launcher) answers(ctx context.Context, p Proc) bool {
	switch p.Kind {
	case "gateway":
		_, ok := l.healthz(ctx, p.Addr)
		return ok
	case "master":
		return l.o.Observer.View(ctx).Masters[p.ID].Up
	default:
		return l.o.Observer.View(ctx).Nodes[p.ID].Up
	}
}

// sleep waits d, or returns ctx's error when it ends first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// waitLeader waits until a master leads and, when follower is set, until
// that master knows the leader too.
func (l *Launcher) waitLeader(ctx context.Context, follower string) (View, error) {
	end := time.Now().Add(l.o.LeaderTimeout)
	for {
		v := l.o.Observer.View(ctx)
		if v.Leader != "" && (follower == "" || v.Masters[follower].LeaderID != "") {
			return v, nil
		}
		if time.Now().After(end) {
			var b strings.Builder
			for _, m := range l.procsOf("master") {
				mv := v.Masters[m.ID]
				switch {
				case !mv.Up:
					fmt.Fprintf(&b, "\n  master %s  down: %s", m.ID, mv.Err)
				case mv.LeaderID == "":
					fmt.Fprintf(&b, "\n  master %s  %s, knows no leader", m.ID, mv.State)
				default:
					fmt.Fprintf(&b, "\n  master %s  %s, follows %s", m.ID, mv.State, mv.LeaderID)
				}
			}
			if follower != "" && v.Leader != "" {
				return v, fmt.Errorf("master %s %w: it knows no leader after %v; see %s and scripts/launch status%s",
					follower, ErrNotReady, l.o.LeaderTimeout, l.logOf(follower, l.hostOf(l.mustProc(follower))), b.String())
			}
			return v, fmt.Errorf("%w: no master leader elected within %v; see the masters' logs (%s)%s",
				ErrNotReady, l.o.LeaderTimeout, strings.Join(l.logsOf(l.procsOf("master")), ", "), b.String())
		}
		if err := sleep(ctx, l.o.Poll); err != nil {
			return v, err
		}
	}
}

// mustProc returns the process id, which the configuration has.
func (l *Launcher) mustProc(id string) Proc {
	p, _ := l.proc(id)
	return p
}

// logsOf names the logs of ps.
func (l *Launcher) logsOf(ps []Proc) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = l.logOf(p.ID, l.hostOf(p))
	}
	return out
}

// waitMembers waits until every node of ps is a member of the chain the
// master leader reports.
func (l *Launcher) waitMembers(ctx context.Context, ps []Proc, stale bool) (View, error) {
	end := time.Now().Add(l.o.JoinTimeout)
	for {
		v := l.o.Observer.View(ctx)
		var missing []Proc
		for _, p := range ps {
			if !chainMember(v, p.ID) {
				missing = append(missing, p)
			}
		}
		if len(missing) == 0 {
			return v, nil
		}
		if time.Now().After(end) {
			msg := fmt.Sprintf("after %v the chain is [%s], still without: %s; see %s and scripts/launch status",
				l.o.JoinTimeout, strings.Join(v.Chain, " "), strings.Join(ids(missing), " "), strings.Join(l.logsOf(missing), " "))
			if stale {
				msg += "\n  the masters started from the data of an earlier run (the chain configuration of then);" +
					"\n  for a fresh cluster: scripts/launch down && scripts/launch up"
			}
			return v, fmt.Errorf("%w: %s", ErrNotReady, msg)
		}
		if err := sleep(ctx, l.o.Poll); err != nil {
			return v, err
		}
	}
}

// staleData reports whether a master of ps starts from the Raft data of an
// earlier run.
func (l *Launcher) staleData(ctx context.Context, ps []Proc) (bool, error) {
	byHost := map[Host][]string{}
	for _, p := range ps {
		if p.Kind == "master" {
			byHost[l.hostOf(p)] = append(byHost[l.hostOf(p)], p.DataDir)
		}
	}
	for h, dirs := range byHost {
		resp, err := agent(ctx, h, agentRequest{Op: "data", Dirs: dirs})
		if err != nil {
			return false, err
		}
		for _, d := range resp.Dirs {
			if d.Data {
				return true, nil
			}
		}
	}
	return false, nil
}

// Up starts every process of the configuration that does not run yet:
// the masters (then waits for a leader), the nodes one at a time (each
// until it is a chain member), the gateways (each until its /healthz
// answers), and with Monitor a local Prometheus; then it prints the
// summary. Before starting anything it checks that the configuration
// runs with TLS, or without it on loopback only (checkTransport), checks
// every ssh host, copies the files each host needs and checks that every
// port to bind is free. When
// anything fails it stops every process it started and returns the
// failure.
func (l *Launcher) Up(ctx context.Context) (err error) {
	if err := l.checkTransport(l.procs); err != nil {
		return err
	}
	if err := l.prepare(ctx, l.sshHosts(), l.procHosts(l.procs)); err != nil {
		return err
	}
	pids, err := l.running(ctx, l.procs)
	if err != nil {
		return err
	}
	var todo []Proc
	for _, p := range l.procs {
		if pid, ok := pids[p.ID]; ok {
			l.say("%s %s already running (pid %d%s)", p.Kind, p.ID, pid, l.onHost(p))
		} else {
			todo = append(todo, p)
		}
	}
	stale, err := l.staleData(ctx, todo)
	if err != nil {
		return err
	}
	if stale {
		l.say("masters start from their data dirs: the chain configuration of the last run (down --wipe for a fresh one)")
	}
	if err := l.checkPorts(ctx, todo); err != nil {
		return err
	}
	if l.o.Monitor {
		if err := l.checkMonitor(ctx); err != nil {
			return err
		}
	}

	var started []Proc
	defer func() {
		if err == nil || len(started) == 0 {
			return
		}
		// Stop what this run started, even when ctx has ended.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.o.StopWait+30*time.Second)
		defer cancel()
		if serr := l.stopProcs(sctx, started); serr != nil {
			err = errors.Join(err, fmt.Errorf("stopping what this run started: %w", serr))
		}
		if l.monitorStarted {
			l.stopMonitor(sctx, false)
		}
		err = fmt.Errorf("%w\nstopped what this run had started: %s", err, strings.Join(ids(started), " "))
	}()
	startOne := func(p Proc) error {
		if _, err := l.start(ctx, p); err != nil {
			return err
		}
		started = append(started, p)
		return nil
	}
	hasMasters := len(l.procsOf("master")) > 0
	for _, p := range todo {
		if p.Kind == "master" {
			if err := startOne(p); err != nil {
				return err
			}
		}
	}
	for _, p := range started {
		if err := l.waitReady(ctx, p); err != nil {
			return err
		}
	}
	if hasMasters {
		if _, err := l.waitLeader(ctx, ""); err != nil {
			return err
		}
	}
	for _, p := range todo {
		if p.Kind != "node" {
			continue
		}
		if err := startOne(p); err != nil {
			return err
		}
		if err := l.waitReady(ctx, p); err != nil {
			return err
		}
		if hasMasters {
			if _, err := l.waitMembers(ctx, []Proc{p}, stale); err != nil {
				return err
			}
		}
	}
	if hasMasters {
		if _, err := l.waitMembers(ctx, l.procsOf("node"), stale); err != nil {
			return err
		}
	}
	for _, p := range todo {
		if p.Kind != "gateway" {
			continue
		}
		if err := startOne(p); err != nil {
			return err
		}
		if err := l.waitReady(ctx, p); err != nil {
			return err
		}
	}
	l.summary(ctx)
	if l.o.Monitor {
		if err := l.startMonitor(ctx); err != nil {
			return err
		}
	}
	l.tryLines()
	return nil
}

// onHost is ", host h1" for a process on another host than the launching
// machine, "" otherwise.
func (l *Launcher) onHost(p Proc) string {
	if p.Host == "" || l.isLaunching(l.hostOf(p)) {
		return ""
	}
	return ", host " + p.Host
}

// hostCol is " host h1" for the summary lines of a process on another
// host, "" otherwise.
func (l *Launcher) hostCol(p Proc) string {
	if s := l.onHost(p); s != "" {
		return "  host " + p.Host
	}
	return ""
}

// summary prints the cluster: every process, the chain, the gateways.
func (l *Launcher) summary(ctx context.Context) {
	l.say("gavel cluster up (%s):", l.o.ConfigPath)
	for _, p := range l.procsOf("master") {
		l.say("  master %s  grpc %s  raft %s  data %s%s  log %s", p.ID, p.Addr, p.RaftAddr, p.DataDir, l.hostCol(p), l.logOf(p.ID, l.hostOf(p)))
	}
	for _, p := range l.procsOf("node") {
		l.say("  node   %s  grpc %s%s  log %s", p.ID, p.Addr, l.hostCol(p), l.logOf(p.ID, l.hostOf(p)))
	}
	if len(l.procsOf("master")) > 0 {
		v := l.o.Observer.View(ctx)
		l.say("  chain  %s  (master leader %s)", strings.Join(v.Chain, " -> "), v.Leader)
	}
	for _, line := range l.gatewayLines(ctx, nil) {
		l.say("%s", line)
	}
}

// gatewayLines describes each gateway: whether it runs, its page URL and
// what its /healthz says. pids are the running gateways' pids (nil: ask).
func (l *Launcher) gatewayLines(ctx context.Context, pids map[string]int) []string {
	gws := l.procsOf("gateway")
	if pids == nil {
		pids, _ = l.running(ctx, gws)
	}
	var lines []string
	for _, p := range gws {
		url := fmt.Sprintf("%s://%s/", l.scheme(), p.Addr)
		log := l.logOf(p.ID, l.hostOf(p))
		pid, ok := pids[p.ID]
		if !ok {
			lines = append(lines, fmt.Sprintf("  gateway %s  %s%s  not running (log %s)", p.ID, url, l.hostCol(p), log))
			continue
		}
		if body, ok := l.healthz(ctx, p.Addr); ok {
			lines = append(lines, fmt.Sprintf("  gateway %s  %s  %s://%s/ws%s  %s  log %s", p.ID, url, l.wsScheme(), p.Addr,
				l.hostCol(p), healthSummary(body), log))
		} else {
			lines = append(lines, fmt.Sprintf("  gateway %s  %s%s  running (pid %d) but /healthz does not answer; log %s",
				p.ID, url, l.hostCol(p), pid, log))
		}
	}
	return lines
}

// healthSummary is mode, epoch, tail and connections from a /healthz body:
// "(mode open epoch 3 tail n3 connections 0)".
func healthSummary(body string) string {
	var h struct {
		Mode        string `json:"mode"`
		Epoch       uint64 `json:"epoch"`
		Tail        string `json:"tail"`
		Connections int    `json:"connections"`
	}
	if err := json.Unmarshal([]byte(body), &h); err != nil {
		return "(unreadable /healthz)"
	}
	return fmt.Sprintf("(mode %s epoch %d tail %s connections %d)", h.Mode, h.Epoch, h.Tail, h.Connections)
}

// tryLines prints commands to try on the new cluster.
func (l *Launcher) tryLines() {
	l.say("")
	// With another file than ./config.yaml, every hint names it.
	cf := ""
	if l.file != "config.yaml" {
		cf = " --config " + shQuote(l.file)
	}
	l.say("try:")
	l.say("  bin/gavel open a1 --duration 10m --item 'a lamp'%s", cf)
	l.say("  bin/gavel bid --auction a1 --bidder alice 100%s", cf)
	l.say("  bin/gavel result --auction a1%s", cf)
	l.say("  bin/gavel status%s", cf)
	if gws := l.procsOf("gateway"); len(gws) > 0 {
		g := gws[0].Addr
		ca := ""
		if l.cfg.TLSEnabled() {
			ca = " --ca " + shQuote(l.cfg.TLS.CA)
		}
		if tok, err := l.token("alice"); err == nil && tok != "" {
			// auth.secret is set: the gateways want a token (alice's, for a day).
			l.say("  wscat -c %s://%s/ws%s -o %s://%s -H 'Authorization: Bearer %s'     (then: help, watch a1, bid a1 150)",
				l.wsScheme(), g, ca, l.scheme(), g, tok)
			l.say("  open '%s://%s/?token=%s' in a browser   (more tokens: bin/gavel token --bidder NAME [--admin]%s)", l.scheme(), g, tok, cf)
		} else {
			l.say("  wscat -c '%s://%s/ws?bidder=alice'%s     (then: help, watch a1, bid a1 150)", l.wsScheme(), g, ca)
			l.say("  open %s://%s/ in a browser", l.scheme(), g)
		}
	}
	if nodes := l.procsOf("node"); len(nodes) > 1 {
		l.say("  scripts/launch kill %s%s; scripts/launch restart %s%s", nodes[1].ID, cf, nodes[1].ID, cf)
	}
	l.say("  scripts/launch down%s", cf)
}

// token returns a bearer token for bidder signed with auth.secret, valid
// for auth.token_ttl; "" in open mode.
func (l *Launcher) token(bidder string) (string, error) {
	if l.cfg.Auth.Secret == "" {
		return "", nil
	}
	return auth.NewToken([]byte(l.cfg.Auth.Secret), bidder, auth.RoleBidder, l.cfg.Auth.TokenTTL, time.Now())
}
