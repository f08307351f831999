package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
)

// wscatSession is a real wscat (the npm package pinned in e2e/wscat),
// running interactively in a detached tmux session as a person would run
// it: lines are typed with send-keys, and the screen (with its scrollback)
// is read back with capture-pane. wscat prints every message it receives
// as "< {json}"; typed lines show as "> line".
type wscatSession struct {
	t      *testing.T
	sock   string // tmux server socket: a private server per session
	target string
	taken  map[int]bool // indexes of received messages already taken
}

// wscatBin is where `npm ci` in e2e/wscat installs wscat.
func wscatBin(t *testing.T) string {
	t.Helper()
	bin, err := filepath.Abs(filepath.Join("wscat", "node_modules", ".bin", "wscat"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("wscat is not installed (%v): scripts/test installs it with `(cd e2e/wscat && npm ci)` "+
			"(and nodejs/npm from Debian); run that first", err)
	}
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatalf("node is not installed: scripts/test installs it (apt-get install nodejs npm)")
	}
	return bin
}

// startWscat runs `wscat --no-color -c URL` in a new tmux server and waits
// until wscat says it is connected.
func startWscat(t *testing.T, u string) *wscatSession {
	t.Helper()
	bin := wscatBin(t)
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Fatalf("tmux is not installed: scripts/test installs it (apt-get install tmux)")
	}
	// A short private directory: tmux sockets live in a path of at most
	// about 100 bytes.
	dir, err := os.MkdirTemp("", "gavel-tmux")
	if err != nil {
		t.Fatal(err)
	}
	s := &wscatSession{t: t, sock: filepath.Join(dir, "s"), target: "wscat", taken: map[int]bool{}}
	conf := filepath.Join(dir, "tmux.conf")
	// remain-on-exit keeps the screen readable after wscat exits.
	if err := os.WriteFile(conf, []byte("set -g history-limit 100000\nset -g remain-on-exit on\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(tmux, "-S", s.sock, "-f", conf, "new-session", "-d", "-s", s.target, "-x", "400", "-y", "60",
		bin+" --no-color -c '"+u+"'")
	cmd.Env = append(os.Environ(), "TERM=xterm")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	t.Cleanup(func() {
		_ = exec.Command(tmux, "-S", s.sock, "kill-server").Run()
		os.RemoveAll(dir)
	})
	s.waitScreen("wscat connected", 10*time.Second, func(screen string) bool {
		return strings.Contains(screen, "Connected (press CTRL+C to quit)")
	})
	return s
}

func (s *wscatSession) tmux(args ...string) string {
	s.t.Helper()
	cmd := exec.Command("tmux", append([]string{"-S", s.sock}, args...)...)
	cmd.Env = append(os.Environ(), "TERM=xterm")
	out, err := cmd.CombinedOutput()
	if err != nil {
		s.t.Fatalf("tmux %v: %v: %s", args, err, out)
	}
	return string(out)
}

// typeLine types one line into wscat and presses Enter.
func (s *wscatSession) typeLine(line string) {
	s.t.Helper()
	s.tmux("send-keys", "-t", s.target, "-l", "--", line)
	s.tmux("send-keys", "-t", s.target, "Enter")
}

// screen is wscat's whole transcript: scrollback and screen, wrapped lines
// joined.
func (s *wscatSession) screen() string {
	s.t.Helper()
	return s.tmux("capture-pane", "-p", "-J", "-S", "-", "-E", "-", "-t", s.target)
}

func (s *wscatSession) waitScreen(what string, timeout time.Duration, ok func(string) bool) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sc := s.screen()
		if ok(sc) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("wscat: no %s within %v; its screen:\n%s", what, timeout, sc)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// received parses every "< ..." line of the transcript as a JSON object,
