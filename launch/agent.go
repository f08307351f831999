package launch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The host side of the launcher. On every host, `gavel launch agent` reads
// one agentRequest (JSON) on its standard input, in the host's working
// directory, and writes one agentResponse; `gavel launch probe ADDR...`
// reports the addresses that cannot be bound. The launcher runs both
// through Host.Run, so the launching machine and ssh hosts share one path.

// runDir is where each host keeps its pid files and logs: .run/ID.pid,
// .run/ID.log, relative to the host's working directory.
const runDir = ".run"

// agentRequest is one operation of the host agent.
type agentRequest struct {
	// Op is ps, start, stop, data or rmdata.
	Op string `json:"op"`
	// IDs are the processes of ps and stop; ps with none lists every pid
	// file.
	IDs []string `json:"ids,omitempty"`
	// Kind, ID and Config start `gavel KIND --id ID --config CONFIG`.
	Kind   string `json:"kind,omitempty"`
	ID     string `json:"id,omitempty"`
	Config string `json:"config,omitempty"`
	// Env are the launching machine's GAVEL_* variables (KEY=VALUE), set
	// for the process that start starts over the host's own.
	Env []string `json:"env,omitempty"`
	// Kill makes stop send SIGKILL at once rather than SIGTERM first.
	Kill bool `json:"kill,omitempty"`
	// Wait is how long stop waits after SIGTERM before SIGKILL.
	Wait time.Duration `json:"wait,omitempty"`
	// Dirs are the master data dirs of data and rmdata.
	Dirs []string `json:"dirs,omitempty"`
}

// agentResponse is the agent's answer.
type agentResponse struct {
	Procs []procState `json:"procs,omitempty"` // ps, stop
	PID   int         `json:"pid,omitempty"`   // start
	Dirs  []dirState  `json:"dirs,omitempty"`  // data, rmdata
	Error string      `json:"error,omitempty"`
}

// procState is one process as its host sees it.
type procState struct {
	ID    string `json:"id"`
	PID   int    `json:"pid"`   // from the pid file; 0 when none
	Alive bool   `json:"alive"` // the pid runs, and is gavel's process ID of this directory
	// Signal is what stop did: "TERM" (it stopped), "KILL" (it needed
	// SIGKILL), "" (it was not running).
	Signal string `json:"signal,omitempty"`
}

// dirState is one master data dir on its host.
type dirState struct {
	Dir     string `json:"dir"`
	Exists  bool   `json:"exists"`
	Data    bool   `json:"data"`  // holds raft.db
	Empty   bool   `json:"empty"` // exists and holds nothing
	Deleted bool   `json:"deleted,omitempty"`
	Error   string `json:"error,omitempty"`
}

// ServeAgent runs one agent request read from in and writes the response
// to out, in the current directory, which is the host's working
// directory. gavel is the gavel binary that start runs.
func ServeAgent(in io.Reader, out io.Writer, gavel string) error {
	var req agentRequest
	if err := json.NewDecoder(in).Decode(&req); err != nil {
		return fmt.Errorf("%w: reading the request: %v", ErrAgent, err)
	}
	resp := serve(req, gavel)
	return json.NewEncoder(out).Encode(resp)
}

// serve carries out req.
func serve(req agentRequest, gavel string) agentResponse {
	var resp agentResponse
	switch req.Op {
	case "ps":
		ids := req.IDs
		if len(ids) == 0 {
			ids = pidFiles()
		}
		for _, id := range ids {
			pid, alive := aliveID(id)
			resp.Procs = append(resp.Procs, procState{ID: id, PID: pid, Alive: alive})
		}
	case "start":
		pid, err := startProc(gavel, req.Kind, req.ID, req.Config, req.Env)
		if err != nil {
			resp.Error = err.Error()
		}
		resp.PID = pid
	case "stop":
		resp.Procs = stopIDs(req.IDs, req.Kill, req.Wait)
	case "data", "rmdata":
		for _, d := range req.Dirs {
			st := dataState(d)
			if req.Op == "rmdata" && st.Exists && (st.Data || st.Empty) {
				if err := os.RemoveAll(d); err != nil {
					st.Error = err.Error()
				} else {
					st.Deleted = true
				}
			}
			resp.Dirs = append(resp.Dirs, st)
		}
	default:
		resp.Error = fmt.Sprintf("unknown op %q", req.Op)
	}
	return resp
}

// pidPath and logPath are the pid file and log of process id.
func pidPath(id string) string { return filepath.Join(runDir, id+".pid") }
func logPath(id string) string { return filepath.Join(runDir, id+".log") }

// pidFiles lists the ids that have a pid file, sorted.
func pidFiles() []string {
	names, _ := filepath.Glob(filepath.Join(runDir, "*.pid"))
	var ids []string
	for _, n := range names {
		ids = append(ids, strings.TrimSuffix(filepath.Base(n), ".pid"))
	}
	sort.Strings(ids)
	return ids
}

// readPID reads the pid file of id; 0 when there is none or it is garbage.
func readPID(id string) int { return readPIDFile(pidPath(id)) }

