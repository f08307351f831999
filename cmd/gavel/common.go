package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/config"
)

// env is where a command writes.
type env struct {
	stdout, stderr io.Writer
	// json is set once a command has parsed --json: errors are then also
	// reported as a JSON object on stdout.
	json bool
}

// exitError ends a command with an exit code. A non-empty msg is printed on
// stderr as "gavel: msg"; hint (if any) follows on its own line.
type exitError struct {
	code int
	msg  string
	hint string
}

// Error is the message printed after "gavel: ".
func (e *exitError) Error() string { return e.msg }

// errHelp ends a command that printed its help on request.
var errHelp = &exitError{code: exitOK}

// exitWith returns an error that only sets the exit code: the command has
// already printed its outcome.
func exitWith(code int) error {
	if code == exitOK {
		return nil
	}
	return &exitError{code: code}
}

// exception returns an error with exit code 2.
func exception(format string, args ...any) error {
	return &exitError{code: exitException, msg: fmt.Sprintf(format, args...)}
}

// report prints err as a command's last words and returns the exit code.
func (e *env) report(err error) int {
	if err == nil {
		return exitOK
	}
	var xe *exitError
	if !errors.As(err, &xe) {
		xe = &exitError{code: exitException, msg: err.Error()}
		var ce *config.Error
		if errors.As(err, &ce) {
			xe.code = exitUsage
		}
	}
	if xe.msg != "" {
		for _, line := range strings.Split(xe.msg, "\n") {
			fmt.Fprintf(e.stderr, "gavel: %s\n", line)
		}
		if e.json {
			e.printJSON(struct {
				Error string `json:"error"`
				Exit  int    `json:"exit"`
			}{xe.msg, xe.code})
		}
	}
	if xe.hint != "" {
		fmt.Fprintln(e.stderr, xe.hint)
	}
	return xe.code
}

// printJSON writes v as one line of JSON on stdout.
func (e *env) printJSON(v any) {
	b, err := json.Marshal(v)
	if err != nil {
		b = []byte(fmt.Sprintf(`{"error":%q}`, err.Error()))
	}
	fmt.Fprintf(e.stdout, "%s\n", b)
}

// ---------------------------------------------------------------------------
// Flags.

// flags is one subcommand's flag set with its help text.
type flags struct {
	*pflag.FlagSet
	e        *env
	name     string
	synopsis string // what follows "gavel NAME" in the usage line
	about    string // paragraph(s) after the usage line
}

// newFlags returns an empty flag set for subcommand name.
func newFlags(e *env, name, synopsis, about string) *flags {
	fs := pflag.NewFlagSet(name, pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetInterspersed(true)
	fs.SortFlags = false
	return &flags{FlagSet: fs, e: e, name: name, synopsis: synopsis, about: about}
}

// usage prints the subcommand's help.
func (f *flags) usage(w io.Writer) {
	fmt.Fprintf(w, "usage: gavel %s %s\n\n%s\n\nflags:\n%s", f.name, f.synopsis,
		strings.TrimSpace(f.about), f.FlagUsages())
}

// usageErr returns a usage error (exit 3) with a hint to the help.
func (f *flags) usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, msg: fmt.Sprintf(format, args...),
		hint: fmt.Sprintf("run 'gavel %s --help' for usage", f.name)}
}

// negNumber matches an argument that is a negative number, not a flag.
var negNumber = regexp.MustCompile(`^-[0-9]`)

// argMark prefixes negative-number arguments while pflag parses; no
// command-line argument can contain a NUL byte.
const argMark = "\x00"

