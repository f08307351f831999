package docs

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// sections are the report's top-level sections, in order: the only ones.
var sections = []string{"Introduction", "Protocol", "Correctness 1", "Correctness 2"}

const (
	maxPages = 5
	minFont  = 9.0 // pt, for every piece of text, figures included
	// a4W and a4H are A4 in PDF points.
	a4W, a4H = 595.276, 841.890
)

// figureText is text drawn inside the figures, one string of each:
// finding it among the PDF's text spans shows that the SVGs were embedded
// as text, so that their font sizes were measured like the rest.
var figureText = []string{
	"HeartbeatReply",                    // figures/message-flow.svg
	"seconds from the start of the run", // figures/chain-over-time.svg (tools/runlog's axis title)
}

// TestReport builds the report with scripts/report into a temporary
// directory, as CI does on every run, and checks the PDF. It fails, never
// skips, when a tool is missing: scripts/test installs them.
func TestReport(t *testing.T) {
	requireTools(t)
	out := filepath.Join(t.TempDir(), "report.pdf")
	cmd := command(t, 3*time.Minute, filepath.Join(repoRoot(t), "scripts", "report"), "--no-install", "--out", out)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("scripts/report --no-install --out %s: %v\n%s", out, err, log.String())
	}
	t.Logf("%s", strings.TrimSpace(log.String()))
	checkPDF(t, out)
}

// TestReportCommitted checks the committed docs/report.pdf the same way.
func TestReportCommitted(t *testing.T) {
	requireTools(t)
	checkPDF(t, "report.pdf")
}

// TestReportCitesRealTests checks that every test docs/report.md names
// (TestXxx, or pkg.TestXxx) is a func TestXxx( in a _test.go file of the
// repository, in a directory named pkg when the name is qualified.
func TestReportCitesRealTests(t *testing.T) {
	md, err := os.ReadFile("report.md")
	if err != nil {
		t.Fatal(err)
	}
	cited := regexp.MustCompile(`\b(?:([a-z][a-z0-9_]*)\.)?(Test[A-Z0-9_]\w*)`).FindAllStringSubmatch(string(md), -1)
	if len(cited) < 10 {
		t.Fatalf("docs/report.md cites %d tests; the correctness sections should name the tests of their claims", len(cited))
	}
	defined := definedTests(t, repoRoot(t))
	seen := map[string]bool{}
	for _, c := range cited {
		name, pkg := c[2], c[1]
		if seen[c[0]] {
			continue
		}
		seen[c[0]] = true
		dirs := defined[name]
		switch {
		case len(dirs) == 0:
			t.Errorf("docs/report.md cites %s: there is no func %s( in any _test.go file", c[0], name)
		case pkg != "" && !slices.ContainsFunc(dirs, func(d string) bool { return filepath.Base(d) == pkg }):
			t.Errorf("docs/report.md cites %s: func %s( is in %v, not in a directory %s", c[0], name, dirs, pkg)
		}
	}
	if !t.Failed() {
		t.Logf("%d distinct tests cited, all defined", len(seen))
	}
}

