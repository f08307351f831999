package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
)

// runCLI runs the command line and returns its exit code, stdout and stderr.
func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	code := run(ctx, args, &out, &errb)
	return code, out.String(), errb.String()
}

// writeConfig writes a config.yaml naming the given node addresses (n1,
// n2, ... in order) and returns its path.
func writeConfig(t *testing.T, extra string, addrs ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("nodes:\n")
	for i, a := range addrs {
		b.WriteString("  - id: n" + string(rune('1'+i)) + "\n    addr: " + a + "\n")
	}
	b.WriteString(extra)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Every check here fails before any network call: the config names ports
// on which nothing listens, and none of these cases may reach them.
func TestExitCodesWithoutNetwork(t *testing.T) {
	cfg := writeConfig(t, "", "127.0.0.1:1", "127.0.0.1:2")
	badCfg := writeConfig(t, "chain:\n  tick: 10\n", "127.0.0.1:1")
	typoCfg := writeConfig(t, "chian:\n  tick: 10ms\n", "127.0.0.1:1")
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	bid := func(args ...string) []string {
		return append([]string{"bid", "--config", cfg, "--auction", "a1", "--bidder", "alice"}, args...)
	}
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr string // substring of stderr
		stdout string // substring of stdout
	}{
		{"no command", nil, exitUsage, "usage: gavel <command>", ""},
		{"unknown command", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`, ""},
		{"help", []string{"help"}, exitOK, "", "commands:"},
		{"--help", []string{"--help"}, exitOK, "", "commands:"},
		{"help bid", []string{"help", "bid"}, exitOK, "", "usage: gavel bid"},
		{"bid --help", []string{"bid", "--help"}, exitOK, "", "--request-id"},
		{"bench -h", []string{"bench", "-h"}, exitOK, "", "--clients"},
		{"reconfigure --help", []string{"reconfigure", "--help"}, exitOK, "", "master will do automatically"},
		{"help unknown", []string{"help", "nope"}, exitUsage, `unknown command "nope"`, ""},
		{"unknown flag", bid("--frob", "100"), exitUsage, "unknown flag: --frob", ""},
		{"unknown shorthand", bid("-x", "100"), exitUsage, "unknown shorthand flag", ""},
		{"missing amount", bid(), exitUsage, "missing amount", ""},
		{"two amounts", bid("100", "200"), exitUsage, "too many arguments", ""},
		{"amount twice", bid("--amount", "100", "200"), exitUsage, "amount given twice", ""},
		{"missing auction", []string{"bid", "--config", cfg, "--bidder", "alice", "100"}, exitUsage, "missing --auction", ""},
		{"missing bidder", []string{"bid", "--config", cfg, "--auction", "a1", "100"}, exitUsage, "missing --bidder", ""},
		{"non-number", bid("abc"), exitUsage, `invalid amount "abc"`, ""},
		{"fraction", bid("1.5"), exitUsage, `invalid amount "1.5"`, ""},
		{"hex", bid("0x10"), exitUsage, `invalid amount "0x10"`, ""},
		{"zero", bid("0"), exitException, "invalid amount 0: amount must be a positive integer", ""},
		{"negative", bid("-5"), exitException, "invalid amount -5", ""},
		{"negative first", []string{"bid", "-5", "--config", cfg, "--auction", "a1", "--bidder", "alice"}, exitException, "invalid amount -5", ""},
		{"negative via flag", bid("--amount", "-5"), exitException, "invalid amount -5", ""},
		{"negative via flag=", bid("--amount=-5"), exitException, "invalid amount -5", ""},
		{"overflow", bid("99999999999999999999"), exitException, "invalid amount 99999999999999999999", ""},
		{"above max", bid("1000000000000001"), exitException, "invalid amount 1000000000000001", ""},
		{"long bidder", []string{"bid", "--config", cfg, "--auction", "a1", "--bidder", strings.Repeat("b", 200), "5"}, exitException, "invalid bid: bidder", ""},
		{"json usage error", bid("abc", "--json"), exitUsage, `invalid amount "abc"`, `{"error":"invalid amount \"abc\"`},
		{"missing config", []string{"bid", "--config", missing, "--auction", "a1", "--bidder", "b", "5"}, exitUsage, missing + ": cannot read config file", ""},
		{"bad config value", []string{"auctions", "--config", badCfg}, exitUsage, "chain.tick: invalid duration 10", ""},
		{"config typo", []string{"status", "--config", typoCfg}, exitUsage, `unknown key "chian"`, ""},
		{"zero timeout", []string{"auctions", "--config", cfg, "--timeout", "0s"}, exitUsage, "--timeout must be positive", ""},
		{"bad --node", []string{"auctions", "--node", "nohost", "--config", cfg}, exitUsage, "--node: invalid node address", ""},
		{"auctions extra arg", []string{"auctions", "--config", cfg, "x"}, exitUsage, `unexpected argument "x"`, ""},
		{"result no id", []string{"result", "--config", cfg}, exitUsage, "missing auction id", ""},
		{"result two ids", []string{"result", "--config", cfg, "--auction", "a1", "a2"}, exitUsage, "auction id given twice", ""},
		{"open no duration", []string{"open", "a1", "--config", cfg}, exitUsage, "missing --duration", ""},
		{"open bad duration", []string{"open", "a1", "--config", cfg, "--duration", "ten"}, exitUsage, "invalid argument", ""},
		{"open negative duration", []string{"open", "a1", "--config", cfg, "--duration", "-5m"}, exitException, "duration must be positive", ""},
		{"open too long", []string{"open", "a1", "--config", cfg, "--duration", "9000h"}, exitException, "at most a year", ""},
		{"open negative increment", []string{"open", "a1", "--config", cfg, "--duration", "1m", "--min-increment", "-5"}, exitException, "invalid --min-increment -5", ""},
		{"open non-number price", []string{"open", "a1", "--config", cfg, "--duration", "1m", "--starting-price", "lots"}, exitUsage, `invalid --starting-price "lots"`, ""},
		{"open huge item", []string{"open", "a1", "--config", cfg, "--duration", "1m", "--item", strings.Repeat("x", 2000)}, exitException, "item must be UTF-8", ""},
		{"node no id", []string{"node", "--config", cfg}, exitUsage, "missing --id", ""},
		{"node unknown id", []string{"node", "--config", cfg, "--id", "n9"}, exitUsage, `unknown node id "n9": ` + cfg + " lists n1, n2", ""},
		{"node missing config", []string{"node", "--config", missing, "--id", "n1"}, exitUsage, missing, ""},
		{"node --node", []string{"node", "--config", cfg, "--id", "n1", "--node", "x:1"}, exitUsage, "unknown flag: --node", ""},
		{"reconfigure no chain", []string{"reconfigure", "--config", cfg}, exitUsage, "missing --chain", ""},
		{"reconfigure unknown id", []string{"reconfigure", "--config", cfg, "--chain", "n1,n7"}, exitUsage, `--chain: unknown node id "n7": ` + cfg, ""},
		{"reconfigure twice", []string{"reconfigure", "--config", cfg, "--chain", "n1", "--joining", "n1"}, exitUsage, "node n1 listed twice", ""},
		{"reconfigure epoch 0", []string{"reconfigure", "--config", cfg, "--chain", "n1", "--epoch", "0"}, exitUsage, "--epoch must be at least 1", ""},
		{"reconfigure --node", []string{"reconfigure", "--config", cfg, "--chain", "n1", "--node", "n1"}, exitUsage, "--node does not apply", ""},
		{"bench zero clients", []string{"bench", "--config", cfg, "--clients", "0"}, exitUsage, "--clients must be positive", ""},
		{"bench bad duration", []string{"bench", "--config", cfg, "--duration", "x"}, exitUsage, "invalid argument", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, out, errb := runCLI(t, c.args...)
			if code != c.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, c.code, out, errb)
			}
			if !strings.Contains(errb, c.stderr) {
				t.Errorf("stderr %q does not contain %q", errb, c.stderr)
			}
			if !strings.Contains(out, c.stdout) {
				t.Errorf("stdout %q does not contain %q", out, c.stdout)
			}
			if c.code != exitOK && c.stderr != "" && !strings.HasPrefix(errb, "gavel: ") && !strings.HasPrefix(errb, "usage") {
				t.Errorf("stderr %q does not start with \"gavel: \"", errb)
			}
		})
	}
}

