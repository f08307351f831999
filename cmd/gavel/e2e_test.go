package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/chain"
	"github.com/gavel-auction/gavel/config"
)

// startNodes starts cfg's nodes in-process, node i on lis[i], in the
// initial configuration `gavel node` builds; they stop when the test ends.
func startNodes(t *testing.T, cfg *config.Config, lis []net.Listener) {
	t.Helper()
	for i, id := range cfg.NodeIDs() {
		opts, err := nodeOptions(cfg, id, false)
		if err != nil {
			t.Fatal(err)
		}
		node, err := chain.NewNode(opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := node.Start(lis[i]); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(node.Stop)
	}
}

// startCluster starts n chain nodes in-process on 127.0.0.1 listeners, in
// the initial configuration that `gavel node` builds from the config file,
// and returns that file's path. The nodes stop when the test ends.
func startCluster(t *testing.T, n int) string {
	t.Helper()
	var lis []net.Listener
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis = append(lis, l)
		addrs = append(addrs, l.Addr().String())
	}
	path := writeConfig(t, "chain:\n  tick: 5ms\n  hello_retry: 20ms\nclient:\n  timeout: 10s\n", addrs...)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	startNodes(t, cfg, lis)
	return path
}

// expect runs a command and checks its exit code and that stdout contains
// each of want.
func expect(t *testing.T, code int, want []string, args ...string) string {
	t.Helper()
	got, out, errb := runCLI(t, args...)
	if got != code {
		t.Fatalf("gavel %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, out, errb)
	}
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Fatalf("gavel %s: stdout %q does not contain %q\nstderr: %s", strings.Join(args, " "), out, w, errb)
		}
	}
	return out
}

// jsonLines decodes each line of out.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var objs []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("line %q is not a JSON object: %v", line, err)
		}
		objs = append(objs, m)
	}
	return objs
}

func TestEndToEnd(t *testing.T) {
	cfg := startCluster(t, 3)
	c := []string{"--config", cfg}
	with := func(args ...string) []string { return append(args, c...) }

	expect(t, exitOK, []string{"success: opened a1, closes at "},
		with("open", "a1", "--duration", "10m", "--item", "Vintage guitar", "--min-increment", "5")...)
	expect(t, exitException, []string{`exception: auction exists: auction "a1" already exists`},
		with("open", "--auction", "a1", "--duration", "10m")...)

	// Bids: success, fail, exceptions; output line and exit code.
	expect(t, exitOK, []string{"success: alice leads a1 with 100 (version "},
		with("bid", "--auction", "a1", "--bidder", "alice", "100")...)
	expect(t, exitFail, []string{"fail: too low: the next bid must be at least 105"},
		with("bid", "--auction", "a1", "--bidder", "bob", "102")...)
	expect(t, exitException, []string{`exception: unknown auction: no auction "zz"`},
		with("bid", "--auction", "zz", "--bidder", "bob", "102")...)

	// A retry with the same request id returns the original outcome.
	first := jsonLines(t, expect(t, exitOK, nil,
		with("bid", "--auction", "a1", "--bidder", "bob", "110", "--request-id", "r-1", "--json")...))[0]
	again := jsonLines(t, expect(t, exitOK, nil,
		with("bid", "--auction", "a1", "--bidder", "bob", "110", "--request-id", "r-1", "--json")...))[0]
	if first["outcome"] != "success" || first["version"] != again["version"] || first["request_id"] != "r-1" {
		t.Fatalf("retry with the same request id: first %v, again %v", first, again)
	}
	expect(t, exitOK, []string{"success: bob bid 110 on a1", "duplicate request"},
		with("bid", "--auction", "a1", "--bidder", "bob", "110", "--request-id", "r-1")...)

	// Any node forwards: --node aims at the tail (by id or by address).
	expect(t, exitOK, []string{"success: carol leads a1 with 200"},
		with("bid", "--node", "n3", "--auction", "a1", "--bidder", "carol", "200")...)
	expect(t, exitFail, []string{`"outcome":"fail","reason":"too_low"`},
		with("bid", "--auction", "a1", "--bidder", "dave", "201", "--json", "--node", "n2")...)

	// Reads.
	expect(t, exitOK, []string{`open: a1 "Vintage guitar": carol leads with 200 (next bid at least 205), closes in `},
		with("result", "a1")...)
	res := jsonLines(t, expect(t, exitOK, nil, with("result", "--auction", "a1", "--json")...))[0]
	if res["highest"] != 200.0 || res["bidder"] != "carol" || res["state"] != "open" || res["node"] != "n3" {
		t.Fatalf("result --json: %v", res)
	}
	expect(t, exitException, nil, with("result", "nope")...)
	expect(t, exitOK, []string{"AUCTION", "a1", "open", "carol", "Vintage guitar"}, with("auctions")...)
	list := jsonLines(t, expect(t, exitOK, nil, with("auctions", "--json")...))
	if len(list) != 1 || list[0]["auction"] != "a1" {
		t.Fatalf("auctions --json: %v", list)
	}

	// A short auction closes by a replicated event; bids after it are refused.
	expect(t, exitOK, nil, with("open", "a2", "--duration", "200ms")...)
	expect(t, exitOK, []string{"success: erin leads a2 with 7"}, with("bid", "--auction", "a2", "--bidder", "erin", "7")...)
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, out, _ := runCLI(t, with("result", "a2")...)
		if strings.HasPrefix(out, "closed: a2: won by erin with 7") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a2 not closed after 5s: %q", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	expect(t, exitException, []string{`exception: closed: auction "a2" is closed`},
		with("bid", "--auction", "a2", "--bidder", "erin", "8")...)

	// Status: every node, roles in chain order, no lag once idle.
	out := expect(t, exitOK, []string{"chain epoch 1: n1 -> n2 -> n3", "NODE", "head", "middle", "tail"}, with("status")...)
	if strings.Count(out, "\n") != 5 {
		t.Fatalf("status: want a header line, a title and 3 nodes:\n%s", out)
	}
	nodes := jsonLines(t, expect(t, exitOK, nil, with("status", "--json")...))
	roles := []string{"head", "middle", "tail"}
	for i, n := range nodes {
		if n["role"] != roles[i] || n["up"] != true || n["epoch"] != 1.0 {
			t.Fatalf("status --json node %d: %v", i, n)
		}
	}

	// Reconfigure: splice n2 out; the chain keeps serving with the same data.
	expect(t, exitOK, []string{"pushing epoch 2: n1 -> n3", "n1", "head", "n3", "tail", "n2", "removed", "ok: epoch 2"},
		with("reconfigure", "--chain", "n1,n3")...)
	expect(t, exitOK, []string{"success: frank leads a1 with 300"}, with("bid", "--auction", "a1", "--bidder", "frank", "300")...)
	expect(t, exitOK, []string{"frank leads with 300"}, with("result", "a1")...)
	expect(t, exitOK, []string{"chain epoch 2: n1 -> n3", "removed"}, with("status")...)
	expect(t, exitException, nil, with("reconfigure", "--chain", "n1,n3", "--epoch", "2")...) // stale epoch refused

	// Bench: a short closed loop, machine-readable report.
	rep := jsonLines(t, expect(t, exitOK, nil,
		with("bench", "--clients", "4", "--duration", "300ms", "--warmup", "50ms", "--auctions", "2", "--bidders", "3", "--json")...))[0]
	for _, k := range []string{"clients", "seconds", "ops", "ops_per_s", "ok", "fail", "exception", "errors", "p50_ms", "p90_ms", "p99_ms", "max_ms"} {
		if _, ok := rep[k]; !ok {
			t.Fatalf("bench --json has no %q: %v", k, rep)
		}
	}
	if rep["ok"].(float64) == 0 || rep["errors"].(float64) != 0 || rep["clients"] != 4.0 {
		t.Fatalf("bench: %v", rep)
	}
}