// parse parses args and returns the positional arguments. Flags and
// arguments may be interspersed. A negative number such as -5 is taken as
// an argument (so that it can be refused with a clear message), not as an
// unknown shorthand flag. --help prints the help and returns errHelp.
func (f *flags) parse(args []string) ([]string, error) {
	marked := make([]string, len(args))
	copy(marked, args)
	for i := 0; i < len(marked); i++ {
		a := marked[i]
		if a == "--" {
			break
		}
		if negNumber.MatchString(a) && !f.takesValue(args, i) {
			marked[i] = argMark + a
		}
	}
	if err := f.Parse(marked); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			f.usage(f.e.stdout)
			return nil, errHelp
		}
		return nil, f.usageErr("%s", strings.ReplaceAll(err.Error(), argMark, ""))
	}
	pos := f.Args()
	out := make([]string, len(pos))
	for i, a := range pos {
		out[i] = strings.TrimPrefix(a, argMark)
	}
	return out, nil
}

// takesValue reports whether args[i] is the value of the flag args[i-1].
func (f *flags) takesValue(args []string, i int) bool {
	if i == 0 {
		return false
	}
	prev := args[i-1]
	var fl *pflag.Flag
	switch {
	case strings.HasPrefix(prev, "--") && !strings.Contains(prev, "="):
		fl = f.Lookup(prev[2:])
	case len(prev) == 2 && prev[0] == '-' && prev[1] != '-':
		fl = f.ShorthandLookup(prev[1:])
	}
	return fl != nil && fl.NoOptDefVal == ""
}

// common are the flags every client command shares.
type common struct {
	f          *flags
	configPath string
	node       string
	json       bool
	timeout    time.Duration
	// token is --token: a bearer token for nodes that run with
	// auth.secret.
	token string
	// as is the id of the tools' certificate the command presents with
	// TLS: clientID (the default) or adminID (see asAdmin).
	as string
	// dial are the gRPC dial options of the configuration (TLS), set by
	// client.
	dial []grpc.DialOption
}

// addCommon registers --config, --node, --json, --timeout and --token on f.
func addCommon(f *flags) *common {
	c := &common{f: f, as: clientID}
	f.StringVar(&c.configPath, "config", "config.yaml", "configuration file")
	f.StringVar(&c.node, "node", "", "talk to this node only (host:port, or a node id from the config); it forwards")
	f.BoolVar(&c.json, "json", false, "print one JSON object per line")
	f.DurationVar(&c.timeout, "timeout", 0, "give up after this long (default: client.timeout of the config, 5s)")
	f.StringVar(&c.token, "token", "", "bearer token (gavel token) for nodes that run with auth.secret "+
		"(default: one signed with the config's auth.secret, when it has one)")
	return c
}

// asAdmin makes the command present the admin tools' certificate
// (adminID) instead of the client one: for the operator's commands.
func (c *common) asAdmin() *common {
	c.as = adminID
	return c
}

// toolTokenTTL is the lifetime of a token a command signs for itself.
const toolTokenTTL = time.Hour

// authorize returns ctx carrying the bearer token of a command acting for
// bidder with role (see tokenFor).
func (c *common) authorize(ctx context.Context, cfg *config.Config, bidder string, role auth.Role) (context.Context, error) {
	tok, err := c.tokenFor(cfg, bidder, role)
	if err != nil {
		return nil, err
	}
	return auth.WithToken(ctx, tok), nil
}

// tokenFor returns the bearer token of a command acting for bidder with
// role: --token if given, else one signed with the configuration's
// auth.secret, else "" (open mode, or the nodes check the certificate
// alone).
func (c *common) tokenFor(cfg *config.Config, bidder string, role auth.Role) (string, error) {
	if c.token != "" || cfg.Auth.Secret == "" {
		return c.token, nil
	}
	tok, err := auth.NewToken([]byte(cfg.Auth.Secret), bidder, role, c.timeout+toolTokenTTL, time.Now())
	if err != nil {
		return "", exception("signing a token for %s: %v", bidder, err)
	}
	return tok, nil
}