// readPIDFile reads the pid file at path; 0 when there is none or it is
// garbage.
func readPIDFile(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// aliveID returns the pid of id's pid file and whether it runs as gavel's
// process id.
func aliveID(id string) (int, bool) {
	pid := readPID(id)
	if pid == 0 {
		return 0, false
	}
	return pid, isProc(pid, id)
}

// isProc reports whether pid runs (and is not a zombie), its command line
// holds --id id and it runs in the current directory, the host's working
// directory, where startProc started it: a stale pid file whose pid now
// belongs to another program, or to the process of the same id of a
// cluster in another directory, does not count. Without /proc (not Linux)
// it only checks that the pid exists.
func isProc(pid int, id string) bool {
	if _, err := os.Stat("/proc/self/cmdline"); err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	args, ok := procArgs(pid, ".")
	if !ok {
		return false
	}
	for i, a := range args {
		if a == "--id="+id || a == "--id" && i+1 < len(args) && args[i+1] == id {
			return true
		}
	}
	return false
}

// procArgs returns the command line of pid, from /proc, if pid runs (and
// is not a zombie) with dir as its working directory; ok is false when it
// does not, or /proc does not say.
func procArgs(pid int, dir string) (args []string, ok bool) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, false
	}
	// The state follows the command name, which is in parentheses and may
	// hold spaces: "1234 (gavel) S ...".
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return nil, false
	}
	want, err := os.Stat(dir)
	if err != nil {
		return nil, false
	}
	if cwd, err := os.Stat(fmt.Sprintf("/proc/%d/cwd", pid)); err != nil || !os.SameFile(want, cwd) {
		return nil, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return nil, false
	}
	return strings.Split(strings.TrimRight(string(b), "\x00"), "\x00"), true
}

// startProc starts `gavel KIND --id ID --config CONFIG` in its own session,
// detached from the agent, with env added to the agent's environment:
// standard input /dev/null, output appended to .run/ID.log after a line
// that says when it started. It writes the pid file and returns the pid.
func startProc(gavel, kind, id, cfg string, env []string) (int, error) {
	p, err := StartLocal(ProcSpec{Gavel: gavel, Kind: kind, ID: id, Config: cfg, LogFile: logPath(id), Env: env,
		Detached: true, Header: true})
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(pidPath(id), []byte(strconv.Itoa(p.PID())+"\n"), 0o644); err != nil {
		_ = p.signal(syscall.SIGKILL)
		return 0, err
	}
	return p.PID(), nil
}

// stopIDs stops each running process of ids: SIGTERM, then SIGKILL for
// those still running after wait (at once with kill). Every pid file of
// ids is removed.
func stopIDs(ids []string, kill bool, wait time.Duration) []procState {
	states := make([]procState, len(ids))
	var ps []*LocalProc
	var at []int // the index in states of each of ps
	for i, id := range ids {
		pid, alive := aliveID(id)
		states[i] = procState{ID: id, PID: pid}
		if alive {
			ps = append(ps, pidProc(pid, id))
			at = append(at, i)
		}
	}
	for j, sig := range stopLocal(ps, kill, wait) {
		states[at[j]].Signal = sig
	}
	for _, id := range ids {
		_ = os.Remove(pidPath(id))
	}
	return states
}

// dataState describes master data dir d.
func dataState(d string) dirState {
	st := dirState{Dir: d}
	if fi, err := os.Stat(d); err == nil && !fi.IsDir() {
		st.Exists = true // not a data dir: left alone
		return st
	}
	entries, err := os.ReadDir(d)
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			st.Exists, st.Error = true, err.Error()
		}
		return st
	}
	st.Exists, st.Empty = true, len(entries) == 0
	_, err = os.Stat(filepath.Join(d, "raft.db"))
	_, nerr := os.Stat(filepath.Join(d, "meta.db"))
	st.Data = err == nil || nerr == nil
	return st
}

// Probe tries to listen on each address and returns, for each one that
// cannot be bound, a line "ADDR taken" (the port is in use) or "ADDR
// cannot bind: REASON".
func Probe(addrs []string) []string {
	var bad []string
	for _, a := range addrs {
		l, err := net.Listen("tcp", a)
		if err == nil {
			l.Close()
			continue
		}
		if errors.Is(err, syscall.EADDRINUSE) {
			bad = append(bad, a+" taken")
		} else {
			bad = append(bad, a+" cannot bind: "+err.Error())
		}
	}
	return bad
}

// agent runs one request on host h through `gavel launch agent`.
func agent(ctx context.Context, h Host, req agentRequest) (agentResponse, error) {
	b, err := json.Marshal(req)
	if err != nil {
		return agentResponse{}, err
	}
	// A host where gavel was never installed runs nothing: ps and stop
	// answer empty there.
	script := "if [ -x " + h.Gavel() + " ]; then exec " + h.Gavel() + " launch agent; fi"
	out, err := h.Run(ctx, script, bytes.NewReader(b))
	if err != nil {
		if errors.Is(err, ErrUnreachable) {
			return agentResponse{}, err
		}
		return agentResponse{}, fmt.Errorf("%s on %s: %w: %v", req.Op, h.Where(), ErrAgent, err)
	}
	var resp agentResponse
	if len(bytes.TrimSpace(out)) == 0 {
		return resp, nil
	}
	if err := json.Unmarshal(out, &resp); err != nil {
		return resp, fmt.Errorf("%s on %s: %w: unreadable answer %q", req.Op, h.Where(), ErrAgent, lastLine(out))
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("%s on %s: %w: %s", req.Op, h.Where(), ErrAgent, resp.Error)
	}
	return resp, nil
}

// probe runs `gavel launch probe` on host h and returns its lines: one per
// address that cannot be bound.
func probe(ctx context.Context, h Host, addrs []string) ([]string, error) {
	if len(addrs) == 0 {
		return nil, nil
	}
	var words []string
	for _, a := range addrs {
		words = append(words, shQuote(a))
	}
	// probe exits 1 when it reports an address: that is its answer, not a
	// failure.
	out, err := h.Run(ctx, h.Gavel()+" launch probe "+strings.Join(words, " ")+" || [ $? = 1 ]", nil)
	if err != nil {
		return nil, err
	}
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	return lines, nil
}
