package launch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Host is a machine that processes of the configuration run on: the
// launching machine, or one reached over ssh. Every command runs in the
// host's working directory. Implementations are safe for concurrent use.
type Host interface {
	// Name is the name of the hosts: entry, "" for the launching machine.
	Name() string
	// Where names the host in messages: "host h1", or "the launching
	// machine".
	Where() string
	// Dir is the working directory on the host.
	Dir() string
	// Remote reports whether the host is reached over ssh.
	Remote() bool
	// Gavel is the gavel binary on the host, as a shell word.
	Gavel() string
	// Run runs the shell script in Dir with stdin (may be nil) as its
	// input and returns its standard output. A script that fails returns
	// an error that carries its standard error; a host that cannot be
	// reached returns an error wrapping ErrUnreachable.
	Run(ctx context.Context, script string, stdin io.Reader) ([]byte, error)
	// Stream runs the shell script in Dir with its output going to stdout
	// and stderr, until it ends or ctx is done.
	Stream(ctx context.Context, script string, stdout, stderr io.Writer) error
	// Put copies files from the launching machine to the host, each only
	// when the host's copy differs (by SHA-256), replacing it atomically
	// so that a running binary is never overwritten in place.
	Put(ctx context.Context, files []File) error
	// Close ends what the host keeps open (an ssh connection).
	Close() error
}

// File is one file that Put copies: Local on the launching machine, to
// Remote on the host (relative to its Dir unless absolute), with Mode.
type File struct {
	Local, Remote string
	Mode          os.FileMode
}

// shQuote quotes s as one word for a POSIX shell.
func shQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:=@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// lastLine is the last non-empty line of b, trimmed: the gist of a
// command's standard error.
func lastLine(b []byte) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.TrimSpace(lines[len(lines)-1])
}

// fileSum returns the hex SHA-256 of the file at path.
func fileSum(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// ---------------------------------------------------------------------------
// The launching machine.

// localHost runs commands with sh on the launching machine.
type localHost struct {
	name  string // hosts: entry, "" for processes without host:
	dir   string // absolute working directory
	gavel string // the gavel binary, absolute
}

var _ Host = (*localHost)(nil)

func (h *localHost) Name() string { return h.name }

func (h *localHost) Where() string {
	if h.name == "" {
		return "the launching machine"
	}
	return "host " + h.name
}

func (h *localHost) Dir() string   { return h.dir }
func (h *localHost) Remote() bool  { return false }
func (h *localHost) Gavel() string { return shQuote(h.gavel) }

func (h *localHost) command(ctx context.Context, script string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir = h.dir
	return cmd
}

func (h *localHost) Run(ctx context.Context, script string, stdin io.Reader) ([]byte, error) {
	if err := os.MkdirAll(h.dir, 0o755); err != nil {
		return nil, err
	}
	cmd := h.command(ctx, script)
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stderr = stdin, &stderr
	out, err := cmd.Output()
	if err != nil {
		if msg := lastLine(stderr.Bytes()); msg != "" {
			return out, fmt.Errorf("%s", msg)
		}
		return out, err
	}
	return out, nil
}

func (h *localHost) Stream(ctx context.Context, script string, stdout, stderr io.Writer) error {
	cmd := h.command(ctx, script)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return cmd.Run()
}

// Close does nothing: the launching machine keeps nothing open.
func (h *localHost) Close() error { return nil }

func (h *localHost) Put(_ context.Context, files []File) error {
	for _, f := range files {
		dst := f.Remote
		if !filepath.IsAbs(dst) {
			dst = filepath.Join(h.dir, dst)
		}
		if same, _ := sameFile(f.Local, dst); same {
			continue
		}
		if err := copyFile(f.Local, dst, f.Mode); err != nil {
			return err
		}
	}
	return nil
}

// sameFile reports whether the files at a and b have the same content.
func sameFile(a, b string) (bool, error) {
	sa, err := fileSum(a)
	if err != nil {
		return false, err
	}
	sb, err := fileSum(b)
	if err != nil {
		return false, err
	}
	return sa == sb, nil
}

// copyFile copies src to dst through a temporary file in dst's directory
// and a rename, so that a process running dst keeps its old file.
func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".launch-put-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// ---------------------------------------------------------------------------
// Hosts reached over ssh.

// sshHost runs commands on a machine with the system's ssh and copies
// files there with its scp.
type sshHost struct {
	name       string
	key        string // "hosts[i]", for messages
	file       string // config file, for messages
	addr       string // hosts[i].ssh as written
	host, port string // from addr; port may be ""
	user       string
	identity   string // private key path, ~ expanded; may be ""
	knownHosts string // known_hosts path, ~ expanded; may be ""
	dir        string
	ssh, scp   string // programs
	// muxDir holds the socket of the connection that every command to
	// the host shares (ssh -M); "" runs each on its own connection.
	muxDir string

	muxOnce sync.Once
	mux     *exec.Cmd // the shared connection's ssh -M; nil when none
	muxErr  error     // why the host could not be reached
	muxDone chan struct{}
}

var _ Host = (*sshHost)(nil)

// seq numbers the temporary files that Put copies, unique in this process.
var seq atomic.Uint64

// splitSSH splits hosts[i].ssh into host and port ("" when none is given).
func splitSSH(addr string) (host, port string) {
	if h, p, err := net.SplitHostPort(addr); err == nil {
		return h, p
	}
	return strings.Trim(addr, "[]"), ""
}

// expandHome replaces a leading ~/ by the user's home directory.
func expandHome(path string) string {
	if path == "~" || strings.HasPrefix(path, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, path[1:])
		}
	}
	return path
}