// parseCommon adds the common flags to f, parses args, and returns the
// common values and the positional arguments.
func parseCommon(f *flags, args []string) (*common, []string, error) {
	com := addCommon(f)
	pos, err := f.parse(args)
	if err != nil {
		return nil, nil, err
	}
	com.parsed()
	return com, pos, nil
}

// parseCommonNoArgs is parseCommon for a command that takes no argument.
func parseCommonNoArgs(f *flags, args []string) (*common, error) {
	com, pos, err := parseCommon(f, args)
	if err != nil {
		return nil, err
	}
	return com, noArgs(f, pos)
}

// parsed is called after parsing: it makes --json apply to error reports.
func (c *common) parsed() {
	c.f.e.json = c.json
}

// load reads the configuration. With --node and no explicit --config, a
// missing config file is not an error: the built-in defaults apply.
func (c *common) load() (*config.Config, error) {
	cfg, err := config.Load(c.configPath)
	if err != nil {
		if c.node != "" && !c.f.Changed("config") && errors.Is(err, fs.ErrNotExist) {
			cfg = config.Default()
			cfg.Nodes, cfg.Masters = nil, nil
		} else {
			return nil, &exitError{code: exitUsage, msg: err.Error()}
		}
	}
	if !c.f.Changed("timeout") {
		c.timeout = cfg.Client.Timeout
	}
	if c.timeout <= 0 {
		return nil, c.f.usageErr("--timeout must be positive, got %v", c.timeout)
	}
	return cfg, nil
}

// addrs returns the addresses the client starts from, and whether it is
// pinned to them (--node).
func (c *common) addrs(cfg *config.Config) ([]string, bool) {
	if c.node != "" {
		if n, ok := cfg.Node(c.node); ok {
			return []string{n.Addr}, true
		}
		return []string{c.node}, true
	}
	addrs := make([]string, len(cfg.Nodes))
	for i, n := range cfg.Nodes {
		addrs[i] = n.Addr
	}
	return addrs, false
}

// client loads the configuration and returns a client of its nodes (or of
// --node only).
func (c *common) client() (*client.Client, *config.Config, error) {
	cfg, err := c.load()
	if err != nil {
		return nil, nil, err
	}
	c.dial, err = toolDialOptions(cfg, c.as)
	if err != nil {
		return nil, nil, err
	}
	addrs, pinned := c.addrs(cfg)
	cl, err := client.New(addrs, client.Options{Pinned: pinned, DialOptions: c.dial})
	if err != nil {
		if c.node != "" {
			return nil, nil, c.f.usageErr("--node: %v", err)
		}
		return nil, nil, &exitError{code: exitUsage, msg: fmt.Sprintf("%s: %v", cfg.File, err)}
	}
	return cl, cfg, nil
}

// call returns a client and a context bounded by --timeout for one call;
// done closes both.
func (c *common) call(ctx context.Context) (*client.Client, *config.Config, context.Context, func(), error) {
	cl, cfg, err := c.client()
	if err != nil {
		return nil, nil, nil, nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, c.timeout)
	return cl, cfg, cctx, func() { cancel(); cl.Close() }, nil
}

// ---------------------------------------------------------------------------
// Values.

// parseAmount reads a bid amount. Text that is not a whole number is a
// usage error (exit 3); a whole number outside 1..auction.MaxAmount, an
// overflow included, is an invalid amount (exit 2), refused before any
// network call, as the chain would refuse it.
func parseAmount(f *flags, what, s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil && errors.Is(err, strconv.ErrRange) {
		return 0, exception("invalid %s %s: %v", what, s, auction.ErrInvalidAmount)
	}
	if err != nil {
		return 0, f.usageErr("invalid %s %q: want a whole number of minor units, e.g. 100", what, s)
	}
	if n <= 0 || n > auction.MaxAmount {
		return 0, exception("invalid %s %s: %v", what, s, auction.ErrInvalidAmount)
	}
	return n, nil
}

// intText is an integer flag kept as text, so that its parsing (and its
// error message and exit code) is the command's: see parseAmount.
type intText string

