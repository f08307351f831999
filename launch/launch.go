// Package launch starts, inspects and stops the masters, nodes and
// gateways of a config.yaml on the hosts it names: the launching machine
// directly, other machines over ssh. It is `gavel launch` (and
// scripts/launch, which builds bin/gavel and runs it).
//
// Every host has a working directory: the launching directory for the
// launching machine, hosts[i].dir for the others. Under it the launcher
// keeps each process's pid file and log (.run/ID.pid, .run/ID.log); a
// remote host also gets bin/gavel, config.yaml (the launching
// configuration, copied) and the TLS files its processes need, at the
// paths the configuration gives them. Relative paths of the configuration
// (data dirs, TLS files) are relative to the working directory.
//
// The host side of every operation is gavel itself (`gavel launch agent`,
// `gavel launch probe`), run through a Host: sh on the launching machine,
// the system's ssh elsewhere. What the cluster says about itself (leader,
// chain, each process's role) comes from an Observer: NewStatusObserver
// asks the processes with the gRPC status calls of `gavel status`
// (package clusterstatus).
package launch

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/gavel-auction/gavel/config"
)

// Options configure a Launcher.
type Options struct {
	// Config is the loaded, valid configuration. For Down only it may be
	// nil, with ConfigErr saying why: Down then stops what the launching
	// machine runs.
	Config    *config.Config
	ConfigErr error
	// ConfigPath is the configuration file as given on the command line,
	// relative to Dir; the processes of the launching machine read it.
	ConfigPath string
	// Dir is the launching directory (default: the current directory).
	Dir string
	// Gavel is the gavel binary on the launching machine, which runs the
	// local processes and is copied to remote hosts (default: this
	// program).
	Gavel string
	// Observer reports the cluster's state; required by Up, Status and
	// Restart.
	Observer Observer
	// Stdout gets the operator's lines, Stderr the warnings and the
	// details of a failure (default: discarded).
	Stdout, Stderr io.Writer
	// Monitor makes Up start a local Prometheus on MonitorAddr (default
	// 127.0.0.1:9090).
	Monitor     bool
	MonitorAddr string
	// Wipe makes Down delete the data dirs of the masters (their Raft
	// log) and of the nodes (their write-ahead logs and snapshots: the
	// auctions); without it they are kept, and the next Up brings back
	// every auction.
	Wipe bool
	// SSH and SCP are the programs that reach remote hosts (default ssh
	// and scp).
	SSH, SCP string
	// ReadyTimeout bounds the wait for one started process to answer
	// (default 10s); LeaderTimeout the wait for a master leader and for
	// a master to follow it (default 15s); JoinTimeout the wait for a node
	// to become a chain member (default 15s); StopWait the time between
	// SIGTERM and SIGKILL (default 5s).
	ReadyTimeout, LeaderTimeout, JoinTimeout, StopWait time.Duration
	// Poll is the period of every wait (default 100ms).
	Poll time.Duration
}

// Observer tells the launcher what the running processes say about
// themselves. It is safe for concurrent use.
type Observer interface {
	// View asks every master and node of the configuration for its
	// status; processes that do not answer in time are not Up.
	View(ctx context.Context) View
}

// View is the cluster as its masters and nodes report it.
type View struct {
	// Leader is the id of the master leader; "" when none answered as
	// leader.
	Leader string
	// Epoch, Chain (head first) and Joining are the chain configuration
	// as the leader (or else the most advanced master) has applied it.
	Epoch   uint64
	Chain   []string
	Joining []string
	// Restarted are the chain members whose node now runs another
	// incarnation than the one in the configuration: the member is an
	// earlier run of the process, not yet replaced.
	Restarted []string
	// Masters and Nodes are each process's own answer, by id.
	Masters map[string]MasterView
	Nodes   map[string]NodeView
}

// MasterView is one master's answer.
type MasterView struct {
	Up       bool
	State    string // leader, follower, candidate
	LeaderID string // the leader it knows; "" when none
	Epoch    uint64 // of the chain configuration it has applied
	Err      string // why it did not answer
}