func (h *sshHost) Name() string  { return h.name }
func (h *sshHost) Where() string { return "host " + h.name }
func (h *sshHost) Dir() string   { return h.dir }
func (h *sshHost) Remote() bool  { return true }
func (h *sshHost) Gavel() string { return "bin/gavel" }

// options are the options that ssh and scp share.
func (h *sshHost) options() []string {
	o := []string{"-o", "BatchMode=yes", "-o", "ConnectTimeout=5"}
	if h.identity != "" {
		o = append(o, "-i", h.identity)
	}
	if h.knownHosts != "" {
		o = append(o, "-o", "UserKnownHostsFile="+h.knownHosts, "-o", "StrictHostKeyChecking=yes")
	}
	if h.muxDir != "" {
		o = append(o, "-o", "ControlPath="+h.socket())
	}
	return o
}

// socket is the path of the shared connection's control socket.
func (h *sshHost) socket() string { return filepath.Join(h.muxDir, h.name) }

// connect opens, once, the connection that the host's commands share: an
// ssh master (ssh -M -N) that lives until Close. It returns the error of
// a host that cannot be reached. Without muxDir it does nothing.
func (h *sshHost) connect(ctx context.Context) error {
	h.muxOnce.Do(func() {
		if h.muxDir == "" {
			return
		}
		args := append(h.options(), "-o", "ControlMaster=yes", "-o", "ControlPersist=no", "-N")
		if h.port != "" {
			args = append(args, "-p", h.port)
		}
		if h.user != "" {
			args = append(args, "-l", h.user)
		}
		cmd := exec.Command(h.ssh, append(args, "--", h.host)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			h.muxErr = h.unreachable(nil, err)
			return
		}
		done := make(chan struct{})
		var werr error
		go func() { werr = cmd.Wait(); close(done) }()
		// The master is ready once its socket exists; it exits when the
		// host cannot be reached.
		for end := time.Now().Add(15 * time.Second); ; {
			if _, err := os.Stat(h.socket()); err == nil {
				h.mux, h.muxDone = cmd, done
				return
			}
			select {
			case <-done:
				h.muxErr = h.unreachable(stderr.Bytes(), werr)
				return
			case <-ctx.Done():
				_ = cmd.Process.Kill()
				<-done
				h.muxErr = ctx.Err()
				return
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(end) {
				// No socket but no failure either: go without sharing.
				_ = cmd.Process.Kill()
				<-done
				return
			}
		}
	})
	return h.muxErr
}

// Close ends the shared connection.
func (h *sshHost) Close() error {
	h.muxOnce.Do(func() {}) // no connection opens after Close
	if h.mux != nil {
		_ = h.mux.Process.Kill()
		<-h.muxDone
		h.mux = nil
	}
	return nil
}

// sshArgs is the argument list of ssh running the remote command line.
func (h *sshHost) sshArgs(remote string) []string {
	args := h.options()
	if h.port != "" {
		args = append(args, "-p", h.port)
	}
	if h.user != "" {
		args = append(args, "-l", h.user)
	}
	return append(args, "--", h.host, remote)
}

// scpArgs is the argument list of scp copying local to the host's path.
func (h *sshHost) scpArgs(local, path string) []string {
	args := append([]string{"-q"}, h.options()...)
	if h.port != "" {
		args = append(args, "-P", h.port)
	}
	if h.user != "" {
		args = append(args, "-o", "User="+h.user)
	}
	host := h.host
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return append(args, "--", local, host+":"+path)
}

// workDir is the working directory as the host's commands name it. ssh
// and scp start in the login's home, so a relative dir is relative to it;
// a leading ~/ is dropped, since quoting keeps the shell from expanding it.
func (h *sshHost) workDir() string {
	if h.dir == "~" || strings.HasPrefix(h.dir, "~/") {
		if d := strings.TrimLeft(h.dir[1:], "/"); d != "" {
			return d
		}
		return "."
	}
	return h.dir
}

// remote is the command line that ssh hands to the host's shell: script,
// in the working directory (created if need be).
func (h *sshHost) remote(script string) string {
	wd := shQuote(h.workDir())
	return "mkdir -p " + wd + " && cd " + wd + " && " + script
}

// unreachable is the error for an ssh that could not reach the host.
func (h *sshHost) unreachable(stderr []byte, err error) error {
	msg := lastLine(stderr)
	if msg == "" {
		msg = err.Error()
	}
	return fmt.Errorf("host %s (%s.ssh = %s in %s): %w: %s", h.name, h.key, h.addr, h.file, ErrUnreachable, msg)
}

// sshFailed is ssh's exit status when ssh itself fails (connection,
// authentication, host key), rather than the remote command.
const sshFailed = 255

func (h *sshHost) Run(ctx context.Context, script string, stdin io.Reader) ([]byte, error) {
	if err := h.connect(ctx); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, h.ssh, h.sshArgs(h.remote(script))...)
	var stderr bytes.Buffer
	cmd.Stdin, cmd.Stderr = stdin, &stderr
	out, err := cmd.Output()
	if err != nil {
		var xe *exec.ExitError
		if errors.As(err, &xe) && xe.ExitCode() != sshFailed {
			if msg := lastLine(stderr.Bytes()); msg != "" {
				return out, fmt.Errorf("on host %s: %s", h.name, msg)
			}
			return out, fmt.Errorf("on host %s: %v", h.name, err)
		}
		return out, h.unreachable(stderr.Bytes(), err)
	}
	return out, nil
}

