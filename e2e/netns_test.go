package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// testHosts are test machines made of Linux network namespaces: each has
// its own address on a bridge in the test's namespace and runs Debian's
// sshd, so that the launcher reaches it exactly as it reaches a real host
// (ssh, a user, a key, a known_hosts file). The hosts see each other and
// the test's namespace through the bridge and nothing else: there is no
// route out.
//
// Creating them needs root and iproute2; a machine that cannot create a
// namespace fails the test, loudly, rather than skipping it.
type testHosts struct {
	t   *testing.T
	dir string // keys, sshd configs, known_hosts, the hosts' working dirs
	// tag makes every name of this run unique: namespaces gavel-TAG-h1,
	// bridge gvbTAG, veths gvTAGh1.
	tag    string
	subnet string // first three octets of the hosts' /24, e.g. "10.77.42"
	bridge string
	// key is the ssh private key every host accepts for root; knownHosts
	// holds every host's key.
	key, knownHosts string
	hosts           []*testHost
}

// testHost is one namespace with its sshd.
type testHost struct {
	name string // h1, h2, ...
	ns   string // network namespace
	ip   string
	dir  string // its working directory (hosts[i].dir)
	sshd *exec.Cmd
	log  string // sshd's log
}

// newTestHosts creates n hosts h1..hN, each with sshd listening on its own
// address, and registers their removal: every process left in a namespace
// is SIGKILLed, then the namespaces and the bridge are deleted, whether the
// test passed or not.
func newTestHosts(t *testing.T, n int) *testHosts {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("multi-host tests create network namespaces and need root (euid %d); run scripts/test as root", os.Geteuid())
	}
	for _, bin := range []string{"ip", "/usr/sbin/sshd", "ssh", "scp", "ssh-keygen"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("multi-host tests need %s (Debian: iproute2, openssh-server, openssh-client; scripts/test installs them): %v", bin, err)
		}
	}
	b := make([]byte, 2)
	rand.Read(b)
	tag := hex.EncodeToString(b)
	h := &testHosts{t: t, dir: t.TempDir(), tag: tag, bridge: "gvb" + tag, subnet: freeSubnet(t, int(b[0]))}
	t.Cleanup(h.remove)

	h.run("ip", "link", "add", h.bridge, "type", "bridge")
	h.run("ip", "addr", "add", h.subnet+".1/24", "dev", h.bridge)
	h.run("ip", "link", "set", h.bridge, "up")

	h.key = filepath.Join(h.dir, "id_ed25519")
	h.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "gavel-e2e", "-f", h.key)
	pub, err := os.ReadFile(h.key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	authorized := filepath.Join(h.dir, "authorized_keys")
	if err := os.WriteFile(authorized, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	// sshd wants its privilege separation directory.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	var known strings.Builder
	for i := 1; i <= n; i++ {
		host := &testHost{name: fmt.Sprintf("h%d", i), ns: fmt.Sprintf("gavel-%s-h%d", tag, i),
			ip: fmt.Sprintf("%s.%d", h.subnet, 10+i), dir: filepath.Join(h.dir, fmt.Sprintf("h%d", i))}
		h.hosts = append(h.hosts, host)
		veth := fmt.Sprintf("gv%sh%d", tag, i)
		if out, err := exec.Command("ip", "netns", "add", host.ns).CombinedOutput(); err != nil {
			t.Fatalf("this machine cannot create a network namespace (ip netns add %s: %v: %s): "+
				"the multi-host tests need root and a kernel with network namespaces", host.ns, err, bytes.TrimSpace(out))
		}
		h.run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
		h.run("ip", "link", "set", veth, "master", h.bridge)
		h.run("ip", "link", "set", veth, "up")
		h.run("ip", "-n", host.ns, "addr", "add", host.ip+"/24", "dev", "eth0")
		h.run("ip", "-n", host.ns, "link", "set", "eth0", "up")
		h.run("ip", "-n", host.ns, "link", "set", "lo", "up")
		if err := os.MkdirAll(host.dir, 0o755); err != nil {
			t.Fatal(err)
		}
		hostKey := filepath.Join(h.dir, host.name+"_host_ed25519")
		h.run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey)
		hk, err := os.ReadFile(hostKey + ".pub")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(hk))
		fmt.Fprintf(&known, "%s %s %s\n", host.ip, f[0], f[1])
		sshdConfig := filepath.Join(h.dir, host.name+"_sshd_config")
		conf := fmt.Sprintf(`ListenAddress %s:22
HostKey %s
PidFile %s
AuthorizedKeysFile %s
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxStartups 100:30:200
MaxSessions 100
Subsystem sftp internal-sftp
`, host.ip, hostKey, filepath.Join(h.dir, host.name+"_sshd.pid"), authorized)
		if err := os.WriteFile(sshdConfig, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		host.log = filepath.Join(h.dir, host.name+"_sshd.log")
		logf, err := os.Create(host.log)
		if err != nil {
			t.Fatal(err)
		}
		host.sshd = exec.Command("ip", "netns", "exec", host.ns, "/usr/sbin/sshd", "-D", "-e", "-f", sshdConfig)
		host.sshd.Stdout, host.sshd.Stderr = logf, logf
		host.sshd.SysProcAttr = groupLeaderAttr()
		if err := host.sshd.Start(); err != nil {
			t.Fatalf("starting sshd in %s: %v", host.ns, err)
		}
		logf.Close()
	}
	h.knownHosts = filepath.Join(h.dir, "known_hosts")
	if err := os.WriteFile(h.knownHosts, []byte(known.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, host := range h.hosts {
		h.waitSSH(host)
	}
	t.Logf("test hosts %s on %s.0/24 (bridge %s), sshd on each", h.names(), h.subnet, h.bridge)
	return h
}

// freeSubnet returns the first three octets of a 10.77.X.0/24 that no
// address or route of this machine uses, starting the search at X = start.
func freeSubnet(t *testing.T, start int) string {
	t.Helper()
	addrs, err := exec.Command("ip", "-4", "-o", "addr", "show").Output()
	if err != nil {
		t.Fatalf("ip addr show: %v", err)
	}
	routes, err := exec.Command("ip", "-4", "route", "show", "table", "all").Output()
	if err != nil {
		t.Fatalf("ip route show: %v", err)
	}
	used := string(addrs) + string(routes)
	for i := range 250 {
		subnet := fmt.Sprintf("10.77.%d", 1+(start+i)%250)
		if !strings.Contains(used, subnet+".") {
			return subnet
		}
	}
	t.Fatal("no free 10.77.X.0/24 for the test hosts: every one is in use on this machine")
	return ""
}

// names lists the hosts as "h1=10.77.x.11 ...".
func (h *testHosts) names() string {
	var s []string
	for _, host := range h.hosts {
		s = append(s, host.name+"="+host.ip)
	}
	return strings.Join(s, " ")
}

// run runs a setup command, failing the test with its output.
func (h *testHosts) run(name string, args ...string) {
	h.t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		h.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
}

// waitSSH waits until the host's sshd runs a command for the test's key.
func (h *testHosts) waitSSH(host *testHost) {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := h.ssh(host, "true")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(host.log)
			h.t.Fatalf("sshd on %s (%s) does not answer after 10s: %v %s; its log:\n%s", host.name, host.ip, err, out, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ssh runs a shell command on host as root, as the launcher would.
func (h *testHosts) ssh(host *testHost, command string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ssh", "-i", h.key, "-o", "BatchMode=yes", "-o", "ConnectTimeout=2",
		"-o", "UserKnownHostsFile="+h.knownHosts, "-o", "StrictHostKeyChecking=yes", "root@"+host.ip, command).CombinedOutput()
	return string(out), err
}

// host returns host name.
func (h *testHosts) host(name string) *testHost {
	for _, host := range h.hosts {
		if host.name == name {
			return host
		}
	}
	h.t.Fatalf("no test host %s", name)
	return nil
}

// pids returns the processes running in host's namespace, sshd aside.
func (h *testHosts) pids(host *testHost) []int {
	out, err := exec.Command("ip", "netns", "pids", host.ns).Output()
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil || pid == os.Getpid() {
			continue
		}
		if host.sshd != nil && host.sshd.Process != nil && pid == host.sshd.Process.Pid {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

// processes describes the processes in host's namespace other than its
// sshd (and sshd's own sessions): "PID cmdline" per line.
func (h *testHosts) processes(host *testHost) []string {
	var out []string
	for _, pid := range h.pids(host) {
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue // gone
		}
		line := strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
		if strings.HasPrefix(line, "sshd:") || strings.HasPrefix(line, "/usr/sbin/sshd") {
			continue
		}
		out = append(out, fmt.Sprintf("%d %s", pid, line))
	}
	return out
}

// remove kills everything in every namespace, deletes the namespaces and
// the bridge, and checks that nothing is left.
func (h *testHosts) remove() {
	for _, host := range h.hosts {
		if host.sshd != nil && host.sshd.Process != nil {
			host.sshd.Process.Kill()
			host.sshd.Wait()
		}
		for range 50 {
			pids := h.pids(host)
			if len(pids) == 0 {
				break
			}
			for _, pid := range pids {
				syscall.Kill(pid, syscall.SIGKILL)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if left := h.pids(host); len(left) > 0 {
			h.t.Errorf("processes %v still run in %s after SIGKILL", left, host.ns)
		}
		if out, err := exec.Command("ip", "netns", "del", host.ns).CombinedOutput(); err != nil {
			h.t.Errorf("ip netns del %s: %v: %s", host.ns, err, bytes.TrimSpace(out))
		}
	}
	if out, err := exec.Command("ip", "link", "del", h.bridge).CombinedOutput(); err != nil &&
		!strings.Contains(string(out), "Cannot find device") {
		h.t.Errorf("ip link del %s: %v: %s", h.bridge, err, bytes.TrimSpace(out))
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), "gavel-"+h.tag+"-") {
		h.t.Errorf("namespaces left behind:\n%s", out)
	}
}

// addr is host:port on test host name.
func (h *testHosts) addr(name string, port int) string {
	return net.JoinHostPort(h.host(name).ip, strconv.Itoa(port))
}
