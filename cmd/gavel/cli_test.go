package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/internal/clusterstatus"
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
// n2, ... in order) and returns its path. Its cluster runs in plaintext
// on loopback (insecure: true).
func writeConfig(t *testing.T, extra string, addrs ...string) string {
	t.Helper()
	var b strings.Builder
	dir := t.TempDir()
	b.WriteString("insecure: true\nnodes:\n")
	for i, a := range addrs {
		id := "n" + string(rune('1'+i))
		b.WriteString("  - id: " + id + "\n    addr: " + a + "\n    data_dir: " + filepath.Join(dir, "data", id) + "\n")
	}
	b.WriteString(extra)
	path := filepath.Join(dir, "config.yaml")
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

// mastersYAML is a masters: section for writeConfig: master i (m1, m2, ...)
// at addrs[i], Raft on 127.0.0.1:1000+i (never dialled by the CLI).
func mastersYAML(dir string, addrs ...string) string {
	var b strings.Builder
	b.WriteString("masters:\n")
	for i, a := range addrs {
		id := "m" + string(rune('1'+i))
		b.WriteString("  - id: " + id + "\n    addr: " + a + "\n    raft_addr: 127.0.0.1:" +
			strconv.Itoa(1000+i) + "\n")
		if dir != "" {
			b.WriteString("    data_dir: " + filepath.Join(dir, id) + "\n")
		}
	}
	return b.String()
}

func TestConfigCommands(t *testing.T) {
	static := writeConfig(t, "", "127.0.0.1:7101", "127.0.0.1:7102")
	withMasters := writeConfig(t, mastersYAML("/var/gavel", "127.0.0.1:7201", "127.0.0.1:7202")+
		"  - id: m3\n    addr: 127.0.0.1:7203\n    raft_addr: 127.0.0.1:7303\nmaster:\n  data_dir: /srv/raft\n",
		"127.0.0.1:7101", "127.0.0.1:7102")

	expect(t, exitOK, []string{"ok: " + static + " (no masters: static chain of 2 nodes)"}, "config", "check", "--config", static)
	expect(t, exitOK, []string{"ok: " + withMasters + " (3 masters, 2 nodes)"}, "config", "check", "--config", withMasters)
	if out := expect(t, exitOK, nil, "config", "masters", "--config", static); out != "" {
		t.Errorf("config masters without masters: %q", out)
	}
	for _, c := range []struct{ action, want string }{
		{"nodes", "n1 127.0.0.1:7101\nn2 127.0.0.1:7102\n"},
		{"masters", "m1 127.0.0.1:7201 127.0.0.1:1000 /var/gavel/m1\n" +
			"m2 127.0.0.1:7202 127.0.0.1:1001 /var/gavel/m2\n" +
			"m3 127.0.0.1:7203 127.0.0.1:7303 /srv/raft/m3\n"},
		{"processes", "master m1 127.0.0.1:7201\nmaster m2 127.0.0.1:7202\nmaster m3 127.0.0.1:7203\n" +
			"node n1 127.0.0.1:7101\nnode n2 127.0.0.1:7102\n"},
	} {
		if out := expect(t, exitOK, nil, "config", c.action, "--config", withMasters); out != c.want {
			t.Errorf("config %s:\n%s\nwant:\n%s", c.action, out, c.want)
		}
	}
	for _, c := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"config", "--config", withMasters}, "want one of: check, nodes, masters, processes"},
		{[]string{"config", "frob", "--config", withMasters}, `unknown config action "frob"`},
	} {
		code, _, errb := runCLI(t, c.args...)
		if code != exitUsage || !strings.Contains(errb, c.stderr) {
			t.Errorf("gavel %v: exit %d stderr %q, want 3 and %q", c.args, code, errb, c.stderr)
		}
	}
}

// fakeMaster serves a canned MasterStatus.
type fakeMaster struct {
	api.UnimplementedMasterServer
	st *api.MasterStatus
}

func (f *fakeMaster) Status(context.Context, *api.MasterStatusRequest) (*api.MasterStatus, error) {
	return f.st, nil
}

// serveMaster serves st on a loopback port until the test ends and returns
// the address.
func serveMaster(t *testing.T, st *api.MasterStatus) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	api.RegisterMasterServer(s, &fakeMaster{st: st})
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return l.Addr().String()
}

