package launch

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/config"
)

// testConfig loads a configuration from yaml, written to a temporary
// directory, which it also returns.
func testConfig(t *testing.T, yaml string) (*config.Config, string) {
	t.Helper()
	dir := t.TempDir()
	path := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, dir
}

// withTLS is a tls: section for testConfig, with TLS on: the launcher
// refuses processes beyond loopback without it. writeTLSFiles writes the
// files it names (empty: the launcher checks only that they exist).
const withTLS = "tls:\n  ca: certs/ca.crt\n"

// writeTLSFiles writes empty files in dir for the CA, the tools and ids,
// at the paths withTLS names.
func writeTLSFiles(t *testing.T, dir string, ids ...string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o755); err != nil {
		t.Fatal(err)
	}
	files := []string{"ca.crt"}
	for _, id := range append([]string{"client", "admin"}, ids...) {
		files = append(files, id+".crt", id+".key")
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, "certs", f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
}

// newTest returns a launcher of cfg in dir, with its output in out.
func newTest(t *testing.T, cfg *config.Config, dir string, out *bytes.Buffer) *Launcher {
	t.Helper()
	l, err := New(Options{Config: cfg, ConfigPath: cfg.File, Dir: dir, Gavel: "/bin/false", Stdout: out, Stderr: out,
		StopWait: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestShQuote(t *testing.T) {
	for in, want := range map[string]string{
		"bin/gavel":      "bin/gavel",
		"127.0.0.1:7101": "127.0.0.1:7101",
		"":               "''",
		"a b":            "'a b'",
		"it's":           `'it'\''s'`,
		"$(reboot)":      "'$(reboot)'",
	} {
		if got := shQuote(in); got != want {
			t.Errorf("shQuote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestSplitSSH(t *testing.T) {
	for in, want := range map[string][2]string{
		"10.0.0.2":      {"10.0.0.2", ""},
		"10.0.0.2:2222": {"10.0.0.2", "2222"},
		"db.example":    {"db.example", ""},
		"[::1]:22":      {"::1", "22"},
		"::1":           {"::1", ""},
	} {
		h, p := splitSSH(in)
		if h != want[0] || p != want[1] {
			t.Errorf("splitSSH(%q) = %q %q, want %q %q", in, h, p, want[0], want[1])
		}
	}
}

// The ssh and scp command lines carry every option of the hosts: entry.
func TestSSHArgs(t *testing.T) {
	h := &sshHost{name: "h1", host: "10.0.0.2", port: "2222", user: "gavel", identity: "/k/id", knownHosts: "/k/kh", dir: "/opt/gavel"}
	got := strings.Join(h.sshArgs("true"), " ")
	want := "-o BatchMode=yes -o ConnectTimeout=5 -i /k/id -o UserKnownHostsFile=/k/kh -o StrictHostKeyChecking=yes -p 2222 -l gavel -- 10.0.0.2 true"
	if got != want {
		t.Errorf("ssh args\n got %s\nwant %s", got, want)
	}
	got = strings.Join(h.scpArgs("/a/b", "/opt/gavel/x"), " ")
	want = "-q -o BatchMode=yes -o ConnectTimeout=5 -i /k/id -o UserKnownHostsFile=/k/kh -o StrictHostKeyChecking=yes -P 2222 -o User=gavel -- /a/b 10.0.0.2:/opt/gavel/x"
	if got != want {
		t.Errorf("scp args\n got %s\nwant %s", got, want)
	}
	bare := &sshHost{name: "h2", host: "::1", dir: "/d"}
	if got, want := strings.Join(bare.sshArgs("true"), " "), "-o BatchMode=yes -o ConnectTimeout=5 -- ::1 true"; got != want {
		t.Errorf("bare ssh args %q, want %q", got, want)
	}
	if got := bare.scpArgs("f", "/d/f"); got[len(got)-1] != "[::1]:/d/f" {
		t.Errorf("scp target %q, want [::1]:/d/f", got[len(got)-1])
	}
	if got, want := bare.remote("x"), "mkdir -p /d && cd /d && x"; got != want {
		t.Errorf("remote %q, want %q", got, want)
	}
}

// Every address a process binds comes with the key that sets it.
func TestProcsKeys(t *testing.T) {
	cfg, _ := testConfig(t, `
hosts:
  - name: h1
    ssh: 10.0.0.2
    dir: /opt/gavel
masters:
  - id: m1
    addr: 10.0.0.2:7201
    raft_addr: 10.0.0.2:7301
    raft_listen_addr: 0.0.0.0:7301
    http_addr: 10.0.0.2:7211
    host: h1
nodes:
  - id: n1
    addr: 10.0.0.9:7101
    listen_addr: 0.0.0.0:7101
gateways:
  - id: g1
    addr: 127.0.0.1:7401
`)
	ps := Procs(cfg)
	if got := strings.Join(ids(ps), " "); got != "m1 n1 g1" {
		t.Fatalf("procs %s, want m1 n1 g1", got)
	}
	want := [][]config.BindAddr{
		{{Addr: "10.0.0.2:7201", Key: "masters[0].addr"}, {Addr: "0.0.0.0:7301", Key: "masters[0].raft_listen_addr"}, {Addr: "10.0.0.2:7211", Key: "masters[0].http_addr"}},
		{{Addr: "0.0.0.0:7101", Key: "nodes[0].listen_addr"}},
		{{Addr: "127.0.0.1:7401", Key: "gateways[0].addr"}},
	}
	for i, p := range ps {
		if !slices.Equal(p.Binds, want[i]) {
			t.Errorf("%s binds %v, want %v", p.ID, p.Binds, want[i])
		}
	}
	if ps[0].Host != "h1" || ps[0].DataDir != ".run/data/m1" {
		t.Errorf("m1: host %q data %q", ps[0].Host, ps[0].DataDir)
	}
}

func TestProbe(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	free, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	freeAddr := free.Addr().String()
	free.Close()
	got := Probe([]string{lis.Addr().String(), freeAddr, "192.0.2.1:7101"})
	if len(got) != 2 || got[0] != lis.Addr().String()+" taken" || !strings.HasPrefix(got[1], "192.0.2.1:7101 cannot bind: ") {
		t.Errorf("Probe = %q", got)
	}
}

// sleeper starts a process whose command line holds --id id, in the
// current directory or else in dir, and returns it; it is killed when the
// test ends.
func sleeper(t *testing.T, id string, dir ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 30; :", "sh", "--id", id)
	if len(dir) > 0 {
		cmd.Dir = dir[0]
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-done })
	return cmd
}

// A pid file whose pid is not gavel's process of that id in this
// directory is never signalled: ps says it does not run, stop leaves it
// alone.
func TestAgentPIDSafety(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.MkdirAll(runDir, 0o755); err != nil {
		t.Fatal(err)
	}
	mine := sleeper(t, "n1")
	other := sleeper(t, "n9")                  // another program, as far as n2 is concerned
	elsewhere := sleeper(t, "n4", t.TempDir()) // n4 of a cluster in another directory
	write := func(id string, pid int) {
		if err := os.WriteFile(pidPath(id), []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("n1", mine.Process.Pid)
	write("n2", other.Process.Pid)
	write("n3", 1<<22+7) // no such pid
	write("n4", elsewhere.Process.Pid)

	resp := serve(agentRequest{Op: "ps"}, "")
	alive := map[string]bool{}
	for _, p := range resp.Procs {
		alive[p.ID] = p.Alive
	}
	if !alive["n1"] || alive["n2"] || alive["n3"] || alive["n4"] || len(resp.Procs) != 4 {
		t.Fatalf("ps = %+v, want n1 alive, n2, n3 and n4 not", resp.Procs)
	}

	resp = serve(agentRequest{Op: "stop", IDs: []string{"n1", "n2", "n3", "n4"}, Wait: time.Second}, "")
	for _, p := range resp.Procs {
		if want := map[string]string{"n1": "TERM"}[p.ID]; p.Signal != want {
			t.Errorf("stop %s: signal %q, want %q", p.ID, p.Signal, want)
		}
	}
	if syscall.Kill(other.Process.Pid, 0) != nil {
		t.Error("stop n2 killed another program whose pid was in n2's pid file")
	}
	if syscall.Kill(elsewhere.Process.Pid, 0) != nil {
		t.Error("stop n4 killed the n4 of another directory")
	}
	if _, err := os.Stat(pidPath("n1")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("n1's pid file is still there: %v", err)
	}
}

// rmdata deletes a master data dir only when it holds raft.db or nothing.
func TestAgentRmdata(t *testing.T) {
	t.Chdir(t.TempDir())
	for d, file := range map[string]string{"raft": "raft.db", "other": "precious.txt", "empty": ""} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if file != "" {
			if err := os.WriteFile(filepath.Join(d, file), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	resp := serve(agentRequest{Op: "rmdata", Dirs: []string{"raft", "other", "empty", "missing"}}, "")
	got := map[string]bool{}
	for _, d := range resp.Dirs {
		got[d.Dir] = d.Deleted
	}
	want := map[string]bool{"raft": true, "other": false, "empty": true, "missing": false}
	for d, w := range want {
		if got[d] != w {
			t.Errorf("%s deleted %v, want %v", d, got[d], w)
		}
	}
	if _, err := os.Stat("other/precious.txt"); err != nil {
		t.Error("rmdata deleted a dir without raft.db")
	}
}

// A missing ssh key or known_hosts file is named with its key before any
// host is contacted.
func TestMissingKeyNamed(t *testing.T) {
	cfg, dir := testConfig(t, `
hosts:
  - name: h1
    ssh: 127.0.0.1:1
    dir: /tmp/gavel-h1
  - name: h2
    ssh: 127.0.0.1:2
    key: keys/nope
    known_hosts: keys/kh-nope
    dir: /tmp/gavel-h2
nodes:
  - id: n1
    addr: 127.0.0.1:7101
    host: h2
`+withTLS)
	writeTLSFiles(t, dir, "n1")
	var out bytes.Buffer
	l := newTest(t, cfg, dir, &out)
	err := l.Up(context.Background())
	if !errors.Is(err, ErrMissingFile) {
		t.Fatalf("Up: %v, want ErrMissingFile", err)
	}
	for _, want := range []string{
		"host h2 (hosts[1].key = keys/nope in " + cfg.File + "): file not found: " + filepath.Join(dir, "keys/nope") + " (the ssh private key)",
		"host h2 (hosts[1].known_hosts = keys/kh-nope in " + cfg.File + "): file not found",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if errors.Is(err, ErrUnreachable) {
		t.Errorf("Up contacted a host before checking the key files: %v", err)
	}
}

// An ssh host that does not answer fails Up before anything starts, naming
// hosts[i].ssh.
func TestUnreachableHostNamed(t *testing.T) {
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Fatal("ssh is not installed (apt-get install openssh-client)")
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	cfg, dir := testConfig(t, fmt.Sprintf(`
hosts:
  - name: h1
    dir: here
  - name: h2
    ssh: 127.0.0.1:1
    dir: /tmp/gavel-h2
nodes:
  - id: n1
    addr: %s
    host: h1
  - id: n2
    addr: 127.0.0.1:7102
    host: h2
`+withTLS, lis.Addr()))
	writeTLSFiles(t, dir, "n1", "n2")
	var out bytes.Buffer
	l := newTest(t, cfg, dir, &out)
	start := time.Now()
	err = l.Up(context.Background())
	if !errors.Is(err, ErrUnreachable) {
		t.Fatalf("Up: %v, want ErrUnreachable", err)
	}
	want := "host h2 (hosts[1].ssh = 127.0.0.1:1 in " + cfg.File + "): unreachable: ssh: connect to host 127.0.0.1 port 1: Connection refused"
	if err.Error() != want {
		t.Errorf("error\n got %s\nwant %s", err, want)
	}
	if _, err := os.Stat(filepath.Join(dir, "here", runDir)); err == nil {
		t.Errorf("Up touched host h1 before every host was checked")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Up took %v to find the host unreachable", d)
	}
}

// homeSSH is an ssh that runs the remote command on this machine, starting
// in $FAKE_HOME as a real ssh starts in the login's home; homeSCP copies
// there likewise.
const homeSSH = `#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -o|-i|-p|-l) shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
shift
cd "$FAKE_HOME" && exec sh -c "$1"
`

const homeSCP = `#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -q) shift ;;
    -o|-i|-P) shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
for target; do :; done
cd "$FAKE_HOME" || exit 1
while [ $# -gt 1 ]; do cp -L "$1" "${target#*:}" || exit 1; shift; done
`

// A hosts: dir that is relative, or starts with ~/, is relative to the
// ssh login's home: Put puts every file under it, at its path relative to
// it, and leaves no staging directory behind.
func TestPutRelativeDir(t *testing.T) {
	tools := t.TempDir()
	for name, script := range map[string]string{"ssh": homeSSH, "scp": homeSCP} {
		if err := os.WriteFile(filepath.Join(tools, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	src := filepath.Join(tools, "payload")
	if err := os.WriteFile(src, []byte("gavel"), 0o644); err != nil {
		t.Fatal(err)
	}
	for dir, under := range map[string]string{"gavel": "gavel", "~/opt/gavel": "opt/gavel", "~": "."} {
		home := t.TempDir()
		t.Setenv("FAKE_HOME", home)
		h := &sshHost{name: "h1", key: "hosts[0]", host: "h1.test", dir: dir,
			ssh: filepath.Join(tools, "ssh"), scp: filepath.Join(tools, "scp")}
		err := h.Put(context.Background(), []File{{Local: src, Remote: "bin/gavel", Mode: 0o755},
			{Local: src, Remote: "certs/n1.key", Mode: 0o600}})
		if err != nil {
			t.Fatalf("dir %s: Put: %v", dir, err)
		}
		for f, mode := range map[string]os.FileMode{"bin/gavel": 0o755, "certs/n1.key": 0o600} {
			st, err := os.Stat(filepath.Join(home, under, f))
			if err != nil {
				t.Errorf("dir %s: %v", dir, err)
			} else if st.Mode().Perm() != mode {
				t.Errorf("dir %s: %s has mode %v, want %v", dir, f, st.Mode().Perm(), mode)
			}
		}
		if left, _ := filepath.Glob(filepath.Join(home, under, runDir, ".launch-put-*")); len(left) > 0 {
			t.Errorf("dir %s: staging left behind: %v", dir, left)
		}
	}
}

// start gives the process the GAVEL_* variables of the request over the
// host's own: a remote process reads the configuration the launcher read.
func TestAgentStartEnv(t *testing.T) {
	t.Chdir(t.TempDir())
	t.Setenv("GAVEL_LOG_LEVEL", "info") // the host's own, overridden
	gavel, err := filepath.Abs("fake-gavel")
	if err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\necho \"$* secret=$GAVEL_AUTH_SECRET level=$GAVEL_LOG_LEVEL\"\n"
	if err := os.WriteFile(gavel, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	resp := serve(agentRequest{Op: "start", Kind: "gateway", ID: "g1", Config: "config.yaml",
		Env: []string{"GAVEL_AUTH_SECRET=s3cret", "GAVEL_LOG_LEVEL=debug"}}, gavel)
	if resp.Error != "" || resp.PID == 0 {
		t.Fatalf("start: %+v", resp)
	}
	want := "gateway --id g1 --config config.yaml secret=s3cret level=debug"
	for end := time.Now().Add(5 * time.Second); ; {
		b, _ := os.ReadFile(logPath("g1"))
		if strings.Contains(string(b), want) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("g1's log %q does not hold %q", b, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Without TLS the launcher starts nothing unless the configuration says
// insecure: true, and then only on loopback: a process beyond it (an
// address that is not loopback, a host reached over ssh) needs TLS.
func TestPlaintextStaysOnLoopback(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		err        error
		want       string
	}{
		{"no insecure", "nodes:\n  - {id: n1, addr: \"127.0.0.1:7101\"}\n", config.ErrPlaintext,
			": insecure: tls.ca is not set"},
		{"an address beyond loopback", "insecure: true\nnodes:\n  - {id: n1, addr: \"127.0.0.1:7101\"}\n" +
			"  - {id: n2, addr: \"10.1.2.3:7102\"}\n", ErrNeedsTLS, "node n2 listens or is reached at 10.1.2.3:7102"},
		{"a wildcard listener", "insecure: true\nnodes:\n  - {id: n1, addr: \"127.0.0.1:7101\", listen_addr: \"0.0.0.0:7101\"}\n",
			ErrNeedsTLS, "node n1 listens or is reached at 0.0.0.0:7101"},
		{"an ssh host", "insecure: true\nhosts:\n  - {name: h1, ssh: \"127.0.0.1:1\", dir: /tmp/x}\n" +
			"nodes:\n  - {id: n1, addr: \"127.0.0.1:7101\", host: h1}\n", ErrNeedsTLS, "node n1 runs on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, dir := testConfig(t, tc.yaml)
			var out bytes.Buffer
			l := newTest(t, cfg, dir, &out)
			err := l.Up(context.Background())
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Up: %v, want %v saying %q", err, tc.err, tc.want)
			}
			if _, serr := os.Stat(filepath.Join(dir, runDir)); serr == nil {
				t.Errorf("Up touched the launching directory before refusing")
			}
			if err := l.Restart(context.Background(), "n1"); !errors.Is(err, tc.err) && tc.name != "an address beyond loopback" {
				t.Errorf("Restart n1: %v, want %v", err, tc.err)
			}
		})
	}
	if got := onLoopback("localhost:1"); !got {
		t.Error("localhost is loopback")
	}
	if got := onLoopback("[::1]:1"); !got {
		t.Error("::1 is loopback")
	}
}
