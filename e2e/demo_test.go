package e2e

import (
	"bytes"
	"cmp"
	"context"
	"encoding/xml"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/tools/runlog"
)

// TestDemoFailures runs scripts/demo-failures' program in its short form
// (tools/demofailures: 3 masters, n1..n3, a gateway, two bidders; SIGKILL
// of the middle node, n4 joins, SIGKILL of the head until one node is
// left, then of the last one) and checks the story from the log it
// writes: each kill is followed by a committed epoch without the killed
// node, n4 joined and was appended, the last kill brings bidders an
// "unavailable" answer and nothing else did, and no acknowledged bid was
// lost. Then tools/chainplot draws the log as a well-formed SVG naming
// every node.
func TestDemoFailures(t *testing.T) {
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir, "../tools/demofailures", "../tools/chainplot")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the tools: %v\n%s", err, out)
	}
	logPath, figure := filepath.Join(dir, "failover.log"), filepath.Join(dir, "demo.svg")
	work := filepath.Join(dir, "work")

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	demo := exec.CommandContext(ctx, filepath.Join(dir, "demofailures"), "--short", "--bin", gavelBin,
		"--out", logPath, "--figure", figure, "--dir", work)
	// The demo and every process it starts share a process group: ending
	// the group ends them all, whatever state the demo is in. Should the
	// test binary die first, the kernel kills the demo, and the demo's
	// processes die with it.
	demo.SysProcAttr = groupLeaderAttr()
	demo.Cancel = func() error { return syscall.Kill(-demo.Process.Pid, syscall.SIGKILL) }
	demo.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	demo.Stdout, demo.Stderr = &out, &out
	start := time.Now()
	if err := demo.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(-demo.Process.Pid, syscall.SIGKILL) })
	err := demo.Wait()
	t.Logf("the demo ran %v:\n%s", time.Since(start).Round(time.Millisecond), out.String())
	if err != nil {
		showTail(t, filepath.Join(work, "failover.log"), 60)
		t.Fatalf("demofailures: %v", err)
	}

	raw, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(raw) > 1<<20 {
		t.Errorf("the log is %d bytes: too long to read", len(raw))
	}
	if !bytes.HasPrefix(raw, []byte("# ")) || !bytes.Contains(raw, []byte("# Timeline")) {
		t.Errorf("the log has no header with a timeline")
	}
	recs, err := runlog.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	story, err := runlog.StoryOf(recs)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			showTail(t, logPath, 80)
		}
	}()

	// Every line of a process or of the demo, at info level or above.
	sources := map[string]bool{}
	for _, r := range recs {
		sources[r.Source] = true
		if r.Level == "DEBUG" {
			t.Errorf("a debug line: %s", r.Text)
		}
	}
	for _, id := range []string{"demo", "m1", "m2", "m3", "n1", "n2", "n3", "n4", "g1"} {
		if !sources[id] {
			t.Errorf("no line from %s", id)
		}
	}

	// The kills: the middle of three, the head until one is left, the last.
	var kills []string
	for _, k := range story.Kills {
		kills = append(kills, k.Node+" "+k.Role)
	}
	if want := []string{"n2 middle", "n1 head", "n3 head", "n4 last"}; !slices.Equal(kills, want) {
		t.Fatalf("kills %v, want %v", kills, want)
	}
	for i, k := range story.Kills[:len(story.Kills)-1] {
		e, ok := story.RemovedAfter(k.Node, k.At)
		if !ok {
			t.Errorf("no epoch without %s after its kill", k.Node)
			continue
		}
		if next := story.Kills[i+1]; e.At > next.At {
			t.Errorf("%s removed only in e%d at +%.3f, after the next kill at +%.3f", k.Node, e.Epoch, e.At, next.At)
		}
		if e.Epoch != k.Epoch+1 || e.Cause != "node removed" || e.Node != k.Node {
			t.Errorf("after the kill of %s in e%d: e%d (%s %s), want e%d removing it", k.Node, k.Epoch, e.Epoch, e.Cause, e.Node, k.Epoch+1)
		}
		t.Logf("SIGKILL %s (%s) in e%d at +%.3f -> %s at +%.3f", k.Node, k.Role, k.Epoch, k.At, e.Config.String(), e.At)
	}

	// n4 joined at the tail, after the middle's removal, before the head kills.
	joined, appended := false, false
	for _, e := range story.Epochs {
		switch {
		case e.Cause == "join started" && e.Node == "n4" && slices.Contains(e.Joining, "n4"):
			joined = true
		case e.Cause == "appended" && e.Node == "n4" && joined && e.Chain[len(e.Chain)-1] == "n4":
			appended = true
			if e.At < story.Kills[0].At || e.At > story.Kills[1].At {
				t.Errorf("n4 appended at +%.3f, not between the first two kills", e.At)
			}
		}
	}
	if !joined || !appended {
		t.Errorf("n4 joined %v, appended %v; epochs %+v", joined, appended, story.Epochs)
	}

	// The last kill leaves one configured node and answers "unavailable";
	// nothing before it did.
	last := story.Kills[len(story.Kills)-1]
	if cfg, ok := story.ConfigAt(last.At); !ok || !slices.Equal(cfg.Chain, []string{"n4"}) {
		t.Errorf("the last kill in %+v, want a chain of n4 alone", cfg)
	}
	bidUnavailable := false
	for _, r := range recs {
		if r.Source != "demo" || r.Attr("outcome") == "" {
			continue
		}
		if r.Attr("outcome") == "exception" && r.At < last.At {
			t.Errorf("a bid answered exception before the last kill: %s", r.Text)
		}
		if r.At > last.At && r.Attr("reason") == "unavailable" && slices.Contains([]string{"alice", "bob"}, r.Attr("bidder")) {
			bidUnavailable = true
		}
	}
	if !bidUnavailable {
		t.Error("no bidder's bid answered unavailable after the last kill")
	}

	// No acknowledged bid lost: in chain order the acknowledged bids rise,
	// each check after a new epoch found the result at or above every
	// acknowledged bid, and before the last kill the last node's result
	// was the highest acknowledged bid.
	type win struct {
		amount  int64
		version uint64
	}
	var wins []win
	var best int64
	for _, r := range recs {
		if r.Source == "demo" && r.Attr("outcome") == "success" {
			a, _ := strconv.ParseInt(r.Attr("amount"), 10, 64)
			v, _ := strconv.ParseUint(r.Attr("version"), 10, 64)
			wins = append(wins, win{a, v})
			best = max(best, a)
		}
	}
	if len(wins) < 20 {
		t.Errorf("only %d acknowledged bids", len(wins))
	}
	slices.SortFunc(wins, func(a, b win) int { return cmp.Compare(a.version, b.version) })
	for i := 1; i < len(wins); i++ {
		if wins[i].version == wins[i-1].version || wins[i].amount <= wins[i-1].amount {
			t.Errorf("acknowledged bids out of chain order: %+v then %+v", wins[i-1], wins[i])
		}
	}
	checks, final := 0, false
	for _, r := range recs {
		if r.Tag != "CHECK" {
			continue
		}
		checks++
		if r.Attr("ok") != "true" {
			t.Errorf("a failed check: %s", r.Text)
		}
		if strings.HasPrefix(r.Msg, "demo: check before the last kill") {
			final = true
			if r.Attr("highest") != strconv.FormatInt(best, 10) || r.Attr("acknowledged") != r.Attr("highest") || r.At > last.At {
				t.Errorf("before the last kill: %s; the highest acknowledged bid in the log is %d", r.Text, best)
			}
		}
	}
	if checks < len(story.Kills)+1 || !final {
		t.Errorf("%d checks, final check %v", checks, final)
	}

	// The figure, drawn by tools/chainplot from the log.
	svgPath := filepath.Join(dir, "chainplot.svg")
	if out, err := exec.Command(filepath.Join(dir, "chainplot"), "--log", logPath, "--out", svgPath).CombinedOutput(); err != nil {
		t.Fatalf("chainplot: %v\n%s", err, out)
	}
	for _, path := range []string{svgPath, figure} {
		texts := svgTexts(t, path)
		for _, want := range []string{"n1", "n2", "n3", "n4", "kill n2", "kill n4"} {
			if !slices.Contains(texts, want) {
				t.Errorf("%s: no text %q in %q", filepath.Base(path), want, texts)
			}
		}
	}
}

// svgTexts parses an SVG file as XML and returns the text of its text
// elements.
func svgTexts(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := xml.NewDecoder(f)
	var texts []string
	inText, root := false, true
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", path, err)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if root && el.Name.Local != "svg" {
				t.Fatalf("%s: root element %s, want svg", path, el.Name.Local)
			}
			root = false
			inText = el.Name.Local == "text"
		case xml.CharData:
			if inText {
				texts = append(texts, strings.TrimSpace(string(el)))
			}
		case xml.EndElement:
			inText = false
		}
	}
	return texts
}

// showTail logs the last n lines of a file.
func showTail(t *testing.T, path string, n int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Logf("%s: %v", path, err)
		return
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	t.Logf("---- last lines of %s ----\n%s", path, strings.Join(lines, "\n"))
}