// deadAddr returns a loopback address on which nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// The masters' view, the chain as the leader sees it and every node's own
// status, with one master and one node down: no error exit.
func TestStatusWithMasters(t *testing.T) {
	static, err := config.Load(startCluster(t, 2))
	if err != nil {
		t.Fatal(err)
	}
	n1, n2 := static.Nodes[0].Addr, static.Nodes[1].Addr
	n3 := deadAddr(t)
	// The master's n1 is the running process; its n2 is an earlier run.
	own := jsonLines(t, expect(t, exitOK, nil, "status", "--config", static.File, "--node", "n1", "--json"))[0]
	inc1, err := strconv.ParseUint(own["incarnation"].(string), 16, 64)
	if err != nil {
		t.Fatal(err)
	}
	members := []*api.Member{{Id: "n1", Addr: n1, Incarnation: inc1}, {Id: "n2", Addr: n2, Incarnation: 7}}
	joining := []*api.Member{{Id: "n3", Addr: n3, Incarnation: 0x1122334455667788}}
	chainCfg := &api.ChainConfig{Epoch: 7, Chain: members, Joining: joining}
	leader := serveMaster(t, &api.MasterStatus{Id: "m1", RaftState: "Leader", Term: 4, LeaderId: "m1",
		AppliedIndex: 30, Config: chainCfg, UptimeMs: 65_000, Nodes: []*api.NodeHealth{
			{Id: "n1", Addr: n1, Incarnation: inc1, Role: api.Role_HEAD, Epoch: 7, Applied: 12, Committed: 12, LastHeartbeatMs: 20, Leased: true},
			{Id: "n2", Addr: n2, Incarnation: 7, Role: api.Role_TAIL, Epoch: 7, Applied: 9, Committed: 9, LastHeartbeatMs: 35, Leased: true, CaughtUp: true},
			{Id: "n3", Addr: n3, Incarnation: 0x1122334455667788, Role: api.Role_JOINING, Epoch: 7, Applied: 2, LastHeartbeatMs: 1500},
		}})
	follower := serveMaster(t, &api.MasterStatus{Id: "m2", RaftState: "Follower", Term: 4, LeaderId: "m1",
		AppliedIndex: 30, Config: chainCfg})
	path := writeConfig(t, mastersYAML("", leader, follower, deadAddr(t))+"client:\n  timeout: 2s\n", n1, n2, n3)

	out := expect(t, exitOK, []string{
		"masters: leader m1, term 4 (2 of 3 up)",
		"chain epoch 7 (master leader m1): n1 -> n2, joining n3",
		"nodes, each as it reports itself (newest configuration among them: epoch 1: n1 -> n2)",
	}, "status", "--config", path)
	lines := strings.Split(out, "\n")
	find := func(prefix string) []string { // the line whose first fields are prefix
		t.Helper()
		for _, l := range lines {
			if strings.HasPrefix(strings.Join(strings.Fields(l), " ")+" ", prefix+" ") {
				return strings.Fields(l)
			}
		}
		t.Fatalf("no line for %s in:\n%s", prefix, out)
		return nil
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"MASTER", []string{"MASTER", "ADDR", "STATE", "TERM", "EPOCH", "INDEX", "UPTIME", "NOTE"}},
		{"m1", []string{"m1", leader, "leader", "4", "7", "30", "1m5s"}},
		{"m2", []string{"m2", follower, "follower", "4", "7", "30", "0ms"}},
		{"NODE ROLE", []string{"NODE", "ROLE", "ADDR", "APPLIED", "LAG", "HEARTBEAT", "LEASE", "INCARNATION", "NOTE"}},
		{"n1 head", []string{"n1", "head", n1, "12", "0", "20ms", "ago", "yes", shortInc(own["incarnation"].(string))}},
		{"n2 tail", []string{"n2", "tail", n2, "9", "3", "35ms", "ago", "yes", "7", "process", "restarted:", "the",
			"node", "now", "runs", shortInc(st2inc(t, static.File))}},
		{"n3 joining", []string{"n3", "joining", n3, "2", "10", "1.5s", "ago", "no", "11223344", "catching", "up"}},
	} {
		if got := find(c.prefix); strings.Join(got, " ") != strings.Join(c.want, " ") {
			t.Errorf("line %s: %q, want %q", c.prefix, got, c.want)
		}
	}
	if m3 := find("m3"); m3[2] != "down" {
		t.Errorf("m3: %q", m3)
	}
	if !strings.Contains(out, "LEASE  INCARNATION") || strings.Count(out, "down") < 2 {
		t.Errorf("node table: want the lease and incarnation columns and n3 down:\n%s", out)
	}

	var st struct {
		Leader  string
		Masters []struct {
			ID     string
			Up     bool
			State  string
			Leader bool
		}
		Chain struct {
			Source  string
			Leader  bool
			Epoch   uint64
			Chain   []string
			Joining []string
			Nodes   []struct {
				ID, Role, Incarnation string
				Lag                   *int64
				HeartbeatMs           *int64 `json:"last_heartbeat_ms"`
				Leased                bool
				Running               string `json:"running_incarnation"`
			}
		}
		Nodes []clusterstatus.Node
	}
	js := expect(t, exitOK, nil, "status", "--config", path, "--json")
	if strings.Count(strings.TrimSpace(js), "\n") != 0 {
		t.Fatalf("status --json with masters: want one line, got:\n%s", js)
	}
	if err := json.Unmarshal([]byte(js), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, js)
	}
	if st.Leader != "m1" || len(st.Masters) != 3 || !st.Masters[0].Leader || st.Masters[1].Leader ||
		st.Masters[1].State != "follower" || st.Masters[2].Up || st.Masters[2].State != "down" {
		t.Errorf("masters: %+v (leader %q)", st.Masters, st.Leader)
	}
	c := st.Chain
	if c.Source != "m1" || !c.Leader || c.Epoch != 7 || strings.Join(c.Chain, ",") != "n1,n2" ||
		strings.Join(c.Joining, ",") != "n3" || len(c.Nodes) != 3 {
		t.Fatalf("chain: %+v", c)
	}
	if n := c.Nodes[1]; n.Role != "tail" || *n.Lag != 3 || *n.HeartbeatMs != 35 || !n.Leased || n.Incarnation != "7" ||
		n.Running != st2inc(t, static.File) {
		t.Errorf("chain node n2: %+v", n)
	}
	if n := c.Nodes[0]; n.Running != "" {
		t.Errorf("chain node n1 runs the member's incarnation, yet: %+v", n)
	}
	if len(st.Nodes) != 3 || !st.Nodes[0].Up || !st.Nodes[1].Up || st.Nodes[2].Up || st.Nodes[2].Role != "down" ||
		st.Nodes[0].Incarnation == "" || st.Nodes[0].LeaseMs > 0 {
		t.Errorf("nodes: %+v", st.Nodes)
	}

	// --node: that node only, as without masters.
	expect(t, exitOK, []string{"NODE", "n1"}, "status", "--config", path, "--node", "n1")
}

