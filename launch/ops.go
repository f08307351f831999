package launch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/gavel-auction/gavel/config"
)

// Down stops every process that has a pid file on any host of the
// configuration (gateways first, then nodes and unknown ids, masters
// last; SIGTERM, then SIGKILL after StopWait) and the monitor's
// Prometheus. With Wipe, it then deletes the data dirs of the masters and
// the nodes (only those that hold raft.db or meta.db, or nothing) and the
// monitor's samples.
// A host that cannot be reached is reported; the others are still
// cleaned.
func (l *Launcher) Down(ctx context.Context) error {
	l.stopMonitor(ctx, true)
	hosts := l.distinctHosts()
	found := make([][]string, len(hosts))
	errs := make([]error, len(hosts))
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Go(func() {
			resp, err := agent(ctx, h, agentRequest{Op: "ps"})
			errs[i] = err
			for _, s := range resp.Procs {
				found[i] = append(found[i], s.ID)
			}
		})
	}
	wg.Wait()
	var all []hostProc
	for i, h := range hosts {
		for _, id := range found[i] {
			kind := "node"
			if p, ok := l.proc(id); ok {
				kind = p.Kind
			}
			all = append(all, hostProc{h, id, kind})
		}
	}
	errs = append(errs, l.stopInOrder(ctx, all))
	if err := errors.Join(errs...); err != nil {
		l.say("gavel cluster down, except on the hosts below")
		return err
	}
	l.say("gavel cluster down")
	if !l.o.Wipe {
		l.say("data dirs kept: the next up brings back every auction (down --wipe deletes them)")
		return nil
	}
	// The monitor's samples belong to this run too.
	if prom := filepath.Join(l.o.Dir, runDir, "prometheus"); dirExists(prom) {
		if err := os.RemoveAll(prom); err != nil {
			return err
		}
		l.say("deleted %s (monitor data)", filepath.Join(runDir, "prometheus"))
	}
	if l.cfg == nil {
		return fmt.Errorf("cannot read the data dirs from %s to delete them: %w", l.file, l.o.ConfigErr)
	}
	return l.deleteData(ctx)
}

// dirExists reports whether path is a directory.
func dirExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// deleteData deletes each master's and node's data dir on its host, when
// it holds raft.db (a master's) or meta.db (a node's), or nothing.
func (l *Launcher) deleteData(ctx context.Context) error {
	var errs []error
	for _, p := range append(l.procsOf("master"), l.procsOf("node")...) {
		h := l.hostOf(p)
		resp, err := agent(ctx, h, agentRequest{Op: "rmdata", Dirs: []string{p.DataDir}})
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, d := range resp.Dirs {
			where := d.Dir
			if !l.isLaunching(h) {
				where = filepath.Join(h.Dir(), d.Dir)
				if filepath.IsAbs(d.Dir) {
					where = d.Dir
				}
			}
			switch {
			case d.Deleted:
				l.say("deleted %s (%s %s%s)", where, p.Kind, p.ID, onHostShort(l, p))
			case d.Error != "":
				errs = append(errs, fmt.Errorf("deleting %s (%s %s%s): %s", where, p.Kind, p.ID, onHostShort(l, p), d.Error))
			case d.Exists:
				l.warn("not deleting %s (%s %s%s): neither raft.db nor meta.db in it", where, p.Kind, p.ID, onHostShort(l, p))
			}
		}
	}
	return errors.Join(errs...)
}

// onHostShort is " on h1" for a process of another host, "" otherwise.
func onHostShort(l *Launcher, p Proc) string {
	if l.onHost(p) == "" {
		return ""
	}
	return " on " + p.Host
}