func TestParseKeepsNegativeNumbers(t *testing.T) {
	e := &env{stdout: &bytes.Buffer{}, stderr: &bytes.Buffer{}}
	f := newFlags(e, "x", "", "")
	inc := f.String("min-increment", "", "")
	verbose := f.Bool("v", false, "")
	pos, err := f.parse([]string{"-5", "--min-increment", "-7", "--v", "-3", "a", "--", "-9"})
	if err != nil {
		t.Fatal(err)
	}
	if *inc != "-7" || !*verbose {
		t.Fatalf("flags: min-increment %q v %v", *inc, *verbose)
	}
	if strings.Join(pos, " ") != "-5 -3 a -9" {
		t.Fatalf("positional %q", pos)
	}
}

func TestOutcomeLineAndCode(t *testing.T) {
	cases := []struct {
		o      api.Outcome
		r      api.Reason
		detail string
		want   string
		code   int
	}{
		{api.Outcome_SUCCESS, api.Reason_REASON_NONE, "highest bid", "success: alice leads a1 with 100 (version 17)", exitOK},
		{api.Outcome_FAIL, api.Reason_TOO_LOW, "too low: the next bid must be at least 105", "fail: too low: the next bid must be at least 105", exitFail},
		{api.Outcome_FAIL, api.Reason_TOO_LOW, "duplicate request: original outcome", "fail: too low: duplicate request: original outcome", exitFail},
		{api.Outcome_EXCEPTION, api.Reason_CLOSED, `auction "a1" is closed`, `exception: closed: auction "a1" is closed`, exitException},
		{api.Outcome_EXCEPTION, api.Reason_UNKNOWN_AUCTION, "", "exception: unknown auction", exitException},
		{api.Outcome_EXCEPTION, api.Reason_REASON_NONE, "", "exception", exitException},
		{api.Outcome_OUTCOME_UNSPECIFIED, api.Reason_REASON_NONE, "odd", "exception: odd", exitException},
	}
	for _, c := range cases {
		if got := outcomeLine(c.o, c.r, c.detail, "alice leads a1 with 100 (version 17)"); got != c.want {
			t.Errorf("outcomeLine(%v, %v, %q) = %q, want %q", c.o, c.r, c.detail, got, c.want)
		}
		if got := outcomeCode(c.o); got != c.code {
			t.Errorf("outcomeCode(%v) = %d, want %d", c.o, got, c.code)
		}
	}
}