// String, Set and Type make intText a pflag.Value.
func (v *intText) String() string { return string(*v) }

// Set keeps the flag's text as given; the command parses it.
func (v *intText) Set(s string) error { *v = intText(s); return nil }

// Type names the flag's value in the help.
func (v *intText) Type() string { return "int" }

// intFlag registers an integer flag kept as text.
func intFlag(f *flags, name, def, usage string) *intText {
	v := intText(def)
	f.Var(&v, name, usage)
	return &v
}

// oneArg returns the value given either as flag name or as the only
// positional argument.
func oneArg(f *flags, name, what string, pos []string) (string, error) {
	v := f.Lookup(name).Value.String()
	switch {
	case len(pos) > 1:
		return "", f.usageErr("too many arguments: %s", strings.Join(pos, " "))
	case len(pos) == 1 && f.Changed(name) && pos[0] != v:
		return "", f.usageErr("%s given twice: --%s %s and %s", what, name, v, pos[0])
	case len(pos) == 1:
		v = pos[0]
	}
	if v == "" {
		return "", f.usageErr("missing %s: give --%s or an argument", what, name)
	}
	return v, nil
}

// noArgs returns a usage error if there are positional arguments.
func noArgs(f *flags, pos []string) error {
	if len(pos) > 0 {
		return f.usageErr("unexpected argument %q", pos[0])
	}
	return nil
}

// words turns an enum name such as TOO_LOW into "too low".
func words(name string) string {
	return strings.ToLower(strings.ReplaceAll(name, "_", " "))
}

// snake turns an enum name such as TOO_LOW into "too_low".
func snake(name string) string {
	return strings.ToLower(name)
}

// fmtTime formats a unix-millisecond time in local time.
func fmtTime(ms int64) string {
	if ms <= 0 {
		return "-"
	}
	return time.UnixMilli(ms).Local().Format("2006-01-02 15:04:05")
}

// fmtIn formats how long from now a time is, rounded to the second.
func fmtIn(ms, nowMs int64) string {
	d := time.Duration(ms-nowMs) * time.Millisecond
	if d <= 0 {
		return "now"
	}
	return "in " + d.Round(time.Second).String()
}

// serverFlags are the flags of a server process (master, node): the config
// file and the process's id in it.
type serverFlags struct {
	f              *flags
	configPath, id *string
}

// addServerFlags adds --config and --id (kind: "master" or "node") to f.
func addServerFlags(f *flags, kind string) serverFlags {
	return serverFlags{f: f, configPath: f.String("config", "config.yaml", "configuration file"),
		id: f.String("id", "", kind+" id, as listed in the config (required)")}
}

// load parses args (which must hold no positional argument and an --id)
// and loads the configuration, which must run with TLS or say insecure:
// true (config.CheckTransport).
func (s serverFlags) load(args []string) (*config.Config, error) {
	pos, err := s.f.parse(args)
	if err != nil {
		return nil, err
	}
	if err := noArgs(s.f, pos); err != nil {
		return nil, err
	}
	if *s.id == "" {
		return nil, s.f.usageErr("missing --id")
	}
	cfg, err := config.Load(*s.configPath)
	if err != nil {
		return nil, &exitError{code: exitUsage, msg: err.Error()}
	}
	if err := cfg.CheckTransport(); err != nil {
		return nil, &exitError{code: exitUsage, msg: err.Error()}
	}
	return cfg, nil
}

// serveHTTP serves h on addr (the process's http_addr: /metrics, /healthz,
// /readyz) until the returned stop is called; an empty addr serves nothing.
func serveHTTP(addr string, h http.Handler, log *slog.Logger, id string) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: http_addr %s: %w", id, addr, err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("http server stopped", "id", id, "err", err)
		}
	}()
	log.Info("serving /metrics, /healthz, /readyz", "id", id, "http_addr", addr)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
