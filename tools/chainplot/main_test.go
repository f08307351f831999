package main

import (
	"bytes"
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const small = `# a merged log
demo  +0.000  KILL     | time=2026-01-02T10:00:00.000Z level=WARN msg="demo: SIGKILL n2 (middle)" node=n2 role=middle epoch=1
m1    +0.100  EPOCH    | time=2026-01-02T10:00:00.100Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m1 epoch=1 config="e1 [n1 n2]"
m1    +0.600  EPOCH    | time=2026-01-02T10:00:00.600Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m1 epoch=2 config="e2 [n1]"
`

func TestRun(t *testing.T) {
	dir := t.TempDir()
	logPath, out := filepath.Join(dir, "run.log"), filepath.Join(dir, "out.svg")
	if err := os.WriteFile(logPath, []byte(small), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := run(logPath, out, "a title"); err != nil {
		t.Fatal(err)
	}
	svg, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(svg))
	for {
		if _, err := dec.Token(); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("not well-formed: %v\n%s", err, svg)
		}
	}
	for _, want := range []string{">n1</text>", ">n2</text>", ">kill n2</text>", ">a title</text>"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("no %s in\n%s", want, svg)
		}
	}

	// A log without epochs, and one with a broken line, are refused.
	for name, text := range map[string]string{
		"empty":  "# only a header\n",
		"broken": "m1 no separator\n",
		"config": `m1 +0.1 EPOCH | level=INFO msg="new epoch committed" config="e1 n1"` + "\n",
	} {
		p := filepath.Join(dir, name+".log")
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := run(p, out, "x"); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := run(filepath.Join(dir, "missing.log"), out, "x"); err == nil {
		t.Error("a missing log: no error")
	}
}