// st2inc is the incarnation node n2 of config path reports.
func st2inc(t *testing.T, path string) string {
	t.Helper()
	return jsonLines(t, expect(t, exitOK, nil, "status", "--config", path, "--node", "n2", "--json"))[0]["incarnation"].(string)
}

// Masters without nodes answer: exit 0; nothing answers: exit 2.
func TestStatusWithMastersDown(t *testing.T) {
	follower := serveMaster(t, &api.MasterStatus{Id: "m1", RaftState: "Candidate", Term: 2,
		Config: &api.ChainConfig{}})
	path := writeConfig(t, mastersYAML("", follower, deadAddr(t), deadAddr(t)), deadAddr(t))
	expect(t, exitOK, []string{"masters: no leader (1 of 3 up)", "m1", "candidate", "knows no leader",
		"chain epoch 0 (as master m1 applied it; no leader, so no heartbeats): empty", "not in the chain: n1"},
		"status", "--config", path, "--timeout", "1s")
	js := expect(t, exitOK, []string{`"leader":""`, `"source":"m1"`}, "status", "--config", path, "--json", "--timeout", "1s")
	if strings.Count(strings.TrimSpace(js), "\n") != 0 {
		t.Fatalf("one JSON object, got:\n%s", js)
	}

	dead := writeConfig(t, mastersYAML("", deadAddr(t), deadAddr(t), deadAddr(t)), deadAddr(t))
	code, out, errb := runCLI(t, "status", "--config", dead, "--timeout", "1s")
	if code != exitException || !strings.Contains(errb, "no master and no node answered") ||
		!strings.Contains(out, "masters: none answered (3 configured)") || !strings.Contains(out, "chain: unknown") {
		t.Fatalf("nothing up: exit %d\nstdout: %s\nstderr: %s", code, out, errb)
	}
}

// Without TLS a master, node or gateway starts only when the configuration
// says insecure: true: otherwise it exits at once (3), naming the file and
// the key, and listens on nothing.
func TestServersRefusePlaintextWithoutInsecure(t *testing.T) {
	dir := t.TempDir()
	node, master, gw := "127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"
	path := filepath.Join(dir, "config.yaml")
	yaml := "nodes:\n  - {id: n1, addr: \"" + node + "\"}\nmasters:\n  - {id: m1, addr: \"" + master +
		"\", raft_addr: \"127.0.0.1:4\", data_dir: " + filepath.Join(dir, "m1") + "}\ngateways:\n  - {id: g1, addr: \"" + gw + "\"}\n"
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"node", "--id", "n1"}, {"master", "--id", "m1"}, {"gateway", "--id", "g1"}} {
		code, _, errb := runCLI(t, append(args, "--config", path)...)
		if code != exitUsage || !strings.Contains(errb, path+": insecure: tls.ca is not set") || !strings.Contains(errb, "insecure: true") {
			t.Errorf("gavel %v: exit %d, stderr %q; want 3 naming insecure", args, code, errb)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "m1")); err == nil {
		t.Error("the refused master made its data dir")
	}
}
