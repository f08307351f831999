package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// These tests run gavel launch for real: they start masters, nodes and a
// gateway on loopback from a config with ports from below the ephemeral
// range, in the test's own directory, and end with `gavel launch down`.

// testGavel is a gavel binary built once for the tests that launch
// processes.
var testGavel struct {
	once sync.Once
	path string
	err  error
}

// TestMain removes the gavel binary that the launch tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if testGavel.path != "" {
		os.RemoveAll(filepath.Dir(testGavel.path))
	}
	os.Exit(code)
}

// gavelBinary builds gavel (once per test binary) and returns its path.
func gavelBinary(t *testing.T) string {
	t.Helper()
	testGavel.once.Do(func() {
		dir, err := os.MkdirTemp("", "gavel-launch-bin")
		if err != nil {
			testGavel.err = err
			return
		}
		testGavel.path = filepath.Join(dir, "gavel")
		out, err := exec.Command("go", "build", "-o", testGavel.path, ".").CombinedOutput()
		if err != nil {
			testGavel.err = fmt.Errorf("building gavel: %v\n%s", err, out)
		}
	})
	if testGavel.err != nil {
		t.Fatal(testGavel.err)
	}
	return testGavel.path
}

// launchPorts hands out loopback ports below the ephemeral range (32768
// and up on Linux), from a random start, never the same twice.
var launchPorts struct {
	sync.Mutex
	next int
}

// launchPort returns a loopback address that was free a moment ago.
func launchPort(t *testing.T) string {
	t.Helper()
	launchPorts.Lock()
	defer launchPorts.Unlock()
	if launchPorts.next == 0 {
		launchPorts.next = 20000 + rand.IntN(10000)
	}
	for range 2000 {
		p := launchPorts.next
		launchPorts.next++
		if launchPorts.next >= 32000 {
			launchPorts.next = 20000
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue
		}
		l.Close()
		return l.Addr().String()
	}
	t.Fatal("no free loopback port in 20000-32000")
	return ""
}

// launchEnv is one launcher test: its directory (the launching directory,
// holding config.yaml) and the addresses of its processes.
type launchEnv struct {
	t     *testing.T
	dir   string
	addrs map[string]string // id -> addr
	// hostDirs are the working directories of the test's other hosts.
	hostDirs []string
}

