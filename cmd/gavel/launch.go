package main

// gavel launch: the command-line contract (scripts/launch builds bin/gavel
// with CGO_ENABLED=0 and runs `bin/gavel launch "$@"`; tests and scripts
// rely on what follows).
//
//   gavel launch up|down|status|kill ID|restart ID|logs ID
//          [--config FILE] [--monitor [--monitor-addr HOST:PORT]] [--wipe]
//
// Flags may come before or after the command word. --config defaults to
// config.yaml, relative to the current directory (the launching
// directory); --monitor-addr (default 127.0.0.1:9090) implies --monitor.
//
//   up       check every ssh host (keys, known_hosts, reachability) and the
//            TLS files, copy to each remote host what it needs, check that
//            every port to bind is free on its host, then start the masters
//            (wait for a leader), the nodes one by one (each until it is a
//            chain member), the gateways (each until /healthz answers) and
//            print the summary. Processes that run already are left alone
//            ("KIND ID already running (pid N)"). On any failure everything
//            this run started is stopped again.
//   down     stop every process with a pid file on every host (gateways,
//            nodes, masters last; SIGTERM, SIGKILL after 5s), the --monitor
//            Prometheus, and delete the data dirs of masters and nodes (only those
//            holding raft.db or meta.db, or nothing) with --wipe.
//   status   one table: ID KIND HOST PID STATE ROLE EPOCH APPLIED LAG
//            (STATE up, down or "no answer"; HOST "local" for the launching
//            machine), then the gateways.
//   kill ID  SIGKILL one process on its host.
//   restart ID
//            SIGKILL it if it runs, start it again, wait: a node until it is
//            a chain member again, a master until it follows a leader.
//   logs ID  follow .run/ID.log on the process's host (tail -f).
//
// Exit status: 0 success; 1 the command failed (a host unreachable, a
// port taken, a process that did not come up, status with a process down,
// kill of a process that does not run); 3 a bad command line or an
// invalid configuration. Errors are printed on stderr as lines starting
// "launch: ", naming the host and the key of the configuration, e.g.
//
//   launch: host h2 (hosts[1].ssh = 10.0.0.2 in config.yaml): unreachable: <ssh's message>
//   launch: host h2 (hosts[1].key = ~/.ssh/id in config.yaml): file not found: /root/.ssh/id (the ssh private key)
//   launch: port 7101 of node n1 (nodes[0].addr in config.yaml) is already taken on host h1
//
// Remote layout, under hosts[i].dir: bin/gavel (copied when its SHA-256
// differs), config.yaml (the launching configuration), the TLS files of
// the host's processes and of the client at their configured paths,
// .run/ID.pid and .run/ID.log, and the masters' data dirs. The launching
// machine keeps .run/ in the launching directory. Every process runs as
// `gavel KIND --id ID --config FILE` in its host's directory, with the
// launching machine's GAVEL_* environment variables (such as
// GAVEL_AUTH_SECRET) over the host's own; a pid is
// only ever signalled when /proc/PID/cmdline holds --id ID and the process
// runs in that directory (the --monitor Prometheus: when it runs in the
// launching directory with --config.file=.run/prometheus.yml).
//
// Two subcommands are the launcher's own, run on each host:
// `gavel launch probe ADDR...` prints "ADDR taken" or "ADDR cannot bind:
// REASON" for each address it cannot listen on (exit 1 if any), and
// `gavel launch agent` carries out one JSON request on stdin.

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/internal/clusterstatus"
	"github.com/gavel-auction/gavel/launch"
)

// launchGavel, launchSSH and launchSCP are the programs of the launcher:
// the gavel binary that runs local processes and is copied to remote
// hosts ("" for this program), and the ssh and scp that reach them.
var (
	launchGavel = ""
	launchSSH   = "ssh"
	launchSCP   = "scp"
)

// launchAttempt bounds each status call of the launcher's waits.
const launchAttempt = 500 * time.Millisecond

