// Command gavel is the one binary of the gavel auction service: the master
// (`gavel master`), the chain node (`gavel node`), the gateway (`gavel
// gateway`), the command-line client (bid, result, open, auctions, status),
// the admin tools (reconfigure, token, certs) and the load generator
// (bench).
// `gavel help` lists the subcommands.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes shared by every subcommand.
const (
	exitOK        = 0 // success (a bid or open succeeded; a read answered)
	exitFail      = 1 // a bid failed: too low
	exitException = 2 // an exception (closed, unknown auction, invalid amount, unavailable...) or a runtime error
	exitUsage     = 3 // bad command line or configuration
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

// commands lists the subcommands in the order help shows them.
var commands = []command{
	{"master", "run a master replica (Raft group holding the chain configuration)", cmdMaster},
	{"node", "run a chain node", cmdNode},
	{"gateway", "run a gateway: WebSocket protocol, web page and live pushes for bidders", cmdGateway},
	{"bid", "place a bid", cmdBid},
	{"result", "show an auction's highest bid or winner", cmdResult},
	{"open", "open an auction", cmdOpen},
	{"auctions", "list every auction", cmdAuctions},
	{"status", "show every node's role, epoch and progress", cmdStatus},
	{"reconfigure", "push a new chain configuration to the nodes (admin)", cmdReconfigure},
	{"bench", "closed-loop load generator: bids/s and latency; bench ws: the gateway's pushes to many watchers", cmdBench},
	{"token", "print a bearer token for the gateways (auth.secret)", cmdToken},
	{"config", "check the configuration, list its nodes", cmdConfig},
	{"launch", "start, inspect and stop the processes of the configuration on its hosts", cmdLaunch},
	{"certs", "make the CA and every process's certificate for mutual TLS (certs init)", cmdCerts},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes the command line args (without the program name) and
// returns the exit code. ctx ends on SIGINT or SIGTERM.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	args = hoistGlobalFlags(args)
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name, rest := args[0], args[1:]
	switch name {
	case "help", "-h", "--help":
		if len(rest) == 0 {
			usage(stdout)
			return exitOK
		}
		name, rest = rest[0], []string{"--help"}
	}
	for _, c := range commands {
		if c.name == name {
			return e.report(c.run(ctx, e, rest))
		}
	}
	fmt.Fprintf(stderr, "gavel: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}

// usage prints the list of subcommands.
func usage(w io.Writer) {
	fmt.Fprint(w, "gavel: a chain-replicated auction service\n\nusage: gavel <command> [flags] [args]\n\ncommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
	}
	fmt.Fprint(w, `  help         show this list, or "gavel help <command>" for one command

Client commands read the nodes from --config (default ./config.yaml), or talk
to one node only with --node ADDR; --json prints one JSON object per line.

exit codes: 0 success, 1 bid failed (too low), 2 exception (closed, unknown
auction, invalid amount, unavailable after --timeout, ...), 3 usage or
configuration error.
`)
}

// hoistGlobalFlags lets common flags come before the subcommand, as in
// `gavel --config prod.yaml status`: it moves them after the subcommand's
// name, where each subcommand parses them.
func hoistGlobalFlags(args []string) []string {
	var lead []string
	i := 0
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "-" &&
		args[i] != "-h" && args[i] != "--help" {
		lead = append(lead, args[i])
		if !strings.Contains(args[i], "=") && args[i] != "--json" && i+1 < len(args) {
			lead = append(lead, args[i+1])
			i++
		}
		i++
	}
	if i >= len(args) {
		return args
	}
	return append(append([]string{args[i]}, lead...), args[i+1:]...)
}
