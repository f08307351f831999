package launch

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Gavel processes on this machine. The host agent starts them detached:
// they outlive the agent, and their pid files tell later agents about
// them. A program that owns its processes, such as tools/demofailures,
// starts them attached: they die with it.

// killWait is how long a process is given to exit after SIGKILL.
const killWait = 5 * time.Second

// ProcSpec is a gavel process to start on this machine.
type ProcSpec struct {
	// Gavel is the gavel binary; Kind, ID and Config make the command
	// line `gavel KIND --id ID --config CONFIG`.
	Gavel, Kind, ID, Config string
	// Dir is the process's working directory ("": the current one).
	Dir string
	// LogFile receives the process's standard output and standard error,
	// appended; its directory is created when missing. Standard input is
	// /dev/null.
	LogFile string
	// Env is added to this program's environment for the process
	// (KEY=VALUE; the last of a duplicate key wins).
	Env []string
	// Detached starts the process in a session of its own, so that it
	// outlives the program that starts it. Otherwise it is attached: on
	// Linux the kernel SIGKILLs it when that program dies, even
	// unexpectedly; elsewhere that program must stop it itself.
	Detached bool
	// Header writes, before the process starts, a line to LogFile that
	// says when and what: "=== 2006-01-02 15:04:05 launch: starting KIND ID".
	Header bool
}

// LocalProc is a gavel process on this machine: one that StartLocal
// started, or one that a pid file of the host agent names.
type LocalProc struct {
	id   string
	pid  int
	proc *os.Process // nil for a process this program did not start
	// exited is closed once a process this program started has exited;
	// nil for one it did not start.
	exited chan struct{}
}

// StartLocal starts the process of spec and returns it. This program
// reaps it when it exits, for as long as this program runs.
func StartLocal(spec ProcSpec) (*LocalProc, error) {
	if err := os.MkdirAll(filepath.Dir(spec.LogFile), 0o755); err != nil {
		return nil, err
	}
	log, err := os.OpenFile(spec.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer log.Close() // the process has a copy of its own
	if spec.Header {
		fmt.Fprintf(log, "=== %s launch: starting %s %s\n", time.Now().Format("2006-01-02 15:04:05"), spec.Kind, spec.ID)
	}
	cmd := exec.Command(spec.Gavel, spec.Kind, "--id", spec.ID, "--config", spec.Config)
	cmd.Dir = spec.Dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), spec.Env...)
	if spec.Detached {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	} else {
		cmd.SysProcAttr = attachedAttr()
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &LocalProc{id: spec.ID, pid: cmd.Process.Pid, proc: cmd.Process, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	return p, nil
}

// pidProc is process id at pid, as a pid file names it: it counts as
// running while isProc says so.
func pidProc(pid int, id string) *LocalProc { return &LocalProc{id: id, pid: pid} }

// PID returns the process's pid.
func (p *LocalProc) PID() int { return p.pid }

// Signal sends sig to the process and waits up to wait for it to exit; it
// reports whether the process is gone.
func (p *LocalProc) Signal(sig syscall.Signal, wait time.Duration) bool {
	_ = p.signal(sig)
	return p.waitGone(time.Now().Add(wait))
}

// Kill SIGKILLs the process and waits until it is gone; the error wraps
// ErrStillRunning when it still runs 5 seconds later.
func (p *LocalProc) Kill() error {
	if !p.Signal(syscall.SIGKILL, killWait) {
		return fmt.Errorf("%s %w %v after SIGKILL", p.id, ErrStillRunning, killWait)
	}
	return nil
}

// Stop sends the process SIGTERM, then SIGKILL when it still runs after
// wait, and reports whether it is gone.
func (p *LocalProc) Stop(wait time.Duration) bool {
	stopLocal([]*LocalProc{p}, false, wait)
	return !p.running()
}

// signal sends sig to the process.
func (p *LocalProc) signal(sig syscall.Signal) error {
	if p.proc != nil {
		return p.proc.Signal(sig)
	}
	return syscall.Kill(p.pid, sig)
}

// running reports whether the process runs.
func (p *LocalProc) running() bool {
	if p.exited != nil {
		select {
		case <-p.exited:
			return false
		default:
			return true
		}
	}
	return isProc(p.pid, p.id)
}

// waitGone waits until the process is gone or deadline has passed, and
// reports whether it is gone.
func (p *LocalProc) waitGone(deadline time.Time) bool {
	if p.exited == nil {
		for p.running() {
			if !time.Now().Before(deadline) {
				return false
			}
			time.Sleep(50 * time.Millisecond)
		}
		return true
	}
	if !p.running() {
		return true
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		return false
	}
}

// stopLocal stops ps together: SIGTERM (SIGKILL with kill) to each,
// then, to those that still run after wait, SIGKILL, and it waits up to
// killWait more for them. It returns what it last sent each process:
// "TERM" (it stopped), "KILL" (it needed SIGKILL), "" (it was not
// running).
func stopLocal(ps []*LocalProc, kill bool, wait time.Duration) []string {
	sig, name := syscall.SIGTERM, "TERM"
	if kill {
		sig, name = syscall.SIGKILL, "KILL"
	}
	sent := make([]string, len(ps))
	for i, p := range ps {
		if p.signal(sig) == nil {
			sent[i] = name
		}
	}
	waitAll := func(deadline time.Time) {
		for i, p := range ps {
			if sent[i] != "" && !p.waitGone(deadline) {
				return
			}
		}
	}
	waitAll(time.Now().Add(wait))
	for i, p := range ps {
		if sent[i] != "" && p.running() {
			_ = p.signal(syscall.SIGKILL)
			sent[i] = "KILL"
		}
	}
	waitAll(time.Now().Add(killWait))
	return sent
}

// StopOrder splits items into the stages in which to stop them: the
// gateways first, then the nodes (and items of any other kind), the
// masters last. kind tells an item's kind; each stage keeps the order of
// items, and there are always three, some maybe empty.
func StopOrder[T any](items []T, kind func(T) string) [][]T {
	stages := make([][]T, 3)
	for _, it := range items {
		s := 1
		switch kind(it) {
		case "gateway":
			s = 0
		case "master":
			s = 2
		}
		stages[s] = append(stages[s], it)
	}
	return stages
}
