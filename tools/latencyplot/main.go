// Command latencyplot draws the data of the dashboard's bid-latency panel
// as a PNG: it reads the panel's queries from dashboards/gavel.json, runs
// them over a time range through a Prometheus's HTTP API, and plots the
// series with gnuplot (Debian's gnuplot-nox).
//
//	go run ./tools/latencyplot --prometheus http://127.0.0.1:9090 --last 2m --out docs/bid-latency.png
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

func main() {
	prom := flag.String("prometheus", "http://127.0.0.1:9090", "Prometheus base URL")
	dashboard := flag.String("dashboard", "dashboards/gavel.json", "Grafana dashboard JSON")
	panel := flag.String("panel", "Bid latency (p50, p90, p99)", "title of the panel to draw")
	last := flag.Duration("last", 2*time.Minute, "time range: this long until now")
	step := flag.Duration("step", 2*time.Second, "query resolution")
	rate := flag.String("rate-interval", "15s", "what $__rate_interval stands for")
	title := flag.String("title", "gavel: bid latency at the answering node (3 nodes, 3 masters, gavel bench --clients 64)", "plot title")
	out := flag.String("out", "docs/bid-latency.png", "PNG to write")
	flag.Parse()
	if err := run(*prom, *dashboard, *panel, *last, *step, *rate, *title, *out); err != nil {
		fmt.Fprintln(os.Stderr, "latencyplot:", err)
		os.Exit(1)
	}
}

type target struct{ Expr, LegendFormat string }

func panelTargets(path, title string) ([]target, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []struct {
			Title   string   `json:"title"`
			Targets []target `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, p := range d.Panels {
		if p.Title == title {
			return p.Targets, nil
		}
	}
	return nil, fmt.Errorf("%s has no panel %q", path, title)
}

// queryRange returns the first series of expr as (unix seconds, value) pairs.
func queryRange(base, expr string, from, to time.Time, step time.Duration) ([][2]float64, error) {
	v := url.Values{"query": {expr}, "start": {strconv.FormatInt(from.Unix(), 10)},
		"end": {strconv.FormatInt(to.Unix(), 10)}, "step": {strconv.FormatFloat(step.Seconds(), 'f', -1, 64)}}
	resp, err := http.Get(strings.TrimRight(base, "/") + "/api/v1/query_range?" + v.Encode())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Values [][2]any `json:"values"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
		return nil, fmt.Errorf("query %q: %s %s", expr, resp.Status, r.Error)
	}
	if len(r.Data.Result) == 0 {
		return nil, fmt.Errorf("query %q returned no data", expr)
	}
	var pts [][2]float64
	for _, p := range r.Data.Result[0].Values {
		ts, _ := p[0].(float64)
		val, err := strconv.ParseFloat(fmt.Sprint(p[1]), 64)
		if err == nil {
			pts = append(pts, [2]float64{ts, val})
		}
	}
	return pts, nil
}

func run(prom, dashboard, panel string, last, step time.Duration, rate, title, out string) error {
	targets, err := panelTargets(dashboard, panel)
	if err != nil {
		return err
	}
	to := time.Now()
	from := to.Add(-last)
	dir, err := os.MkdirTemp("", "latencyplot")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	series := make([][][2]float64, len(targets))
	first := float64(to.Unix())
	for i, tg := range targets {
		expr := strings.ReplaceAll(tg.Expr, "$__rate_interval", rate)
		pts, err := queryRange(prom, expr, from, to, step)
		if err != nil {
			return err
		}
		series[i] = pts
		if len(pts) > 0 {
			first = min(first, pts[0][0])
		}
	}
	var plots []string
	for i, pts := range series {
		var b strings.Builder
		for _, p := range pts {
			fmt.Fprintf(&b, "%.0f %.6f\n", p[0]-first, p[1]*1000) // seconds since the first sample, ms
		}
		data := filepath.Join(dir, fmt.Sprintf("s%d.dat", i))
		if err := os.WriteFile(data, []byte(b.String()), 0o644); err != nil {
			return err
		}
		plots = append(plots, fmt.Sprintf("%q using 1:2 with lines lw 2 title %q", data, targets[i].LegendFormat))
	}
	script := fmt.Sprintf(`set terminal pngcairo size 1000,420 font "Sans,10"
set output %q
set title %q
set xlabel "seconds"
set ylabel "latency (ms)"
set grid
set key bottom right box opaque
set yrange [0:*]
plot %s
`, out, title, strings.Join(plots, ", \\\n  "))
	cmd := exec.Command("gnuplot")
	cmd.Stdin = strings.NewReader(script)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("gnuplot (apt-get install gnuplot-nox): %w", err)
	}
	fmt.Printf("wrote %s: %s over the last %v\n", out, panel, last)
	return nil
}