// in order. A line that is not JSON fails the test: the gateway sends
// nothing else.
func (s *wscatSession) received() []wsMsg {
	s.t.Helper()
	var out []wsMsg
	for _, line := range strings.Split(s.screen(), "\n") {
		line = strings.TrimRight(line, " ")
		line = strings.TrimPrefix(line, "> ")
		if !strings.HasPrefix(line, "< ") {
			continue
		}
		m, err := parseWSMsg(strings.TrimPrefix(line, "< "))
		if err != nil {
			s.t.Fatalf("wscat printed a message that is not one JSON object: %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// expect waits for the first received message, not taken yet, that
// satisfies pred, and takes it.
func (s *wscatSession) expect(what string, timeout time.Duration, pred func(wsMsg) bool) wsMsg {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		msgs := s.received()
		for i, m := range msgs {
			if !s.taken[i] && pred(m) {
				s.taken[i] = true
				return m
			}
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("wscat: no %s within %v; its screen:\n%s", what, timeout, s.screen())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// do types a line and waits for the first message of type typ not taken yet.
func (s *wscatSession) do(line, typ string) wsMsg {
	s.t.Helper()
	s.typeLine(line)
	return s.expect(fmt.Sprintf("%q reply to %q", typ, line), 10*time.Second, func(m wsMsg) bool { return m.Type == typ })
}

// TestWscatSession drives a real wscat through a session with a real
// gateway in front of 3 masters and a 3-node chain: login, help, open,
// bids, result, a watch that shows another bidder's bids (through the
// gateway and through the chain's gRPC API) as highest pushes with
// increasing seq, the outbid push, malformed lines answered with error
// objects on a connection that stays usable, a JSON command with an id,
// unwatch, auctions, and Ctrl-C.
func TestWscatSession(t *testing.T) {
	wscatBin(t) // fail before starting a cluster when wscat is missing
	c := newGatewayCluster(t, 3)
	ws := startWscat(t, c.wsURL("g1", ""))

	help := ws.do("help", "help")
	if cmds, _ := help.fields()["commands"].([]any); len(cmds) == 0 {
		t.Errorf("help lists no commands: %s", help.Raw)
	}
	if m := ws.do("login alice", "login"); m.Bidder != "alice" {
		t.Errorf("login: %s", m.Raw)
	}

	before := time.Now()
	open := ws.do("open lamp 2m a brass lamp", "open")
	if open.Auction != "lamp" || open.Outcome != "success" || open.Reason != "" {
		t.Fatalf("open: %s", open.Raw)
	}
	if at := time.UnixMilli(open.ClosesAt); at.Before(before.Add(110*time.Second)) || at.After(time.Now().Add(130*time.Second)) {
		t.Errorf("open for 2m: closes_at %v, opened at %v", at, before)
	}

	if m := ws.do("bid lamp 100", "bid"); m.Auction != "lamp" || m.Amount != 100 || m.Outcome != "success" || m.Reason != "" {
		t.Fatalf("bid lamp 100: %s", m.Raw)
	}
	if m := ws.do("bid lamp 90", "bid"); m.Outcome != "fail" || m.Reason != "too_low" {
		t.Errorf("bid lamp 90 under 100: want fail too_low, got %s", m.Raw)
	}
	res := ws.do("result lamp", "result")
	if res.State != "open" || res.Highest != 100 || res.Bidder != "alice" || res.ClosesAt != open.ClosesAt || res.Winner != "" {
		t.Errorf("result lamp: %s", res.Raw)
	}

	// Watch: the current state comes first, then every change.
	if m := ws.do("watch lamp", "watching"); m.Auction != "lamp" {
		t.Errorf("watch: %s", m.Raw)
	}
	isHighest := func(amount int64) func(wsMsg) bool {
		return func(m wsMsg) bool { return m.Type == "highest" && m.Auction == "lamp" && m.Amount == amount }
	}
	first := ws.expect("highest push of the current state (100)", 10*time.Second, isHighest(100))

	// Another client bids while the session is open: bob through the
	// gateway on his own WebSocket, carol through the chain's gRPC API.
	bob, err := dialWS(t, c.wsURL("g1", "bob"), nil)
	if err != nil {
		t.Fatal(err)
	}
	addrs := []string{c.addrs["n1"], c.addrs["n2"], c.addrs["n3"]}
	carol, err := client.New(addrs, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer carol.Close()
	bobBid := func(amount int64) {
		t.Helper()
		m, err := bob.call(fmt.Sprintf("bid lamp %d", amount), "bid", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Outcome != "success" {
			t.Fatalf("bob's bid %d: %s", amount, m.Raw)
		}
	}
	pushes := []wsMsg{first}
	bobBid(120)
	pushes = append(pushes, ws.expect("highest push 120 (bob)", 10*time.Second, isHighest(120)))
	outbid := ws.expect("outbid push for alice", 10*time.Second, func(m wsMsg) bool { return m.Type == "outbid" })
	if outbid.Auction != "lamp" || outbid.Amount != 120 || outbid.Bidder != "bob" || outbid.YourBid != 100 {
		t.Errorf("outbid push: %s", outbid.Raw)
	}
	bobBid(150)
	pushes = append(pushes, ws.expect("highest push 150 (bob)", 10*time.Second, isHighest(150)))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	rep, err := carol.Bid(ctx, "lamp", "carol", 200, client.NewRequestID())
	cancel()
	if err != nil || rep.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("carol's gRPC bid 200: %v %v", rep, err)
	}
	pushes = append(pushes, ws.expect("highest push 200 (carol, through gRPC)", 10*time.Second, isHighest(200)))

	wantBidders := []string{"alice", "bob", "bob", "carol"}
	for i, p := range pushes {
		if p.Bidder != wantBidders[i] || p.ServerTime == 0 || p.ClosesAt != open.ClosesAt {
			t.Errorf("push %d: want bidder %s, server_time and closes_at %d: %s", i, wantBidders[i], open.ClosesAt, p.Raw)
		}
		if i > 0 && p.Seq <= pushes[i-1].Seq {
			t.Errorf("seq does not increase: %d then %d", pushes[i-1].Seq, p.Seq)
		}
	}
	if pushes[len(pushes)-1].Seq != rep.Version {
		t.Errorf("the last push's seq %d is not the chain's version %d of carol's bid", pushes[len(pushes)-1].Seq, rep.Version)
	}

	// Malformed lines get error objects; the session goes on.
	if m := ws.do("frobnicate lamp", "error"); m.Error == "" || m.Line != "frobnicate lamp" {
		t.Errorf("unknown command: %s", m.Raw)
	}
	if m := ws.do(`{"op":"bid","auction":"lamp"`, "error"); m.Error == "" {
		t.Errorf("truncated JSON: %s", m.Raw)
	}
	res = ws.do(`{"op":"result","auction":"lamp","id":"r7"}`, "result")
	if res.ID != "r7" || res.Highest != 200 || res.Bidder != "carol" || res.State != "open" {
		t.Errorf("JSON result with id r7 after the errors: %s", res.Raw)
	}

	// Unwatch: bob's next bid reaches the result but not the screen.
	if m := ws.do("unwatch lamp", "unwatched"); m.Auction != "lamp" {
		t.Errorf("unwatch: %s", m.Raw)
	}
	bobBid(250)
	if res = ws.do("result lamp", "result"); res.Highest != 250 || res.Bidder != "bob" {
		t.Errorf("result after bob's 250: %s", res.Raw)
	}
	time.Sleep(300 * time.Millisecond)
	for _, m := range ws.received() {
		if m.Type == "highest" && m.Amount == 250 {
			t.Errorf("a highest push after unwatch: %s", m.Raw)
		}
	}

	list := ws.do("auctions", "auctions")
	found := false
	if as, _ := list.fields()["auctions"].([]any); as != nil {
		for _, a := range as {
			if o, _ := a.(map[string]any); o != nil && o["auction"] == "lamp" && fmt.Sprint(o["highest"]) == "250" {
				found = true
			}
		}
	}
	if !found {
		t.Errorf("auctions does not list lamp with highest 250: %s", list.Raw)
	}

	// Ctrl-C ends wscat.
	ws.tmux("send-keys", "-t", ws.target, "C-c")
	ws.waitScreen("wscat exit", 10*time.Second, func(string) bool {
		return strings.TrimSpace(ws.tmux("display-message", "-p", "-t", ws.target, "#{pane_dead}")) == "1"
	})

	transcript := strings.TrimRight(ws.screen(), "\n ")
	t.Logf("wscat transcript:\n%s", transcript)
	if err := os.WriteFile(filepath.Join(c.dir, "wscat-transcript.txt"), []byte(transcript+"\n"), 0o644); err != nil {
		t.Log(err)
	}
}
