package main

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/auth"
)

const testSecret = "0123456789abcdef-cli"

// gavel token signs with auth.secret (or $GAVEL_AUTH_SECRET) what the
// gateways verify, and refuses clearly without a secret.
func TestTokenCommand(t *testing.T) {
	open := writeConfig(t, "", "127.0.0.1:1")
	withSecret := writeConfig(t, "auth:\n  secret: "+testSecret+"\n  token_ttl: 2h\n", "127.0.0.1:1")

	code, out, errb := runCLI(t, "token", "--config", open, "--bidder", "alice")
	if code != exitUsage || out != "" || !strings.Contains(errb, "auth.secret is not set") || !strings.Contains(errb, "open mode") {
		t.Errorf("token without a secret: exit %d, stdout %q, stderr %q", code, out, errb)
	}

	before := time.Now()
	out = expect(t, exitOK, nil, "token", "--config", withSecret, "--bidder", "alice")
	c, err := auth.VerifyToken([]byte(testSecret), strings.TrimSpace(out), time.Now())
	if err != nil {
		t.Fatalf("token %q: %v", out, err)
	}
	if c.Bidder != "alice" || c.Role != auth.RoleBidder || c.Expires < before.Add(2*time.Hour).Unix() || c.Expires > time.Now().Add(2*time.Hour).Unix() {
		t.Errorf("claims %+v: want alice, bidder, auth.token_ttl (2h)", c)
	}

	out = expect(t, exitOK, nil, "token", "--config", withSecret, "--bidder", "root", "--admin", "--ttl", "10m", "--json")
	var j struct{ Token, Bidder, Role, Expires string }
	if err := json.Unmarshal([]byte(out), &j); err != nil {
		t.Fatalf("--json: %q: %v", out, err)
	}
	c, err = auth.VerifyToken([]byte(testSecret), j.Token, time.Now())
	if err != nil || c.Role != auth.RoleAdmin || j.Role != "admin" || j.Bidder != "root" || c.Expires > time.Now().Add(10*time.Minute).Unix() {
		t.Errorf("admin token %+v: claims %+v, %v", j, c, err)
	}

	t.Setenv("GAVEL_AUTH_SECRET", "from-the-environment-42")
	out = expect(t, exitOK, nil, "token", "--config", open, "--bidder", "bob")
	if _, err := auth.VerifyToken([]byte("from-the-environment-42"), strings.TrimSpace(out), time.Now()); err != nil {
		t.Errorf("token signed with $GAVEL_AUTH_SECRET: %v", err)
	}

	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"token", "--config", withSecret}, "missing --bidder"},
		{[]string{"token", "--config", withSecret, "--bidder", "al ice"}, "invalid bidder name"},
		{[]string{"token", "--config", withSecret, "--bidder", "alice", "--ttl", "-1h"}, "--ttl must be positive"},
		{[]string{"token", "--config", withSecret, "--bidder", "alice", "extra"}, `unexpected argument "extra"`},
	} {
		code, _, errb := runCLI(t, tc.args...)
		if code != exitUsage || !strings.Contains(errb, tc.stderr) {
			t.Errorf("gavel %v: exit %d, stderr %q, want 3 and %q", tc.args, code, errb, tc.stderr)
		}
	}
}

// gavel gateway refuses an id the config does not list, and otherwise
// serves until its context ends (SIGINT, SIGTERM).
func TestGatewayCommand(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := writeConfig(t, "gateways:\n  - id: g1\n    addr: "+addr+"\n", "127.0.0.1:1")
	noGateways := writeConfig(t, "", "127.0.0.1:1")
	for _, tc := range []struct {
		args   []string
		stderr string
	}{
		{[]string{"gateway", "--config", cfg}, "missing --id"},
		{[]string{"gateway", "--config", cfg, "--id", "g9"}, `unknown gateway id "g9": ` + cfg + " lists g1"},
		{[]string{"gateway", "--config", noGateways, "--id", "g1"}, "lists no gateways"},
	} {
		code, _, errb := runCLI(t, tc.args...)
		if code != exitUsage || !strings.Contains(errb, tc.stderr) {
			t.Errorf("gavel %v: exit %d, stderr %q, want 3 and %q", tc.args, code, errb, tc.stderr)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"gateway", "--config", cfg, "--id", "g1"}, io.Discard, io.Discard) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), `"gateway":"g1"`) || !strings.Contains(string(b), `"mode":"open"`) {
				t.Errorf("/healthz: %d %s", resp.StatusCode, b)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway never answered /healthz: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case code := <-done:
		if code != exitOK {
			t.Errorf("gateway exit %d after its context ended", code)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("gateway did not stop")
	}
	if resp, err := http.Get("http://" + addr + "/healthz"); err == nil {
		resp.Body.Close()
		t.Error("gateway still serving after stop")
	}
}

// config processes lists the gateways after the nodes; config check counts
// them.
func TestConfigListsGateways(t *testing.T) {
	cfg := writeConfig(t, "gateways:\n  - {id: g1, addr: \"127.0.0.1:7401\"}\n  - {id: g2, addr: \"127.0.0.1:7402\"}\n", "127.0.0.1:7101")
	if out := expect(t, exitOK, nil, "config", "processes", "--config", cfg); out != "node n1 127.0.0.1:7101\ngateway g1 127.0.0.1:7401\ngateway g2 127.0.0.1:7402\n" {
		t.Errorf("config processes:\n%s", out)
	}
	expect(t, exitOK, []string{"(no masters: static chain of 1 nodes, 2 gateways)"}, "config", "check", "--config", cfg)
}