// NodeView is one node's answer.
type NodeView struct {
	Up      bool
	Role    string // head, middle, tail, single, joining, removed, none
	Epoch   uint64
	Applied uint64
	Lag     *int64 // head applied - applied; nil when unknown
	Err     string
}

// Proc is one process of the configuration, with what the launcher needs
// besides the config's own view of it.
type Proc struct {
	config.Process
	// DataDir is a master's Raft data dir, as the master uses it.
	DataDir string
	// RaftAddr and HTTPAddr are a master's (HTTPAddr also a node's).
	RaftAddr, HTTPAddr string
}

// Procs lists the processes of cfg in start order: masters, nodes,
// gateways.
func Procs(cfg *config.Config) []Proc {
	var ps []Proc
	for _, p := range cfg.Processes() {
		proc := Proc{Process: p}
		switch p.Kind {
		case "master":
			m, _ := cfg.MasterByID(p.ID)
			proc.DataDir, proc.RaftAddr, proc.HTTPAddr = cfg.MasterDataDir(m), m.RaftAddr, m.HTTPAddr
		case "node":
			n, _ := cfg.Node(p.ID)
			proc.HTTPAddr, proc.DataDir = n.HTTPAddr, cfg.NodeDataDir(n)
		}
		ps = append(ps, proc)
	}
	return ps
}

// Launcher carries out the launch commands on the hosts of one
// configuration. Its methods are meant for one command each, in turn.
type Launcher struct {
	o     Options
	cfg   *config.Config
	file  string // the config file, for messages
	procs []Proc
	local *localHost      // the launching machine in the launching directory
	hosts map[string]Host // by hosts: name; "" is local
	// hostKeys are the hosts: elements by name ("hosts[1]").
	hostKeys map[string]string
	// monitorStarted is set once Up has started a Prometheus.
	monitorStarted bool
	// muxDir holds the control sockets of the ssh connections.
	muxDir string
}

// New returns a Launcher for o.
func New(o Options) (*Launcher, error) {
	if o.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		o.Dir = wd
	}
	dir, err := filepath.Abs(o.Dir)
	if err != nil {
		return nil, err
	}
	o.Dir = dir
	if o.Gavel == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		o.Gavel = exe
	}
	if o.Gavel, err = filepath.Abs(o.Gavel); err != nil {
		return nil, err
	}
	if o.ConfigPath == "" {
		o.ConfigPath = "config.yaml"
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Stderr == nil {
		o.Stderr = io.Discard
	}
	if o.MonitorAddr == "" {
		o.MonitorAddr = "127.0.0.1:9090"
	}
	if o.SSH == "" {
		o.SSH = "ssh"
	}
	if o.SCP == "" {
		o.SCP = "scp"
	}
	for _, d := range []struct {
		v   *time.Duration
		def time.Duration
	}{{&o.ReadyTimeout, 10 * time.Second}, {&o.LeaderTimeout, 15 * time.Second},
		{&o.JoinTimeout, 15 * time.Second}, {&o.StopWait, 5 * time.Second}, {&o.Poll, 100 * time.Millisecond}} {
		if *d.v <= 0 {
			*d.v = d.def
		}
	}
	l := &Launcher{o: o, cfg: o.Config, file: o.ConfigPath, hosts: map[string]Host{}, hostKeys: map[string]string{},
		local: &localHost{dir: o.Dir, gavel: o.Gavel}}
	l.hosts[""] = l.local
	if o.Config == nil {
		return l, nil
	}
	if o.Config.File != "" {
		l.file = o.Config.File
	}
	l.procs = Procs(o.Config)
	for _, hc := range o.Config.Hosts {
		if hc.SSH != "" && l.muxDir == "" {
			if l.muxDir, err = os.MkdirTemp("", "gavel-ssh-"); err != nil {
				return nil, err
			}
		}
	}
	for i, hc := range o.Config.Hosts {
		key := fmt.Sprintf("hosts[%d]", i)
		l.hostKeys[hc.Name] = key
		switch {
		case hc.SSH != "":
			host, port := splitSSH(hc.SSH)
			sh := &sshHost{name: hc.Name, key: key, file: l.file, addr: hc.SSH, host: host, port: port,
				user: hc.User, dir: hc.Dir, ssh: o.SSH, scp: o.SCP, muxDir: l.muxDir}
			if hc.Key != "" {
				sh.identity = l.absLocal(hc.Key)
			}
			if hc.KnownHosts != "" {
				sh.knownHosts = l.absLocal(hc.KnownHosts)
			}
			l.hosts[hc.Name] = sh
		case hc.Dir == "" || samePath(l.absLocal(hc.Dir), o.Dir):
			l.hosts[hc.Name] = l.local
		default:
			l.hosts[hc.Name] = &localHost{name: hc.Name, dir: l.absLocal(hc.Dir), gavel: filepath.Join(l.absLocal(hc.Dir), "bin", "gavel")}
		}
	}
	return l, nil
}

