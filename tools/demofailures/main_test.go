package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A --dir that holds a run already is refused before anything starts:
// its logs would be appended to and its masters' Raft data restored.
func TestRunRefusesUsedDir(t *testing.T) {
	tmp := t.TempDir()
	bin := filepath.Join(tmp, "gavel")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "work")
	if err := os.MkdirAll(filepath.Join(dir, "data", "m1"), 0o755); err != nil {
		t.Fatal(err)
	}
	err := run(context.Background(), options{bin: bin, dir: dir, out: filepath.Join(tmp, "out.log")})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("run with a used --dir: %v, want an error saying it is not empty", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("the used --dir was written to: %v", entries)
	}
}
