package launch

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The --monitor Prometheus runs on the launching machine, in the launching
// directory: .run/prometheus.pid, .run/prometheus.log, its configuration
// in .run/prometheus.yml (from `gavel config prometheus`) and its samples
// in .run/prometheus/.

// promConfig is the monitor's Prometheus configuration, relative to the
// launching directory.
var promConfig = filepath.Join(runDir, "prometheus.yml")

// promPID returns the pid of the monitor's Prometheus when it runs: the
// pid of .run/prometheus.pid, if that process runs in the launching
// directory with --config.file=.run/prometheus.yml, as startMonitor
// started it. Any other process (the pid reused) is not the monitor.
func (l *Launcher) promPID() (int, bool) {
	pid := readPIDFile(filepath.Join(l.o.Dir, runDir, "prometheus.pid"))
	if pid == 0 {
		return 0, false
	}
	args, ok := procArgs(pid, l.o.Dir)
	return pid, ok && slices.Contains(args, "--config.file="+promConfig)
}

// checkMonitor refuses, before anything starts, a monitor address that is
// taken by something else than the monitor's own Prometheus.
func (l *Launcher) checkMonitor(context.Context) error {
	if _, err := exec.LookPath("prometheus"); err != nil {
		return nil // startMonitor says so; the cluster runs without it
	}
	if _, ok := l.promPID(); ok {
		return nil
	}
	lis, err := net.Listen("tcp", l.o.MonitorAddr)
	if err != nil {
		return fmt.Errorf("--monitor: %s is %w (choose another with --monitor-addr)", l.o.MonitorAddr, ErrPortTaken)
	}
	lis.Close()
	return nil
}

// startMonitor starts a local Prometheus scraping every process of the
// configuration and says where to point Grafana.
func (l *Launcher) startMonitor(ctx context.Context) error {
	if _, err := exec.LookPath("prometheus"); err != nil {
		l.warn("--monitor: prometheus is not installed (apt-get install prometheus); the cluster runs without it")
		return nil
	}
	addr := l.o.MonitorAddr
	if pid, ok := l.promPID(); ok {
		l.say("  prometheus already running (pid %d): http://%s/", pid, addr)
		return nil
	}
	run := filepath.Join(l.o.Dir, runDir)
	if err := os.MkdirAll(run, 0o755); err != nil {
		return err
	}
	yml := promConfig
	if err := os.WriteFile(filepath.Join(l.o.Dir, yml), []byte(l.cfg.PrometheusScrapeConfig(5*time.Second)), 0o644); err != nil {
		return err
	}
	// sh starts Prometheus in the background in a session of its own and
	// exits, so that Prometheus outlives the launcher.
	script := fmt.Sprintf("prometheus --config.file=%s --storage.tsdb.path=%s --web.listen-address=%s --log.level=warn >>%s 2>&1 </dev/null & echo $! >%s",
		shQuote(yml), shQuote(filepath.Join(runDir, "prometheus")), shQuote(addr),
		shQuote(filepath.Join(runDir, "prometheus.log")), shQuote(filepath.Join(runDir, "prometheus.pid")))
	cmd := exec.CommandContext(ctx, "sh", "-c", script)
	cmd.Dir = l.o.Dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("--monitor: %w: starting prometheus: %v %s", ErrMonitor, err, out)
	}
	l.monitorStarted = true
	logf := filepath.Join(runDir, "prometheus.log")
	client := &http.Client{Timeout: time.Second}
	for i := 0; ; i++ {
		if resp, err := client.Get("http://" + addr + "/-/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if _, ok := l.promPID(); !ok {
			return fmt.Errorf("--monitor: %w: prometheus exited; see %s:%s", ErrMonitor, logf, l.logTailLocal(logf))
		}
		if i >= 100 {
			return fmt.Errorf("--monitor: %w: prometheus not ready on %s after 10s; see %s", ErrMonitor, addr, logf)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
	l.say("  prometheus  http://%s/  scraping %s  log %s", addr, yml, logf)
	l.say("  grafana     add a Prometheus datasource at http://%s and import dashboards/gavel.json", addr)
	l.say("              (or provision it: dashboards/provisioning/, see docs/observability.md)")
	return nil
}

// logTailLocal returns the last lines of a file of the launching
// directory, indented.
func (l *Launcher) logTailLocal(path string) string {
	b, err := os.ReadFile(filepath.Join(l.o.Dir, path))
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return "\n  " + strings.Join(lines, "\n  ")
}

// stopMonitor stops the monitor's Prometheus if it runs (SIGTERM, then
// SIGKILL after 5s); say prints that it stopped.
func (l *Launcher) stopMonitor(ctx context.Context, say bool) {
	if pid, ok := l.promPID(); ok {
		_ = syscall.Kill(pid, syscall.SIGTERM)
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
			if _, ok := l.promPID(); !ok {
				break
			}
			if sleep(ctx, 100*time.Millisecond) != nil {
				break
			}
		}
		if _, ok := l.promPID(); ok {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if say {
			l.say("prometheus stopped")
		}
	}
	_ = os.Remove(filepath.Join(l.o.Dir, runDir, "prometheus.pid"))
}
