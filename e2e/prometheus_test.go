package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"net/http"
	"net/url"
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

	"github.com/gavel-auction/gavel/api"
)

// promServer is a real Prometheus started by a test.
type promServer struct {
	t    *testing.T
	addr string
}

// startPrometheus runs Debian's prometheus with the scrape configuration
// that `gavel config prometheus` generates from the cluster's config.yaml.
// It is killed when the test ends.
func startPrometheus(t *testing.T, c *cluster) *promServer {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatal("prometheus is not installed: scripts/test installs it (apt-get install prometheus)")
	}
	out, err := exec.Command(gavelBin, "config", "prometheus", "--config", c.cfgPath, "--interval", "1s").CombinedOutput()
	if err != nil {
		t.Fatalf("gavel config prometheus: %v\n%s", err, out)
	}
	promCfg := filepath.Join(c.dir, "prometheus.yml")
	if err := os.WriteFile(promCfg, out, 0o644); err != nil {
		t.Fatal(err)
	}
	p := &promServer{t: t, addr: freePort(t)}
	logf, err := os.Create(filepath.Join(c.dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file="+promCfg, "--storage.tsdb.path="+filepath.Join(c.dir, "prometheus-data"),
		"--web.listen-address="+p.addr, "--log.level=warn")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = groupLeaderAttr()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			t.Errorf("prometheus did not exit after SIGKILL")
		}
		if t.Failed() {
			t.Logf("---- prometheus.log ----\n%s", tail(filepath.Join(c.dir, "prometheus.log"), 20))
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := http.Get("http://" + p.addr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus not ready after 30s; log:\n%s", tail(filepath.Join(c.dir, "prometheus.log"), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// promResult is the data of a Prometheus query API answer.
type promResult struct {
	ResultType string `json:"resultType"`
	Result     []struct {
		Metric map[string]string `json:"metric"`
		Value  []any             `json:"value"`  // instant: [time, "v"]
		Values [][]any           `json:"values"` // range: [[time, "v"], ...]
	} `json:"result"`
}

// query runs a PromQL expression over [from, to] (a range query with a 1s
// step) and returns the series, or the error Prometheus gave.
func (p *promServer) query(expr string, from, to time.Time) (promResult, error) {
	v := url.Values{"query": {expr}, "start": {fmt.Sprint(from.Unix())}, "end": {fmt.Sprint(to.Unix())}, "step": {"1"}}
	resp, err := http.Get("http://" + p.addr + "/api/v1/query_range?" + v.Encode())
	if err != nil {
		return promResult{}, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var out struct {
		Status string     `json:"status"`
		Error  string     `json:"error"`
		Data   promResult `json:"data"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return promResult{}, fmt.Errorf("%s: %s", resp.Status, body)
	}
	if out.Status != "success" {
		return promResult{}, fmt.Errorf("%s", out.Error)
	}
	return out.Data, nil
}

// finite counts the samples of every series of r that are numbers.
func (r promResult) finite() int {
	n := 0
	for _, s := range r.Result {
		for _, v := range s.Values {
			f, err := strconv.ParseFloat(fmt.Sprint(v[1]), 64)
			if err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
				n++
			}
		}
	}
	return n
}

// values returns every sample value of the first series of r.
func (r promResult) values() []float64 {
	var out []float64
	if len(r.Result) == 0 {
		return nil
	}
	for _, v := range r.Result[0].Values {
		var f float64
		fmt.Sscan(fmt.Sprint(v[1]), &f)
		out = append(out, f)
	}
	return out
}

// dashboardExprs returns every query of dashboards/gavel.json: each
// panel's targets and each Prometheus annotation, by panel title, with
// Grafana's variables substituted as Grafana would.
func dashboardExprs(t *testing.T) map[string]string {
	t.Helper()
	raw, err := os.ReadFile("../dashboards/gavel.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				RefID string `json:"refId"`
				Expr  string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Annotations struct {
			List []struct {
				Name string `json:"name"`
				Expr string `json:"expr"`
			} `json:"list"`
		} `json:"annotations"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("dashboards/gavel.json: %v", err)
	}
	subst := strings.NewReplacer("$__rate_interval", "15s", "${__rate_interval}", "15s", "$__interval", "5s")
	exprs := map[string]string{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			exprs[p.Title+" / "+tg.RefID] = subst.Replace(tg.Expr)
		}
	}
	for _, a := range dash.Annotations.List {
		if a.Expr != "" {
			exprs["annotation "+a.Name] = subst.Replace(a.Expr)
		}
	}
	return exprs
}

// TestDashboardAgainstPrometheus runs a real cluster (masters, nodes, a
// gateway with WebSocket watchers) under `gavel bench` load, scraped by a
// real Prometheus with the configuration `gavel config prometheus`
// generates, SIGKILLs a node and restarts it, then runs every query of the
// Grafana dashboard through Prometheus's HTTP API: each must parse and
// return data. The reconfiguration must show in the scraped series: the
// epoch rises, the chain shrinks to two, and it is back to three at the end.
func TestDashboardAgainstPrometheus(t *testing.T) {
	exprs := dashboardExprs(t)
	c := newGatewayCluster(t, 3)
	prom := startPrometheus(t, c)
	start := time.Now()

	// WebSocket traffic for the gateway panels: a watcher and a bidder.
	watcher, err := dialWS(t, c.wsURL("g1", "watcher"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer watcher.close()
	bidder, err := dialWS(t, c.wsURL("g1", "dana"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer bidder.close()
	if rep, err := bidder.call("open dash 10m dashboard lamp", "open", 10*time.Second); err != nil || rep.Outcome != "success" {
		t.Fatalf("open dash: %+v %v", rep, err)
	}
	if _, err := watcher.call("watch dash", "watching", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	stopBids := make(chan struct{})
	bidsDone := make(chan struct{})
	go func() {
		defer close(bidsDone)
		for amount := 10; ; amount += 10 {
			select {
			case <-stopBids:
				return
			case <-time.After(100 * time.Millisecond):
			}
			bidder.send(fmt.Sprintf("bid dash %d", amount))
		}
	}()
	defer func() { close(stopBids); <-bidsDone }()

	// Load: gavel bench against the chain for the whole test.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bench := exec.CommandContext(ctx, gavelBin, "bench", "--config", c.cfgPath, "--clients", "8", "--duration", "40s", "--warmup", "0s")
	benchOut, err := os.Create(filepath.Join(c.dir, "bench.log"))
	if err != nil {
		t.Fatal(err)
	}
	bench.Stdout, bench.Stderr = benchOut, benchOut
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); bench.Wait(); benchOut.Close() }()

	// Every target up.
	waitFor(t, "every scrape target up", 30*time.Second, func() bool {
		r, err := prom.query(`min(up)`, time.Now().Add(-2*time.Second), time.Now())
		v := r.values()
		return err == nil && len(v) > 0 && v[len(v)-1] == 1
	})
	time.Sleep(6 * time.Second)

	// A reconfiguration: SIGKILL n2; the master removes it; it restarts and
	// is appended again.
	killed := time.Now()
	c.kill("n2")
	c.waitConfig("n2 removed", 10*time.Second, func(cfg *api.ChainConfig) bool {
		return !slices.Contains(chainIDs(cfg), "n2")
	})
	time.Sleep(4 * time.Second) // let the 2-node chain be scraped for a while
	c.start("n2")
	c.waitConfig("n2 back at the tail", 15*time.Second, func(cfg *api.ChainConfig) bool {
		ids := chainIDs(cfg)
		return len(ids) == 3 && ids[2] == "n2" && len(cfg.Joining) == 0
	})
	time.Sleep(8 * time.Second)
	end := time.Now()

	for _, name := range slices.Sorted(maps.Keys(exprs)) {
		r, err := prom.query(exprs[name], start, end)
		switch {
		case err != nil:
			t.Errorf("%s: %q: %v", name, exprs[name], err)
		case len(r.Result) == 0:
			t.Errorf("%s: %q returned no data", name, exprs[name])
		case r.finite() == 0:
			t.Errorf("%s: %q returned only NaN or infinite samples", name, exprs[name])
		default:
			t.Logf("%s: %d series, %d samples", name, len(r.Result), r.finite())
		}
	}

	epochs, err := prom.query(`max(gavel_chain_epoch{job="gavel-master"})`, start, end)
	if err != nil {
		t.Fatal(err)
	}
	lengths, err := prom.query(`max(gavel_chain_length{job="gavel-master"})`, killed.Add(-2*time.Second), end)
	if err != nil {
		t.Fatal(err)
	}
	ev, lv := epochs.values(), lengths.values()
	if len(ev) == 0 || len(lv) == 0 {
		t.Fatalf("no epoch (%d) or chain length (%d) samples", len(ev), len(lv))
	}
	t.Logf("scraped epochs %v .. %v; chain lengths from %v, min %v, to %v", ev[0], ev[len(ev)-1], lv[0], slices.Min(lv), lv[len(lv)-1])
	if ev[len(ev)-1] < ev[0]+3 { // remove, join, append
		t.Errorf("epoch went from %v to %v: the removal, the join and the append should each raise it", ev[0], ev[len(ev)-1])
	}
	if lv[0] != 3 || slices.Min(lv) != 2 || lv[len(lv)-1] != 3 {
		t.Errorf("chain length %v .. min %v .. %v: want 3, down to 2 while n2 was out, 3 again", lv[0], slices.Min(lv), lv[len(lv)-1])
	}
}

// waitFor polls ok every 200 ms until it holds or timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after %v", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDashboardImportsAnywhere checks what makes dashboards/gavel.json
// import cleanly into a stock Grafana: the datasource is a template
// variable that every panel and query uses, every panel has a unit and a
// query, and no query names an instance, a port or a process id.
func TestDashboardImportsAnywhere(t *testing.T) {
	raw, err := os.ReadFile("../dashboards/gavel.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name, Type, Query string
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title      string `json:"title"`
			Type       string `json:"type"`
			Datasource struct {
				Type, UID string
			} `json:"datasource"`
			FieldConfig struct {
				Defaults struct {
					Unit string `json:"unit"`
				} `json:"defaults"`
			} `json:"fieldConfig"`
			Targets []struct {
				Expr       string `json:"expr"`
				Datasource struct {
					UID string `json:"uid"`
				} `json:"datasource"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatal(err)
	}
	if dash.UID == "" || dash.Title == "" {
		t.Errorf("dashboard needs a uid and a title")
	}
	hasVar := false
	for _, v := range dash.Templating.List {
		hasVar = hasVar || (v.Name == "datasource" && v.Type == "datasource" && v.Query == "prometheus")
	}
	if !hasVar {
		t.Errorf("no datasource template variable of type prometheus")
	}
	hardCoded := regexp.MustCompile(`instance=|127\.0\.0\.1|:\d{4,5}\b|id="[mgn]\d`)
	for _, p := range dash.Panels {
		if p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource %q, want ${datasource}", p.Title, p.Datasource.UID)
		}
		if p.FieldConfig.Defaults.Unit == "" {
			t.Errorf("panel %q has no unit", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: a query's datasource is %q, want ${datasource}", p.Title, tg.Datasource.UID)
			}
			if hardCoded.MatchString(tg.Expr) {
				t.Errorf("panel %q: query %q names an instance", p.Title, tg.Expr)
			}
		}
	}
}