// Close ends the ssh connections that the launcher's commands shared.
func (l *Launcher) Close() error {
	for _, h := range l.distinctHosts() {
		_ = h.Close()
	}
	if l.muxDir != "" {
		return os.RemoveAll(l.muxDir)
	}
	return nil
}

// absLocal makes path absolute on the launching machine, relative to the
// launching directory.
func (l *Launcher) absLocal(path string) string {
	path = expandHome(path)
	if filepath.IsAbs(path) {
		return filepath.Clean(path)
	}
	return filepath.Join(l.o.Dir, path)
}

// samePath reports whether a and b name the same directory.
func samePath(a, b string) bool {
	if a == b {
		return true
	}
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// hostOf returns the host of p.
func (l *Launcher) hostOf(p Proc) Host { return l.hosts[p.Host] }

// isLaunching reports whether h is the launching machine in the launching
// directory, where the files of the layout are already in place.
func (l *Launcher) isLaunching(h Host) bool { return h == Host(l.local) }

// distinctHosts returns every host of the configuration once, the
// launching machine first.
func (l *Launcher) distinctHosts() []Host {
	hs := []Host{l.local}
	if l.cfg != nil {
		for _, hc := range l.cfg.Hosts {
			if h := l.hosts[hc.Name]; !slices.Contains(hs, h) {
				hs = append(hs, h)
			}
		}
	}
	return hs
}

// proc returns the process with id, and whether the configuration has one.
func (l *Launcher) proc(id string) (Proc, bool) {
	for _, p := range l.procs {
		if p.ID == id {
			return p, true
		}
	}
	return Proc{}, false
}

// procsOf returns the processes of kind, in file order.
func (l *Launcher) procsOf(kind string) []Proc {
	var ps []Proc
	for _, p := range l.procs {
		if p.Kind == kind {
			ps = append(ps, p)
		}
	}
	return ps
}

// configOn is the configuration file that processes on h read.
func (l *Launcher) configOn(h Host) string {
	if l.isLaunching(h) {
		return l.o.ConfigPath
	}
	return "config.yaml"
}

// logOf names p's log for the operator: .run/ID.log in the launching
// directory, HOST:DIR/.run/ID.log elsewhere.
func (l *Launcher) logOf(id string, h Host) string {
	switch {
	case l.isLaunching(h):
		return logPath(id)
	case h.Remote():
		return h.Name() + ":" + filepath.Join(h.Dir(), logPath(id))
	}
	return filepath.Join(h.Dir(), logPath(id))
}

// ids returns the ids of ps.
func ids(ps []Proc) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.ID
	}
	return out
}

// port is the port of addr, for messages.
func port(addr string) string {
	if _, p, err := net.SplitHostPort(addr); err == nil {
		return p
	}
	return addr
}

// say prints one line for the operator.
func (l *Launcher) say(format string, args ...any) {
	fmt.Fprintf(l.o.Stdout, format+"\n", args...)
}

// warn prints one line on the error stream, prefixed "launch: ".
func (l *Launcher) warn(format string, args ...any) {
	fmt.Fprintf(l.o.Stderr, "launch: "+format+"\n", args...)
}
