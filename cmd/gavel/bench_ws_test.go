package main

import (
	"net"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/gateway"
)

// startClusterWithGateway starts n chain nodes and gateway g1 in-process
// on 127.0.0.1 listeners (static chain, no masters) and returns the
// config file's path; secure turns on mutual TLS (certificates made with
// gavel certs init) and auth mode. Everything stops when the test ends.
func startClusterWithGateway(t *testing.T, n int, secure bool) string {
	t.Helper()
	listen := func() net.Listener {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	var lis []net.Listener
	var addrs []string
	for range n {
		l := listen()
		lis = append(lis, l)
		addrs = append(addrs, l.Addr().String())
	}
	gl := listen()
	extra := "chain:\n  tick: 5ms\n  hello_retry: 20ms\nclient:\n  timeout: 10s\n" +
		"gateways:\n  - id: g1\n    addr: " + gl.Addr().String() + "\n"
	certs := filepath.Join(t.TempDir(), "certs")
	if secure {
		extra += "auth:\n  secret: " + testSecret + "\ntls:\n  ca: " + filepath.Join(certs, "ca.crt") +
			"\n  cert: " + filepath.Join(certs, "{id}.crt") + "\n  key: " + filepath.Join(certs, "{id}.key") + "\n"
	}
	path := writeConfig(t, extra, addrs...)
	if secure {
		expect(t, exitOK, nil, "certs", "init", "--config", path)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	startNodes(t, cfg, lis)
	opts, _, err := gatewayOptions(cfg, "g1")
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	g.Start(gl)
	t.Cleanup(g.Stop) // runs before the nodes stop
	return path
}

// num returns the number m[k], failing the test when there is none.
func num(t *testing.T, m map[string]any, k string) float64 {
	t.Helper()
	v, ok := m[k].(float64)
	if !ok {
		t.Fatalf("no number %q in %v", k, m)
	}
	return v
}

// gavel bench ws against a real chain and gateway: every watcher gets the
// highest push of every successful bid on its auction, once; and gavel
// bench --via ws runs the closed loop through the gateway with bench's
// report.
func TestBenchWS(t *testing.T) {
	cfg := startClusterWithGateway(t, 3, false)

	for _, via := range []string{"ws", "grpc"} {
		rep := jsonLines(t, expect(t, exitOK, nil, "bench", "ws", "--config", cfg, "--watchers", "50", "--bidders", "2",
			"--rate", "50", "--duration", "2s", "--auctions", "5", "--idle", "0", "--via", via, "--json"))[0]
		conns := 50.0
		if via == "ws" {
			conns += 2
		}
		if num(t, rep, "connections_made") != conns || num(t, rep, "connections_failed") != 0 || num(t, rep, "watchers_lost") != 0 {
			t.Errorf("via %s: connections: %v", via, rep)
		}
		if num(t, rep, "missed") != 0 || num(t, rep, "duplicated") != 0 {
			t.Errorf("via %s: missed or duplicated pushes: %v", via, rep)
		}
		if exp := num(t, rep, "pushes_expected"); exp == 0 || num(t, rep, "pushes_received") != exp {
			t.Errorf("via %s: pushes received %v, expected %v", via, rep["pushes_received"], exp)
		}
		if num(t, rep, "bids_ok") == 0 || num(t, rep, "bids_errors") != 0 || num(t, rep, "bids_sent") != 100 {
			t.Errorf("via %s: bids: %v", via, rep)
		}
		if rep["via"] != via || rep["interrupted"] != false {
			t.Errorf("via %s: %v", via, rep)
		}
		for _, k := range []string{"latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms", "rss_per_watcher", "heap_per_watcher"} {
			num(t, rep, k)
		}
	}

	// Without --json: the report for people, the progress on stderr.
	code, out, errb := runCLI(t, "bench", "ws", "--config", cfg, "--watchers", "10", "--bidders", "1", "--rate", "20",
		"--duration", "1500ms", "--auctions", "2", "--idle", "0")
	if code != exitOK {
		t.Fatalf("bench ws: exit %d\n%s\n%s", code, out, errb)
	}
	for _, w := range []string{"connections:  11 made, 0 failed", "missed:       0, duplicated 0 (waited ", "delivery ms:", "gateway memory per idle watcher: "} {
		if !strings.Contains(out, w) {
			t.Errorf("bench ws output lacks %q:\n%s", w, out)
		}
	}
	if !strings.Contains(errb, "bids/s") || !strings.Contains(errb, "10 watchers on 2 auctions") {
		t.Errorf("bench ws stderr:\n%s", errb)
	}

	rep := jsonLines(t, expect(t, exitOK, nil, "bench", "--config", cfg, "--via", "ws", "--clients", "4", "--duration", "500ms",
		"--warmup", "50ms", "--auctions", "2", "--bidders", "3", "--json"))[0]
	for _, k := range []string{"clients", "seconds", "auctions", "bidders", "ops", "ops_per_s", "ok", "fail", "exception", "errors",
		"p50_ms", "p90_ms", "p99_ms", "max_ms"} {
		num(t, rep, k)
	}
	if len(rep) != 14 {
		t.Errorf("bench --via ws --json has other fields than bench's: %v", rep)
	}
	if num(t, rep, "ok") == 0 || num(t, rep, "errors") != 0 || num(t, rep, "clients") != 4 {
		t.Errorf("bench --via ws: %v", rep)
	}
	_, _, errb = runCLI(t, "bench", "--config", cfg, "--via", "ws", "--gateway", "g1", "--clients", "1", "--duration", "100ms", "--warmup", "0s")
	if !strings.Contains(errb, "through the gateway at 127.0.0.1:") {
		t.Errorf("bench --via ws stderr: %s", errb)
	}
}

// With tls.ca and auth.secret set, the bench dials wss with the cluster's
// CA and presents tokens it signs with the secret.
func TestBenchWSTLSAuth(t *testing.T) {
	cfg := startClusterWithGateway(t, 2, true)
	rep := jsonLines(t, expect(t, exitOK, nil, "bench", "ws", "--config", cfg, "--watchers", "20", "--bidders", "2",
		"--rate", "40", "--duration", "1s", "--auctions", "3", "--idle", "0", "--json"))[0]
	if num(t, rep, "connections_made") != 22 || num(t, rep, "missed") != 0 || num(t, rep, "duplicated") != 0 ||
		num(t, rep, "bids_ok") == 0 || num(t, rep, "pushes_received") != num(t, rep, "pushes_expected") {
		t.Errorf("bench ws over wss in auth mode: %v", rep)
	}
	if _, ok := rep["memory_error"]; ok {
		t.Errorf("no memory over https: %v", rep["memory_error"])
	}
	rep = jsonLines(t, expect(t, exitOK, nil, "bench", "--config", cfg, "--via", "ws", "--clients", "2", "--duration", "300ms",
		"--warmup", "0s", "--auctions", "1", "--json"))[0]
	if num(t, rep, "ok") == 0 || num(t, rep, "errors") != 0 {
		t.Errorf("bench --via ws over wss in auth mode: %v", rep)
	}
}

// Bad command lines fail before any network call (the config names ports
// nobody listens on).
func TestBenchWSUsage(t *testing.T) {
	cfg := writeConfig(t, "gateways:\n  - id: g1\n    addr: 127.0.0.1:2\n", "127.0.0.1:1")
	noGateways := writeConfig(t, "", "127.0.0.1:1")
	ws := func(args ...string) []string { return append([]string{"bench", "ws", "--config", cfg}, args...) }
	bench := func(args ...string) []string { return append([]string{"bench", "--config", cfg}, args...) }
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{ws("--watchers", "0"), "--watchers must be positive"},
		{ws("--bidders", "-2"), "--bidders must be positive"},
		{ws("--rate", "0"), "--rate must be positive"},
		{ws("--rate", "fast"), `invalid argument "fast" for "--rate"`},
		{ws("--duration", "0s"), "--duration must be positive"},
		{ws("--auctions", "0"), "--auctions must be positive"},
		{ws("--via", "carrier-pigeon"), `--via must be ws or grpc, got "carrier-pigeon"`},
		{ws("--idle", "-1s"), "--idle must not be negative"},
		{ws("--dial-concurrency", "0"), "--dial-concurrency must be positive"},
		{ws("--clients", "3"), "unknown flag: --clients"},
		{ws("extra"), `unexpected argument "extra"`},
		{ws("--gateway", "g9"), `--gateway "g9": neither a gateway id of ` + cfg},
		{[]string{"--config", cfg, "bench", "ws", "--watchers", "0"}, "--watchers must be positive"},
		{[]string{"--json", "bench", "ws", "--rate", "-1"}, "--rate must be positive"},
		{[]string{"bench", "ws", "--config", noGateways}, "lists no gateways (key gateways): give --gateway HOST:PORT"},
		{bench("--via", "smoke"), `--via must be grpc or ws, got "smoke"`},
		{bench("--via", "ws", "--unary"), "--unary applies to --via grpc only"},
		{bench("--gateway", "g1"), "--gateway applies to --via ws only"},
		{bench("--via", "ws", "--gateway", "nope"), `--gateway "nope": neither a gateway id`},
	} {
		code, out, errb := runCLI(t, tc.args...)
		if code != exitUsage || (out != "" && !strings.HasPrefix(out, `{"error":`)) || !strings.Contains(errb, tc.stderr) {
			t.Errorf("gavel %v: exit %d, stdout %q, stderr %q; want 3 and %q", tc.args, code, out, errb, tc.stderr)
		}
	}
	expect(t, exitOK, []string{"usage: gavel bench ws", "--watchers", "--via", "missed"}, "bench", "ws", "--help")
	expect(t, exitOK, []string{"--via", "--gateway", "gavel bench ws"}, "bench", "--help")
}