// A bid whose chain cannot decide it ends, after --timeout, with exit 2 and
// the request id to retry with.
func TestBidUnavailable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := writeConfig(t, "", addr)
	code, out, errb := runCLI(t, "bid", "--config", cfg, "--auction", "a1", "--bidder", "alice", "5",
		"--timeout", "300ms", "--request-id", "rq-42")
	if code != exitException || out != "" {
		t.Fatalf("exit %d stdout %q, want 2 and nothing", code, out)
	}
	for _, w := range []string{"gavel: unavailable: ", "--request-id rq-42"} {
		if !strings.Contains(errb, w) {
			t.Fatalf("stderr %q lacks %q", errb, w)
		}
	}
	code, _, errb = runCLI(t, "status", "--config", cfg, "--timeout", "300ms")
	if code != exitException || !strings.Contains(errb, "no node answered") {
		t.Fatalf("status of a dead cluster: exit %d, stderr %q", code, errb)
	}
}

// `gavel node` serves until its context ends (SIGINT/SIGTERM in main).
func TestNodeCommand(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // the node listens on it again; a race with another process is unlikely
	cfg := writeConfig(t, "", addr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	logs := &syncWriter{w: &bytes.Buffer{}}
	go func() { done <- run(ctx, []string{"node", "--id", "n1", "--config", cfg}, &bytes.Buffer{}, logs) }()

	deadline := time.Now().Add(5 * time.Second)
	for {
		code, out, _ := runCLI(t, "status", "--config", cfg, "--json")
		if code == exitOK && strings.Contains(out, `"role":"single"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("node never came up: %q", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	expect(t, exitOK, nil, "open", "a1", "--duration", "1m", "--config", cfg)
	expect(t, exitOK, []string{"success: alice leads a1 with 5"}, "bid", "--auction", "a1", "--bidder", "alice", "5", "--config", cfg)
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("node exited %d; log:\n%s", code, logs)
		}
		if !strings.Contains(logs.String(), "node=n1") || !strings.Contains(logs.String(), "stopping") {
			t.Fatalf("node log lacks its id or the stop:\n%s", logs)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("node did not stop")
	}
}

// syncWriter serializes writes from the node's goroutines.
type syncWriter struct {
	mu sync.Mutex // guards w
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}