// Status prints one table of every process of the configuration (id,
// kind, host, pid, up or down, role, epoch, and for nodes applied and
// lag), then the gateways. It returns an error wrapping ErrDown when a
// process is down or does not answer.
func (l *Launcher) Status(ctx context.Context) error {
	pids, perr := l.running(ctx, l.procs)
	var v View
	var health map[string]string
	var wg sync.WaitGroup
	wg.Go(func() { v = l.o.Observer.View(ctx) })
	wg.Go(func() {
		health = map[string]string{}
		for _, p := range l.procsOf("gateway") {
			if body, ok := l.healthz(ctx, p.Addr); ok {
				health[p.ID] = body
			}
		}
	})
	wg.Wait()

	if ms := l.procsOf("master"); len(ms) > 0 {
		up := 0
		for _, m := range ms {
			if v.Masters[m.ID].Up {
				up++
			}
		}
		switch {
		case v.Leader != "":
			l.say("masters: leader %s (%d of %d up)", v.Leader, up, len(ms))
		case up > 0:
			l.say("masters: no leader (%d of %d up): election in progress, or no quorum", up, len(ms))
		default:
			l.say("masters: none answered (%d configured)", len(ms))
		}
	}
	if len(v.Chain) > 0 || len(v.Joining) > 0 {
		s := fmt.Sprintf("chain epoch %d: %s", v.Epoch, strings.Join(v.Chain, " -> "))
		if len(v.Joining) > 0 {
			s += ", joining " + strings.Join(v.Joining, ", ")
		}
		if v.Leader != "" {
			s += "  (master leader " + v.Leader + ")"
		}
		l.say("%s", s)
	} else {
		l.say("chain: unknown (no master or node answered)")
	}
	l.say("")

	tw := tabwriter.NewWriter(l.o.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tHOST\tPID\tSTATE\tROLE\tEPOCH\tAPPLIED\tLAG")
	var down []string
	for _, p := range l.procs {
		host := p.Host
		if host == "" {
			host = "local"
		}
		pid, running := pids[p.ID]
		pidText := "-"
		if running {
			pidText = strconv.Itoa(pid)
		}
		state, role, epoch, applied, lag := "down", "-", "-", "-", "-"
		answered := false
		switch p.Kind {
		case "master":
			if mv := v.Masters[p.ID]; mv.Up {
				answered, role, epoch = true, mv.State, strconv.FormatUint(mv.Epoch, 10)
			}
		case "node":
			if nv := v.Nodes[p.ID]; nv.Up {
				answered, role, epoch, applied = true, nv.Role, strconv.FormatUint(nv.Epoch, 10), strconv.FormatUint(nv.Applied, 10)
				if nv.Lag != nil {
					lag = strconv.FormatInt(*nv.Lag, 10)
				}
			}
		case "gateway":
			if body, ok := health[p.ID]; ok {
				answered = true
				var h struct {
					Epoch uint64 `json:"epoch"`
					Mode  string `json:"mode"`
				}
				if json.Unmarshal([]byte(body), &h) == nil {
					role, epoch = h.Mode, strconv.FormatUint(h.Epoch, 10)
				}
			}
		}
		switch {
		case answered:
			state = "up"
		case running:
			state = "no answer"
		}
		if state != "up" {
			down = append(down, p.ID)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", p.ID, p.Kind, host, pidText, state, role, epoch, applied, lag)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(l.procsOf("gateway")) > 0 {
		l.say("gateways:")
		for _, line := range l.gatewayLines(ctx, pids) {
			l.say("%s", line)
		}
	}
	var err error
	if len(down) > 0 {
		err = fmt.Errorf("%d of %d processes %w: %s", len(down), len(l.procs), ErrDown, strings.Join(down, " "))
	}
	return errors.Join(err, perr)
}

// idHost returns the process with id and its host; an id that the
// configuration does not list is looked for on the launching machine.
func (l *Launcher) idHost(id string) (Proc, Host, bool) {
	if p, ok := l.proc(id); ok {
		return p, l.hostOf(p), true
	}
	return Proc{Process: config.Process{ID: id}}, l.local, false
}

// Kill sends SIGKILL to process id on its host (for fault demos).
func (l *Launcher) Kill(ctx context.Context, id string) error {
	p, h, _ := l.idHost(id)
	resp, err := agent(ctx, h, agentRequest{Op: "ps", IDs: []string{id}})
	if err != nil {
		return err
	}
	if len(resp.Procs) != 1 || !resp.Procs[0].Alive {
		return fmt.Errorf("%s is %w%s", id, ErrNotRunning, onHostSuffix(l, p))
	}
	pid := resp.Procs[0].PID
	if err := l.stop(ctx, map[Host][]string{h: {id}}, true); err != nil {
		return err
	}
	l.say("killed %s (SIGKILL, pid %d%s)", id, pid, l.onHost(p))
	return nil
}

// onHostSuffix is " on host h1" for a process of another host.
func onHostSuffix(l *Launcher, p Proc) string {
	if s := onHostShort(l, p); s != "" {
		return " on host " + p.Host
	}
	return ""
}

// Restart kills process id if it runs (SIGKILL), starts it again as Up
// does and waits: a node until it is a chain member again, a master until
// it follows a leader, a gateway until its /healthz answers. When it does
// not come back it is stopped again.
func (l *Launcher) Restart(ctx context.Context, id string) (err error) {
	p, ok := l.proc(id)
	if !ok {
		return fmt.Errorf("%w %s: %s lists %s", ErrUnknownID, id, l.file, strings.Join(ids(l.procs), " "))
	}
	if err := l.checkTransport([]Proc{p}); err != nil {
		return err
	}
	h := l.hostOf(p)
	if err := l.prepare(ctx, []Host{h}, []Host{h}); err != nil {
		return err
	}
	resp, err := agent(ctx, h, agentRequest{Op: "ps", IDs: []string{id}})
	if err != nil {
		return err
	}
	killed := len(resp.Procs) == 1 && resp.Procs[0].Alive
	if killed {
		if err := l.stop(ctx, map[Host][]string{h: {id}}, true); err != nil {
			return err
		}
		l.say("killed %s %s (SIGKILL, pid %d%s)", p.Kind, id, resp.Procs[0].PID, l.onHost(p))
	}
	// The kernel may still be closing the sockets of a process just killed
	// (a gateway with tens of thousands of connections takes a moment):
	// its ports get a few seconds to come free.
	for deadline := time.Now().Add(5 * time.Second); ; {
		err := l.checkPorts(ctx, []Proc{p})
		if err == nil {
			break
		}
		if !killed || !errors.Is(err, ErrPortTaken) || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
	pid, err := l.start(ctx, p)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = l.stopProcs(context.WithoutCancel(ctx), []Proc{p})
			err = fmt.Errorf("%w\nstopped %s %s again", err, p.Kind, id)
		}
	}()
	if err := l.waitReady(ctx, p); err != nil {
		return err
	}
	l.say("started %s %s (pid %d%s, log %s)", p.Kind, id, pid, l.onHost(p), l.logOf(id, h))
	switch {
	case p.Kind == "node" && len(l.procsOf("master")) > 0:
		v, err := l.waitMembers(ctx, []Proc{p}, false)
		if err != nil {
			return err
		}
		l.say("%s is a chain member again: %s", id, strings.Join(v.Chain, " -> "))
	case p.Kind == "master":
		v, err := l.waitLeader(ctx, id)
		if err != nil {
			return err
		}
		if v.Leader == id {
			l.say("master %s is the leader again", id)
		} else {
			l.say("master %s follows leader %s", id, v.Leader)
		}
	}
	return nil
}

// Logs follows the log of process id on its host (tail -f) until ctx
// ends.
func (l *Launcher) Logs(ctx context.Context, id string) error {
	_, h, _ := l.idHost(id)
	err := h.Stream(ctx, "tail -n 50 -f "+shQuote(logPath(id)), l.o.Stdout, l.o.Stderr)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// chainMember reports whether node id is a member of v's chain in its
// current run.
func chainMember(v View, id string) bool {
	return slices.Contains(v.Chain, id) && !slices.Contains(v.Restarted, id) && v.Nodes[id].Up
}
