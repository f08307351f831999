package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"image/png"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
)

// The real-browser test of the gateway's web page: a real cluster (3
// masters, 3 nodes, gateway g1, all processes), and browser/page.mjs, which
// drives Debian's chromium through playwright-core as two bidders, carol
// and dave. The script asks this test, through its stdin and stdout, to bid
// at the chain directly and to restart the gateway (GAVEL-STEP lines).
//
// It needs /usr/bin/chromium, node and browser/node_modules; scripts/test
// installs them (apt-get install chromium nodejs npm; npm ci in
// e2e/browser). The screenshot of a passing run is kept under
// $GAVEL_TEST_OUT/TestBrowserPage/ when GAVEL_TEST_OUT is set (an absolute
// path; a relative one is taken from the e2e directory), in the test's
// temporary directory otherwise; the test logs where.

const (
	chromiumPath  = "/usr/bin/chromium"
	browserDir    = "browser"
	browserScript = "page.mjs"
	// browserRunTimeout bounds page.mjs (it bounds itself at 60 s and
	// closes the browser; this is the backstop that kills it).
	browserRunTimeout = 90 * time.Second
)

func TestBrowserPage(t *testing.T) {
	node := browserPrereqs(t)
	outDir := testOutDir(t)
	shot := filepath.Join(outDir, "page.png")
	os.Remove(shot)
	os.Remove(strings.TrimSuffix(shot, ".png") + "-failure.png")

	c := newGatewayCluster(t, 3)
	base := c.gatewayURL("g1")
	checkPageAssets(t, base)

	chain, err := client.New([]string{c.addrs["n1"], c.addrs["n2"], c.addrs["n3"]}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer chain.Close()
	const auction = "a1"
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	rep, err := chain.Open(ctx, &api.OpenAuction{Auction: auction, Item: "a brass lamp",
		DurationMs: (10 * time.Minute).Milliseconds(), MinIncrement: 5})
	cancel()
	if err != nil || rep.GetOutcome() != api.Outcome_SUCCESS {
		t.Fatalf("opening %s: %v %v", auction, rep, err)
	}

	// chainBid places a bid straight at the chain, not through the gateway.
	chainBid := func(args []string) error {
		if len(args) != 3 {
			return fmt.Errorf("want AUCTION BIDDER AMOUNT, got %q", args)
		}
		amount, err := strconv.ParseInt(args[2], 10, 64)
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rep, err := chain.Bid(ctx, args[0], args[1], amount, "")
		if err != nil {
			return err
		}
		if rep.GetOutcome() != api.Outcome_SUCCESS {
			return fmt.Errorf("bid %s at the chain: %v %v %s", strings.Join(args, " "), rep.GetOutcome(), rep.GetReason(), rep.GetDetail())
		}
		return nil
	}
	steps := map[string]func([]string) error{
		"chain-bid": chainBid,
		"restart-gateway": func(args []string) error {
			c.kill("g1")
			if err := chainBid(args); err != nil {
				return err
			}
			c.startGateway("g1")
			return nil
		},
	}

	start := time.Now()
	out, err := runBrowserScript(t, node, steps, "--url", base+"/", "--auction", auction,
		"--chain", "n1,n2,n3", "--screenshot", shot, "--steps", "--timeout", "60")
	t.Logf("page.mjs ran %v; its output:\n%s", time.Since(start).Round(100*time.Millisecond), out)
	if err != nil {
		t.Fatalf("page.mjs failed (%v); see its output above (a failure screenshot, if any, is in %s)", err, outDir)
	}
	checkPNG(t, shot)
	t.Logf("screenshot of the page: %s", shot)
}

// browserPrereqs fails the test, loudly, when what the browser test needs
// is not installed, and returns the path of node.
func browserPrereqs(t *testing.T) string {
	t.Helper()
	const hint = "run scripts/test, which installs it (apt-get install -y chromium nodejs npm; (cd e2e/browser && npm ci))"
	var missing []string
	if st, err := os.Stat(chromiumPath); err != nil || st.IsDir() {
		missing = append(missing, chromiumPath+" (Debian package chromium)")
	}
	node, err := exec.LookPath("node")
	if err != nil {
		missing = append(missing, "node (Debian package nodejs)")
	}
	if _, err := os.Stat(filepath.Join(browserDir, "node_modules", "playwright-core", "package.json")); err != nil {
		missing = append(missing, "e2e/browser/node_modules/playwright-core (npm ci in e2e/browser)")
	}
	if len(missing) > 0 {
		t.Fatalf("the browser test cannot run, missing: %s; %s", strings.Join(missing, ", "), hint)
	}
	return node
}

// testOutDir is where the test keeps files worth looking at afterwards:
// $GAVEL_TEST_OUT/<test name> when set, the test's temporary directory
// (removed when the test ends) otherwise.
func testOutDir(t *testing.T) string {
	t.Helper()
	root := os.Getenv("GAVEL_TEST_OUT")
	if root == "" {
		return t.TempDir()
	}
	dir, err := filepath.Abs(filepath.Join(root, t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("GAVEL_TEST_OUT: %v", err)
	}
	return dir
}

// checkPageAssets fetches the page and its assets from the gateway and
// checks their content types and caching headers.
func checkPageAssets(t *testing.T, base string) {
	t.Helper()
	hc := &http.Client{Timeout: 5 * time.Second}
	for _, a := range []struct{ path, ctype, contains string }{
		{"/", "text/html; charset=utf-8", `<script src="app.js"`},
		{"/index.html", "text/html; charset=utf-8", `<script src="app.js"`},
		{"/app.js", "text/javascript; charset=utf-8", "new WebSocket("},
		{"/style.css", "text/css; charset=utf-8", "#auctions"},
	} {
		resp, err := hc.Get(base + a.path)
		if err != nil {
			t.Fatalf("GET %s: %v", a.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", a.path, resp.Status)
		}
		if got := resp.Header.Get("Content-Type"); got != a.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", a.path, got, a.ctype)
		}
		if got := resp.Header.Get("Cache-Control"); got != "no-cache" {
			t.Errorf("GET %s: Cache-Control %q, want no-cache", a.path, got)
		}
		if !bytes.Contains(body, []byte(a.contains)) {
			t.Errorf("GET %s: body lacks %q", a.path, a.contains)
		}
	}
	resp, err := hc.Get(base + "/no-such-file.js")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /no-such-file.js: %s, want 404", resp.Status)
	}
}

// runBrowserScript runs `node browser/page.mjs args...` in its own process
// group (killed with chromium when it ends or overruns), answers its
// GAVEL-STEP lines with steps, and returns its output (stdout and stderr
// as they came).
func runBrowserScript(t *testing.T, node string, steps map[string]func([]string) error, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), browserRunTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, append([]string{browserScript}, args...)...)
	cmd.Dir = browserDir
	cmd.SysProcAttr = groupLeaderAttr()
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting node %s: %v", browserScript, err)
	}
	// Whatever happens, chromium goes with the script.
	defer syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	waited := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		pw.Close()
		waited <- err
	}()

	var out strings.Builder
	sc := bufio.NewScanner(pr)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		out.WriteString(line + "\n")
		rest, ok := strings.CutPrefix(line, "GAVEL-STEP ")
		if !ok {
			continue
		}
		fields := strings.Fields(rest)
		answer := "ok"
		if len(fields) == 0 || steps[fields[0]] == nil {
			answer = "error unknown step " + strconv.Quote(rest)
		} else if err := steps[fields[0]](fields[1:]); err != nil {
			answer = "error " + strings.ReplaceAll(err.Error(), "\n", " ")
		}
		if answer != "ok" {
			t.Errorf("step %s: %s", rest, answer)
		}
		fmt.Fprintf(&out, "(driver: %s)\n", answer)
		io.WriteString(stdin, answer+"\n")
	}
	io.Copy(io.Discard, pr)
	err = <-waited
	if ctx.Err() != nil {
		err = fmt.Errorf("killed after %v: %w", browserRunTimeout, err)
	}
	return out.String(), err
}

// checkPNG checks that path is a PNG picture of a page-sized viewport.
func checkPNG(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	defer f.Close()
	cfg, err := png.DecodeConfig(f)
	if err != nil {
		t.Fatalf("screenshot %s is not a PNG: %v", path, err)
	}
	if cfg.Width < 800 || cfg.Height < 600 {
		t.Errorf("screenshot %s is %dx%d, want at least the 1280x900 viewport", path, cfg.Width, cfg.Height)
	}
}