func cmdLaunch(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "launch", "up|down|status|kill ID|restart ID|logs ID [flags]", `
Start, inspect and stop the masters, nodes and gateways of the
configuration on the hosts it names: processes without host: (or on a
hosts: entry without ssh) run on this machine, in this directory; the
others over ssh (hosts[i].ssh, user, key, known_hosts), in hosts[i].dir.

  up          check the ssh hosts, copy bin/gavel, config.yaml and the TLS
              files to them, check that every port is free, start the
              masters and wait for a leader, the nodes one by one until each
              is a chain member, the gateways until /healthz answers; print
              the addresses. Running processes are left alone; on a failure
              everything this run started is stopped again.
  down        stop every process (gateways, nodes, masters last; SIGTERM,
              then SIGKILL) on every host and the --monitor Prometheus, and
              keep every data dir (--wipe deletes the masters' and the nodes')
  status      every process: host, pid, up or down, role, epoch, applied,
              lag; then the gateways. Exits 1 when one is down.
  kill ID     SIGKILL one process (fault demos)
  restart ID  SIGKILL it if running, start it again, wait until it is back
              (a node: a chain member again; a master: follows a leader)
  logs ID     follow the process's log (.run/ID.log on its host)

Nodes keep the auctions in their data dirs and the masters the chain
configuration in theirs: up after down brings back every auction (the
master rebuilds the chain from the nodes' durable histories). down --wipe
deletes both for a fresh cluster. Pids and logs are
in .run/ (ID.pid, ID.log) of each host's directory.`)
	configPath := f.String("config", "config.yaml", "configuration file")
	monitor := f.Bool("monitor", false, "up: also start a local Prometheus scraping every process")
	monitorAddr := f.String("monitor-addr", "127.0.0.1:9090", "listen address of the --monitor Prometheus (implies --monitor)")
	wipe := f.Bool("wipe", false, "down: delete the data dirs of the masters and the nodes (every auction)")
	f.Bool("keep-data", false, "down: keep the data dirs (the default)")
	_ = f.MarkHidden("keep-data")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return f.usageErr("missing command: up, down, status, kill ID, restart ID or logs ID")
	}
	word, rest := pos[0], pos[1:]
	switch word {
	case "probe":
		bad := launch.Probe(rest)
		for _, line := range bad {
			fmt.Fprintln(e.stdout, line)
		}
		return exitWith(min(len(bad), 1))
	case "agent":
		gavel, err := os.Executable()
		if err != nil {
			return exception("%v", err)
		}
		if err := launch.ServeAgent(os.Stdin, e.stdout, gavel); err != nil {
			return exception("%v", err)
		}
		return nil
	case "up", "down", "status":
		if len(rest) > 0 {
			return f.usageErr("%s takes no argument, got %q", word, rest[0])
		}
	case "kill", "restart", "logs":
		if len(rest) != 1 {
			return f.usageErr("usage: gavel launch %s ID", word)
		}
	default:
		return f.usageErr("unknown launch command %q: want up, down, status, kill ID, restart ID or logs ID", word)
	}

	opts := launch.Options{ConfigPath: *configPath, Gavel: launchGavel, SSH: launchSSH, SCP: launchSCP,
		Stdout: e.stdout, Stderr: e.stderr, Monitor: *monitor || f.Changed("monitor-addr"),
		MonitorAddr: *monitorAddr, Wipe: *wipe}
	cfg, err := config.Load(*configPath)
	switch {
	case err != nil && word == "down":
		opts.ConfigErr = err
		if !errors.Is(err, fs.ErrNotExist) {
			fmt.Fprintf(e.stderr, "launch: %s; stopping what runs on this machine only\n", firstLine(err.Error()))
		}
	case err != nil:
		return launchFailed(e, exitUsage, err)
	default:
		opts.Config = cfg
	}
	// Only up, status and restart ask the cluster about itself: down, kill
	// and logs work without the client's certificate (missing, expired).
	if opts.Config != nil && (word == "up" || word == "status" || word == "restart") {
		obs, cl, err := newLaunchObserver(cfg)
		if err != nil {
			return launchFailed(e, exitUsage, err)
		}
		defer cl.Close()
		opts.Observer = obs
	}
	l, err := launch.New(opts)
	if err != nil {
		return launchFailed(e, exitException, err)
	}
	defer l.Close()
	switch word {
	case "up":
		err = l.Up(ctx)
	case "down":
		err = l.Down(ctx)
	case "status":
		err = l.Status(ctx)
	case "kill":
		err = l.Kill(ctx, rest[0])
	case "restart":
		err = l.Restart(ctx, rest[0])
	case "logs":
		err = l.Logs(ctx, rest[0])
	}
	if err != nil {
		return launchFailed(e, exitFail, err)
	}
	return nil
}

// firstLine is the first line of s.
func firstLine(s string) string {
	first, _, _ := strings.Cut(s, "\n")
	return first
}

// launchFailed prints err as the launcher's last words, each line of it
// starting "launch: " but for the indented details, and returns exit code
// code.
func launchFailed(e *env, code int, err error) error {
	msg := err.Error()
	var xe *exitError
	if errors.As(err, &xe) {
		code = xe.code
		if xe.hint != "" {
			msg += "\n" + xe.hint
		}
	}
	for _, line := range strings.Split(msg, "\n") {
		if strings.HasPrefix(line, " ") {
			fmt.Fprintln(e.stderr, line)
		} else {
			fmt.Fprintln(e.stderr, "launch: "+line)
		}
	}
	return exitWith(code)
}

// newLaunchObserver returns the launcher's observer of cfg's masters and
// nodes, dialing with the configuration's TLS, and the client it asks the
// nodes with: close it when done.
func newLaunchObserver(cfg *config.Config) (launch.Observer, *client.Client, error) {
	dial, err := toolDialOptions(cfg, adminID)
	if err != nil {
		return nil, nil, err
	}
	cl, err := client.New(cfg.NodeAddrs(), client.Options{DialOptions: dial, AttemptTimeout: launchAttempt})
	if err != nil {
		return nil, nil, err
	}
	return launch.NewStatusObserver(clusterstatus.New(cfg, cl, dial, launchAttempt)), cl, nil
}