func TestResultLine(t *testing.T) {
	now := time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC).UnixMilli()
	open := &api.AuctionInfo{Auction: "a1", Item: "guitar", State: api.AuctionState_OPEN, Highest: 100,
		Bidder: "alice", MinIncrement: 5, ClosesAtMs: now + 90_000, Version: 17}
	if got := resultLine(open, now); !strings.HasPrefix(got, `open: a1 "guitar": alice leads with 100 (next bid at least 105), closes in 1m30s at `) ||
		!strings.HasSuffix(got, "(version 17)") {
		t.Errorf("open: %q", got)
	}
	closed := &api.AuctionInfo{Auction: "a1", State: api.AuctionState_CLOSED_STATE, Highest: 100, Bidder: "alice", Version: 20}
	if got, want := resultLine(closed, now), "closed: a1: won by alice with 100 (version 20)"; got != want {
		t.Errorf("closed: %q, want %q", got, want)
	}
	closed.Bidder, closed.Highest = "", 0
	if got, want := resultLine(closed, now), "closed: a1: no bids (version 20)"; got != want {
		t.Errorf("closed without bids: %q, want %q", got, want)
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	if h.quantile(0.99) != 0 {
		t.Fatal("empty histogram has a quantile")
	}
	// 1..10000 microseconds, once each.
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 1} {
		want := time.Duration(q*10000) * time.Microsecond
		got := h.quantile(q)
		if diff := float64(got-want) / float64(want); diff > 0.01 || diff < -0.01 {
			t.Errorf("quantile(%v) = %v, want %v within 1%%", q, got, want)
		}
	}
	if h.max != 10*time.Millisecond {
		t.Errorf("max %v", h.max)
	}
	var m histogram
	m.merge(&h)
	m.merge(&h)
	if m.n != 20000 || m.quantile(0.5) != h.quantile(0.5) {
		t.Errorf("merge: n %d p50 %v", m.n, m.quantile(0.5))
	}
	// Every bucket's midpoint maps back to the bucket, and buckets grow.
	for i := 1; i < histBuckets; i++ {
		if bucketOf(bucketMid(i)) != i {
			t.Fatalf("bucketOf(bucketMid(%d)) = %d", i, bucketOf(bucketMid(i)))
		}
		if bucketMid(i) <= bucketMid(i-1) {
			t.Fatalf("bucket %d midpoint %v not above bucket %d's", i, bucketMid(i), i-1)
		}
	}
	if bucketOf(-1) != 0 || bucketOf(1<<62) != histBuckets-1 {
		t.Fatal("out-of-range values are not clamped")
	}
}