func (h *sshHost) Stream(ctx context.Context, script string, stdout, stderr io.Writer) error {
	if err := h.connect(ctx); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, h.ssh, h.sshArgs(h.remote(script))...)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	return cmd.Run()
}

func (h *sshHost) Put(ctx context.Context, files []File) error {
	if len(files) == 0 {
		return nil
	}
	// One round trip for the host's sums (and a staging directory), one
	// scp of the changed files, one round trip to move them into place.
	stage := fmt.Sprintf(".run/.launch-put-%d-%d", os.Getpid(), seq.Add(1))
	var list strings.Builder
	for _, f := range files {
		list.WriteString(" " + shQuote(f.Remote))
	}
	out, err := h.Run(ctx, "mkdir -p "+stage+" && { sha256sum --"+list.String()+" 2>/dev/null; true; }", nil)
	if err != nil {
		return err
	}
	have := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if sum, path, ok := strings.Cut(strings.TrimSpace(line), "  "); ok {
			have[path] = sum
		}
	}
	// The changed files go through local symbolic links named 0, 1, ...,
	// so that one scp copies them all into the staging directory.
	local, err := os.MkdirTemp("", "gavel-put-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(local)
	// The moves run in the working directory, where f.Remote is relative
	// to, like stage.
	var srcs []string
	moves := "true"
	for _, f := range files {
		sum, err := fileSum(f.Local)
		if err != nil {
			return err
		}
		if have[f.Remote] == sum {
			continue
		}
		name := strconv.Itoa(len(srcs))
		abs, err := filepath.Abs(f.Local)
		if err != nil {
			return err
		}
		if err := os.Symlink(abs, filepath.Join(local, name)); err != nil {
			return err
		}
		srcs = append(srcs, filepath.Join(local, name))
		staged := stage + "/" + name
		moves += fmt.Sprintf(" && mkdir -p %s && chmod %s %s && mv -f %s %s",
			shQuote(filepath.Dir(f.Remote)), strconv.FormatUint(uint64(f.Mode.Perm()), 8), staged, staged, shQuote(f.Remote))
	}
	if len(srcs) > 0 {
		args := h.scpArgs(srcs[0], filepath.Join(h.workDir(), stage)+"/")
		args = append(args[:len(args)-2], append(srcs, args[len(args)-1])...)
		cmd := exec.CommandContext(ctx, h.scp, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			_, _ = h.Run(ctx, "rm -rf "+stage, nil)
			return fmt.Errorf("copying files to host %s: %w: %s", h.name, ErrUnreachable, lastLine(stderr.Bytes()))
		}
	}
	_, err = h.Run(ctx, moves+" && rmdir "+stage, nil)
	return err
}