// definedTests maps each func TestXxx( of the repository's _test.go files
// to the directories (relative to root) that define it.
func definedTests(t *testing.T, root string) map[string][]string {
	t.Helper()
	re := regexp.MustCompile(`(?m)^func (Test\w*)\(`)
	out := map[string][]string{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if n := d.Name(); path != root && (strings.HasPrefix(n, ".") || n == "node_modules" || n == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, "_test.go") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		dir, _ := filepath.Rel(root, filepath.Dir(path))
		for _, m := range re.FindAllSubmatch(src, -1) {
			out[string(m[1])] = append(out[string(m[1])], dir)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkPDF checks the sections, the page count and size, and the size of
// every piece of text of the PDF at path.
func checkPDF(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s: %v (scripts/report builds it)", path, err)
	}

	// pdfinfo: page count and every page's size.
	info := run(t, "pdfinfo", "-f", "1", "-l", "1000", path)
	m := regexp.MustCompile(`(?m)^Pages:\s+(\d+)$`).FindStringSubmatch(info)
	if m == nil {
		t.Fatalf("pdfinfo %s: no page count in\n%s", path, info)
	}
	pages, _ := strconv.Atoi(m[1])
	if pages < 1 || pages > maxPages {
		t.Errorf("%s has %d pages, want 1..%d", path, pages, maxPages)
	}
	sizes := regexp.MustCompile(`(?m)^Page\s+(\d+) size:\s+([\d.]+) x ([\d.]+) pts`).FindAllStringSubmatch(info, -1)
	if len(sizes) != pages {
		t.Errorf("pdfinfo %s: %d page sizes for %d pages", path, len(sizes), pages)
	}
	for _, s := range sizes {
		w, _ := strconv.ParseFloat(s[2], 64)
		h, _ := strconv.ParseFloat(s[3], 64)
		if math.Abs(w-a4W) > 1 || math.Abs(h-a4H) > 1 {
			t.Errorf("%s page %s is %s x %s pt, want A4 (%.2f x %.2f)", path, s[1], s[2], s[3], a4W, a4H)
		}
	}

	// pdftotext: the section titles, as lines of their own, in order.
	var found []string
	for line := range strings.SplitSeq(run(t, "pdftotext", "-enc", "UTF-8", path, "-"), "\n") {
		if line = strings.TrimSpace(line); slices.Contains(sections, line) {
			found = append(found, line)
		}
	}
	if !slices.Equal(found, sections) {
		t.Errorf("%s: heading lines %q, want exactly %q in that order", path, found, sections)
	}

	// PyMuPDF: the outline's top level (the h1 headings) and the font
	// size of every text span, figure text included.
	var got struct {
		TOC   [][]any `json:"toc"`
		Spans int     `json:"spans"`
		Min   struct {
			Size float64 `json:"size"`
			Text string  `json:"text"`
			Page int     `json:"page"`
		} `json:"min"`
		Small []struct {
			Size float64 `json:"size"`
			Text string  `json:"text"`
			Font string  `json:"font"`
			Page int     `json:"page"`
		} `json:"small"`
		Found map[string]bool `json:"found"`
	}
	args := append([]string{"-c", measureScript, path, strconv.FormatFloat(minFont, 'f', -1, 64)}, figureText...)
	if err := json.Unmarshal([]byte(run(t, fitzPython(t), args...)), &got); err != nil {
		t.Fatalf("measuring %s: %v", path, err)
	}
	var top []string
	for _, e := range got.TOC {
		if len(e) >= 2 && e[0] == float64(1) {
			top = append(top, fmt.Sprint(e[1]))
		}
	}
	if !slices.Equal(top, sections) {
		t.Errorf("%s: top-level sections (PDF outline) %q, want exactly %q", path, top, sections)
	}
	if got.Spans == 0 {
		t.Fatalf("%s: no text found", path)
	}
	for _, s := range got.Small {
		t.Errorf("%s page %d: %q in %s at %.2f pt, below %.0f pt", path, s.Page, s.Text, s.Font, s.Size, minFont)
	}
	for _, s := range figureText {
		if !got.Found[s] {
			t.Errorf("%s: figure text %q not found as text: is a figure missing or rasterized?", path, s)
		}
	}
	t.Logf("%s: %d pages, A4; sections %q; %d text spans, smallest %.2f pt (%q, page %d)",
		path, pages, top, got.Spans, got.Min.Size, got.Min.Text, got.Min.Page)
}

// measureScript prints, as JSON, the PDF's outline, the number of text
// spans, the smallest span, the spans below the minimum size (argv[2]) and
// which of the strings argv[3:] occur in some span.
const measureScript = `
import json, sys
import fitz
doc = fitz.open(sys.argv[1])
limit = float(sys.argv[2])
needles = sys.argv[3:]
out = {"toc": doc.get_toc(), "spans": 0, "min": {"size": 1e9, "text": "", "page": 0},
       "small": [], "found": {n: False for n in needles}}
for pno, page in enumerate(doc, 1):
    for block in page.get_text("dict")["blocks"]:
        for line in block.get("lines", []):
            for span in line["spans"]:
                text = span["text"].strip()
                if not text:
                    continue
                out["spans"] += 1
                size = span["size"]
                if size < out["min"]["size"]:
                    out["min"] = {"size": size, "text": text, "page": pno}
                if size < limit - 0.005:
                    out["small"].append({"size": size, "text": text, "font": span["font"], "page": pno})
                for n in needles:
                    if n in text:
                        out["found"][n] = True
json.dump(out, sys.stdout)
`

// requireTools fails the test, naming the Debian package, for each tool
// that is missing.
func requireTools(t *testing.T) {
	t.Helper()
	for _, tool := range []struct{ cmd, pkg string }{
		{"pandoc", "pandoc"}, {"weasyprint", "weasyprint"},
		{"pdftotext", "poppler-utils"}, {"pdfinfo", "poppler-utils"}, {"fc-list", "fontconfig"},
	} {
		if _, err := exec.LookPath(tool.cmd); err != nil {
			t.Fatalf("%s is not installed (Debian package %s; scripts/test installs it)", tool.cmd, tool.pkg)
		}
	}
	if out := run(t, "fc-list", ":", "family"); !strings.Contains(out, "Liberation Serif") {
		t.Fatalf("the Liberation fonts of docs/report.css are not installed (Debian package fonts-liberation2)")
	}
	fitzPython(t)
}

// fitzPython returns a python3 that can import fitz (PyMuPDF): Debian's
// python3-fitz installs it for /usr/bin/python3, which may not be the
// python3 first in PATH.
func fitzPython(t *testing.T) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if err := command(t, time.Minute, py, "-c", "import fitz").Run(); err == nil {
			return py
		}
	}
	t.Fatalf("no python3 can import fitz (PyMuPDF; Debian package python3-fitz)")
	return ""
}

// run runs a command and returns its standard output; it fails the test
// if the command fails.
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := command(t, time.Minute, name, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s: %v\n%s", name, err, stderr.String())
	}
	return stdout.String()
}

// command is exec.Command bounded by timeout and by the test: it runs in
// a process group of its own, which is SIGKILLed when either ends, so a
// hung pandoc or weasyprint under scripts/report ends too; Wait then
// returns within a few seconds, whatever still holds the output pipes.
func command(t *testing.T, timeout time.Duration, name string, args ...string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	t.Cleanup(cancel)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// repoRoot is the repository's root: the parent of docs/, where go test
// runs this package.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("%s is not the repository root: %v", root, err)
	}
	return root
}