// newLaunchEnv writes config.yaml with three masters, three nodes and one
// gateway on loopback, short timeouts, and extra appended (hosts:, or a
// process's host: through place), changes into its directory and
// registers `gavel launch down` for the end of the test. place maps a
// process id to its host: entry.
func newLaunchEnv(t *testing.T, extra string, place map[string]string) *launchEnv {
	t.Helper()
	le := &launchEnv{t: t, dir: t.TempDir(), addrs: map[string]string{}}
	launchGavel = gavelBinary(t)
	t.Cleanup(func() { launchGavel, launchSSH, launchSCP = "", "ssh", "scp" })
	host := func(id string) string {
		if h := place[id]; h != "" {
			return "    host: " + h + "\n"
		}
		return ""
	}
	var b strings.Builder
	b.WriteString("cluster:\n  name: launch-test\ninsecure: true\nmasters:\n")
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("m%d", i)
		le.addrs[id] = launchPort(t)
		fmt.Fprintf(&b, "  - id: %s\n    addr: %s\n    raft_addr: %s\n    http_addr: %s\n    data_dir: data/%s\n%s",
			id, le.addrs[id], launchPort(t), launchPort(t), id, host(id))
	}
	b.WriteString("nodes:\n")
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("n%d", i)
		le.addrs[id] = launchPort(t)
		fmt.Fprintf(&b, "  - id: %s\n    addr: %s\n    http_addr: %s\n%s", id, le.addrs[id], launchPort(t), host(id))
	}
	le.addrs["g1"] = launchPort(t)
	fmt.Fprintf(&b, "gateways:\n  - id: g1\n    addr: %s\n%s", le.addrs["g1"], host("g1"))
	b.WriteString(`master:
  heartbeat: 20ms
  failure_timeout: 300ms
  lease: 100ms
  raft:
    heartbeat_timeout: 200ms
    election_timeout: 200ms
    leader_lease_timeout: 100ms
chain:
  tick: 5ms
  hello_retry: 20ms
client:
  timeout: 5s
`)
	b.WriteString(extra)
	if err := os.WriteFile(filepath.Join(le.dir, "config.yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(le.dir)
	t.Cleanup(func() {
		code, out, errb := le.launchWithin(time.Minute, "down")
		if code != 0 {
			t.Errorf("gavel launch down: exit %d\n%s%s", code, out, errb)
		}
		// Whatever down left (it failed, or the test stopped midway) is
		// the test's own: its processes run in its directories.
		for _, dir := range append([]string{le.dir}, le.hostDirs...) {
			for _, pid := range gavelProcs(dir) {
				t.Errorf("killing process %d of %s, left running", pid, dir)
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return le
}

// launchWithin runs `gavel launch args...`, bounded by timeout.
func (le *launchEnv) launchWithin(timeout time.Duration, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	code := run(ctx, append([]string{"launch"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

// launch runs `gavel launch args...` and checks its exit code.
func (le *launchEnv) launch(code int, args ...string) (string, string) {
	le.t.Helper()
	got, out, errb := le.launchWithin(2*time.Minute, args...)
	if got != code {
		le.t.Fatalf("gavel launch %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), got, code, out, errb)
	}
	return out, errb
}

// pid reads the pid file of id in the launching directory, or in dir.
func (le *launchEnv) pid(id string, dir ...string) int {
	le.t.Helper()
	base := le.dir
	if len(dir) > 0 {
		base = dir[0]
	}
	b, err := os.ReadFile(filepath.Join(base, ".run", id+".pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// gavelProcs lists the pids of running processes whose command line
// holds this test's config path or directory.
func gavelProcs(dir string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !strings.Contains(string(cmdline), "--id") {
			continue
		}
		cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		if err != nil || !strings.HasPrefix(cwd, dir) {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// expectNothingRunning fails the test when a process of dir still runs.
func expectNothingRunning(t *testing.T, dir string) {
	t.Helper()
	if left := gavelProcs(dir); len(left) > 0 {
		t.Errorf("processes left running in %s: %v", dir, left)
	}
}

// TestLaunchLocalCluster: up starts the cluster of the config and says
// so; a second up starts nothing; status shows every process; kill and
// restart of a node and a master; down stops everything and deletes the
// masters' data.
func TestLaunchLocalCluster(t *testing.T) {
	le := newLaunchEnv(t, "", nil)
	out, _ := le.launch(0, "up")
	for _, want := range []string{"gavel cluster up (config.yaml):", "master m1  grpc " + le.addrs["m1"],
		"node   n3  grpc " + le.addrs["n3"] + "  log .run/n3.log", "chain  n1 -> n2 -> n3  (master leader m",
		"gateway g1  http://" + le.addrs["g1"] + "/  ws://" + le.addrs["g1"] + "/ws  (mode open epoch ",
		"wscat -c 'ws://" + le.addrs["g1"] + "/ws?bidder=alice'", "scripts/launch down"} {
		if !strings.Contains(out, want) {
			t.Errorf("up output does not contain %q:\n%s", want, out)
		}
	}
	pids := map[string]int{}
	for _, id := range []string{"m1", "m2", "m3", "n1", "n2", "n3", "g1"} {
		pids[id] = le.pid(id)
		if pids[id] == 0 {
			t.Fatalf("no pid file for %s", id)
		}
	}

	// Flags before the command word work too; nothing starts twice.
	out, _ = le.launch(0, "--config", "config.yaml", "up")
	if n := strings.Count(out, "already running"); n != 7 {
		t.Errorf("second up: %d processes already running, want 7:\n%s", n, out)
	}
	for id, pid := range pids {
		if le.pid(id) != pid {
			t.Errorf("second up restarted %s", id)
		}
	}
	if n := len(gavelProcs(le.dir)); n != 7 {
		t.Errorf("%d gavel processes run after two ups, want 7", n)
	}

	out, _ = le.launch(0, "status")
	for _, id := range []string{"m1", "m2", "m3", "n1", "n2", "n3", "g1"} {
		row := regexp.MustCompile(`(?m)^` + id + ` +\w+ +local +` + strconv.Itoa(pids[id]) + ` +up `)
		if !row.MatchString(out) {
			t.Errorf("status has no up row for %s:\n%s", id, out)
		}
	}
	if !regexp.MustCompile(`(?m)^n1 +node +local +\d+ +up +head +\d+ +\d+ +0 *$`).MatchString(out) {
		t.Errorf("status does not show n1 as head with lag 0:\n%s", out)
	}

	out, _ = le.launch(0, "kill", "n2")
	if !strings.Contains(out, fmt.Sprintf("killed n2 (SIGKILL, pid %d)", pids["n2"])) {
		t.Errorf("kill n2 says %q", out)
	}
	out, errb := le.launch(1, "status")
	if !regexp.MustCompile(`(?m)^n2 +node +local +- +down `).MatchString(out) || !strings.Contains(errb, "launch: 1 of 7 processes down: n2") {
		t.Errorf("status after kill n2:\n%s%s", out, errb)
	}
	_, errb = le.launch(1, "kill", "n2")
	if !strings.Contains(errb, "launch: n2 is not running") {
		t.Errorf("second kill n2 says %q", errb)
	}

	out, _ = le.launch(0, "restart", "n2")
	if !strings.Contains(out, "started node n2 (pid ") || !strings.Contains(out, "n2 is a chain member again: n1 -> n3 -> n2") {
		t.Errorf("restart n2 says:\n%s", out)
	}
	out, _ = le.launch(0, "restart", "m1")
	if !strings.Contains(out, fmt.Sprintf("killed master m1 (SIGKILL, pid %d)", pids["m1"])) ||
		!regexp.MustCompile(`master m1 (follows leader m[23]|is the leader again)`).MatchString(out) {
		t.Errorf("restart m1 says:\n%s", out)
	}
	le.launch(0, "status")
	_, errb = le.launch(1, "restart", "n9")
	if !strings.Contains(errb, "launch: unknown id n9: config.yaml lists m1 m2 m3 n1 n2 n3 g1") {
		t.Errorf("restart n9 says %q", errb)
	}

	out, _ = le.launch(0, "down")
	for _, want := range []string{"gavel cluster down", "data dirs kept"} {
		if !strings.Contains(out, want) {
			t.Errorf("down output does not contain %q:\n%s", want, out)
		}
	}
	expectNothingRunning(t, le.dir)
	for _, d := range []string{"data/m1", ".run/data/n1/meta.db"} {
		if _, err := os.Stat(filepath.Join(le.dir, d)); err != nil {
			t.Errorf("down without --wipe did not keep %s: %v", d, err)
		}
	}
	out, _ = le.launch(0, "down", "--wipe")
	for _, want := range []string{"deleted data/m1 (master m1)", "deleted data/m3 (master m3)", "deleted .run/data/n2 (node n2)"} {
		if !strings.Contains(out, want) {
			t.Errorf("down --wipe output does not contain %q:\n%s", want, out)
		}
	}
	if _, err := os.Stat(filepath.Join(le.dir, "data")); err != nil {
		t.Errorf("down removed data/ itself or it was never made: %v", err)
	}
	for _, m := range []string{"m1", "m2", "m3"} {
		if _, err := os.Stat(filepath.Join(le.dir, "data", m)); err == nil {
			t.Errorf("down kept data/%s", m)
		}
	}
}

// A port taken on the host refuses up before anything starts, naming the
// process and the key.
func TestLaunchPortTaken(t *testing.T) {
	le := newLaunchEnv(t, "", nil)
	lis, err := net.Listen("tcp", le.addrs["n2"])
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	_, errb := le.launch(1, "up")
	want := fmt.Sprintf("launch: port %s of node n2 (nodes[1].addr in config.yaml) is already taken on the launching machine\n",
		strings.TrimPrefix(le.addrs["n2"], "127.0.0.1:"))
	if errb != want {
		t.Errorf("up with a taken port says\n%s\nwant\n%s", errb, want)
	}
	expectNothingRunning(t, le.dir)
	if pids, _ := filepath.Glob(filepath.Join(le.dir, ".run", "*.pid")); len(pids) > 0 {
		t.Errorf("pid files after a refused up: %v", pids)
	}
}

// A process that fails to come up stops everything that up started, and
// up says which one failed and shows its log.
func TestLaunchFailureStopsEverything(t *testing.T) {
	le := newLaunchEnv(t, "", nil)
	// m3's data dir is a file: m3 exits at once.
	cfg, err := os.ReadFile("config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("config.yaml", bytes.Replace(cfg, []byte("data_dir: data/m3"), []byte("data_dir: m3-is-a-file"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile("m3-is-a-file", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, errb := le.launch(1, "up")
	for _, want := range []string{"launch: master m3 not ready: exited; see .run/m3.log:\n  ",
		"launch: stopped what this run had started: m1 m2 m3"} {
		if !strings.Contains(errb, want) {
			t.Errorf("up's error does not contain %q:\n%s", want, errb)
		}
	}
	expectNothingRunning(t, le.dir)
}

// fakeSSH is an ssh that runs the remote command on this machine, and
// fakeSCP an scp that copies here: hosts "reached over ssh" are
// directories of the test, with every step of the remote path taken.
const fakeSSH = `#!/bin/sh
master=0
while [ $# -gt 0 ]; do
  case "$1" in
    -N) master=1; shift ;;
    -o) case "$2" in ControlPath=*) ctl=${2#ControlPath=} ;; esac; shift 2 ;;
    -i|-p|-l) shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
echo "$1" >>"$FAKE_SSH_LOG"
if [ $master = 1 ]; then
  # The shared connection: its socket exists while it runs.
  : >"$ctl"
  exec sleep 600
fi
shift
exec sh -c "$1"
`

const fakeSCP = `#!/bin/sh
while [ $# -gt 0 ]; do
  case "$1" in
    -q) shift ;;
    -o|-i|-P) shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
for target; do :; done
while [ $# -gt 1 ]; do
  cp -L "$1" "${target#*:}"
  shift
done
`

// TestLaunchRemoteLayout runs processes on two hosts reached through a
// stand-in ssh and scp, with TLS (the launcher takes no plaintext beyond
// the launching machine): each host's directory gets bin/gavel,
// config.yaml, the certificates of its processes, .run/ID.pid and
// .run/ID.log and its masters' data; status names each process's host;
// down stops them all.
func TestLaunchRemoteLayout(t *testing.T) {
	tools := t.TempDir()
	for name, script := range map[string]string{"ssh": fakeSSH, "scp": fakeSCP} {
		if err := os.WriteFile(filepath.Join(tools, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	t.Setenv("FAKE_SSH_LOG", filepath.Join(tools, "ssh.log"))
	h1, h2 := filepath.Join(t.TempDir(), "h1"), filepath.Join(t.TempDir(), "h2")
	le := newLaunchEnv(t, fmt.Sprintf(`hosts:
  - name: h1
    ssh: h1.test
    user: gavel
    dir: %s
  - name: h2
    ssh: h2.test:2222
    dir: %s
tls:
  ca: certs/ca.crt
`, h1, h2), map[string]string{"m1": "h1", "n1": "h1", "m2": "h2", "n2": "h2", "g1": "h2"})
	le.hostDirs = []string{h1, h2}
	if code, out, errb := runCLI(t, "certs", "init", "--config", "config.yaml"); code != 0 {
		t.Fatalf("certs init: exit %d\n%s%s", code, out, errb)
	}
	launchSSH, launchSCP = filepath.Join(tools, "ssh"), filepath.Join(tools, "scp")

	out, _ := le.launch(0, "up")
	for _, want := range []string{
		"master m1  grpc " + le.addrs["m1"],
		"data data/m1  host h1  log h1:" + h1 + "/.run/m1.log",
		"node   n2  grpc " + le.addrs["n2"] + "  host h2  log h2:" + h2 + "/.run/n2.log",
		"node   n3  grpc " + le.addrs["n3"] + "  log .run/n3.log",
		"chain  n1 -> n2 -> n3",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("up output does not contain %q:\n%s", want, out)
		}
	}
	for dir, ids := range map[string][]string{h1: {"m1", "n1"}, h2: {"m2", "n2", "g1"}} {
		for _, f := range []string{"bin/gavel", "config.yaml", "certs/ca.crt", "certs/client.crt", "certs/client.key"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Errorf("%s: %v", dir, err)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, "certs/admin.key")); err == nil {
			t.Errorf("%s holds the admin tools' key: it stays on the launching machine", dir)
		}
		for _, id := range ids {
			for _, f := range []string{id + ".crt", id + ".key"} {
				if _, err := os.Stat(filepath.Join(dir, "certs", f)); err != nil {
					t.Errorf("%s: %v", dir, err)
				}
			}
			if le.pid(id, dir) == 0 {
				t.Errorf("no pid file of %s in %s/.run", id, dir)
			}
			if _, err := os.Stat(filepath.Join(dir, ".run", id+".log")); err != nil {
				t.Errorf("no log of %s: %v", id, err)
			}
		}
	}
	if _, err := os.Stat(filepath.Join(h1, "data", "m1", "raft.db")); err != nil {
		t.Errorf("m1's data is not under h1's dir: %v", err)
	}
	cfgA, _ := os.ReadFile(filepath.Join(le.dir, "config.yaml"))
	cfgB, _ := os.ReadFile(filepath.Join(h2, "config.yaml"))
	if !bytes.Equal(cfgA, cfgB) {
		t.Error("h2's config.yaml is not the launching one")
	}

	// The binary is the same: a second up copies nothing.
	bin, _ := os.Stat(filepath.Join(h1, "bin", "gavel"))
	le.launch(0, "up")
	if again, _ := os.Stat(filepath.Join(h1, "bin", "gavel")); !os.SameFile(bin, again) {
		t.Error("a second up copied bin/gavel again")
	}

	out, _ = le.launch(0, "status")
	for id, host := range map[string]string{"m1": "h1", "n2": "h2", "g1": "h2", "n3": "local"} {
		if !regexp.MustCompile(`(?m)^` + id + ` +\w+ +` + host + ` +\d+ +up `).MatchString(out) {
			t.Errorf("status has no up row for %s on %s:\n%s", id, host, out)
		}
	}
	out, _ = le.launch(0, "kill", "n1")
	if !strings.Contains(out, ", host h1)") {
		t.Errorf("kill n1 says %q", out)
	}
	le.launch(0, "restart", "n1")

	out, _ = le.launch(0, "down", "--wipe")
	if !strings.Contains(out, "deleted "+filepath.Join(h1, "data/m1")+" (master m1 on h1)") {
		t.Errorf("down does not delete m1's data on h1:\n%s", out)
	}
	for _, dir := range []string{h1, h2, le.dir} {
		expectNothingRunning(t, dir)
	}
	log, _ := os.ReadFile(filepath.Join(tools, "ssh.log"))
	if !strings.Contains(string(log), "h1.test") || !strings.Contains(string(log), "h2.test") {
		t.Errorf("the hosts were not reached through ssh: %s", log)
	}
}

// With tls: on, the launcher's status calls use the admin certificate
// and its gateway health checks https with the CA as root; the summary
// gives https and wss URLs and wscat the CA.
func TestLaunchTLS(t *testing.T) {
	le := newLaunchEnv(t, "tls:\n  ca: certs/ca.crt\n", nil)
	if code, out, errb := runCLI(t, "certs", "init", "--config", "config.yaml"); code != 0 {
		t.Fatalf("certs init: exit %d\n%s%s", code, out, errb)
	}
	out, _ := le.launch(0, "up")
	g := le.addrs["g1"]
	for _, want := range []string{"chain  n1 -> n2 -> n3", "gateway g1  https://" + g + "/  wss://" + g + "/ws  (mode open",
		"wscat -c 'wss://" + g + "/ws?bidder=alice' --ca certs/ca.crt"} {
		if !strings.Contains(out, want) {
			t.Errorf("up output does not contain %q:\n%s", want, out)
		}
	}
	out, _ = le.launch(0, "status")
	if n := len(regexp.MustCompile(`(?m)^\S+ +\w+ +local +\d+ +up `).FindAllString(out, -1)); n != 7 {
		t.Errorf("status: %d processes up, want 7:\n%s", n, out)
	}

	// Without the tools' certificate (lost, expired) kill and down still
	// stop the cluster: they ask it nothing.
	if err := os.Remove(filepath.Join(le.dir, "certs", "client.crt")); err != nil {
		t.Fatal(err)
	}
	le.launch(0, "kill", "n3")
	le.launch(0, "down")
	expectNothingRunning(t, le.dir)
}
