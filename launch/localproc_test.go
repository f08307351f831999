package launch

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// fakeGavel writes an executable script that stands for gavel: it prints
// its arguments, then runs body.
func fakeGavel(t *testing.T, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fake-gavel")
	if err := os.WriteFile(path, []byte("#!/bin/sh\necho \"args: $*\"\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitLog waits until the log at path holds want and returns it.
func waitLog(t *testing.T, path, want string) string {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); ; {
		b, _ := os.ReadFile(path)
		if strings.Contains(string(b), want) {
			return string(b)
		}
		if time.Now().After(end) {
			t.Fatalf("%s is %q, without %q", path, b, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// An attached process logs into its own file without the header, runs
// in its Dir, and stops on SIGTERM.
func TestStartLocalAttached(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "logs", "n1.log")
	p, err := StartLocal(ProcSpec{Gavel: fakeGavel(t, "pwd; exec sleep 30"), Kind: "node", ID: "n1", Config: "c.yaml",
		Dir: dir, LogFile: log})
	if err != nil {
		t.Fatal(err)
	}
	got := waitLog(t, log, dir)
	if !strings.HasPrefix(got, "args: node --id n1 --config c.yaml\n") {
		t.Errorf("log %q: want the arguments first, without a header", got)
	}
	if !p.Stop(5 * time.Second) {
		t.Fatal("n1 still runs after Stop")
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill of a stopped process: %v", err)
	}
}

// The header line comes before the process's output; a process that
// ignores SIGTERM gets SIGKILL after the wait.
func TestStartLocalHeaderAndKill(t *testing.T) {
	log := filepath.Join(t.TempDir(), "g1.log")
	p, err := StartLocal(ProcSpec{Gavel: fakeGavel(t, "trap '' TERM; echo ready; while :; do sleep 0.05; done"),
		Kind: "gateway", ID: "g1", Config: "c.yaml", LogFile: log, Header: true})
	if err != nil {
		t.Fatal(err)
	}
	got := waitLog(t, log, "ready")
	if first, _, _ := strings.Cut(got, "\n"); !strings.HasPrefix(first, "=== ") || !strings.HasSuffix(first, " launch: starting gateway g1") {
		t.Errorf("first line %q: want the launch header", first)
	}
	if sent := stopLocal([]*LocalProc{p}, false, 200*time.Millisecond); !slices.Equal(sent, []string{"KILL"}) {
		t.Errorf("stop of a process that ignores SIGTERM sent %v, want [KILL]", sent)
	}
	if p.running() {
		t.Error("g1 still runs after SIGKILL")
	}
}

// StopOrder: gateways, then nodes and other kinds, masters last, each in
// the given order.
func TestStopOrder(t *testing.T) {
	kinds := map[string]string{"m1": "master", "n2": "node", "g1": "gateway", "x": "", "n1": "node", "m2": "master"}
	got := StopOrder([]string{"m1", "n2", "g1", "x", "n1", "m2"}, func(id string) string { return kinds[id] })
	want := [][]string{{"g1"}, {"n2", "x", "n1"}, {"m1", "m2"}}
	if len(got) != len(want) {
		t.Fatalf("StopOrder = %v, want %v", got, want)
	}
	for i := range want {
		if !slices.Equal(got[i], want[i]) {
			t.Fatalf("StopOrder = %v, want %v", got, want)
		}
	}
}
