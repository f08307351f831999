package master

import (
	"fmt"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gavel-auction/gavel/internal/profiling"
)

// metrics are a master's Prometheus metrics, on a registry of its own.
type metrics struct {
	reg       *prometheus.Registry
	reconfigs prometheus.Counter
	// forgotten counts the node reports the leader dropped (master.forget_after).
	forgotten prometheus.Counter
}

func newMetrics(m *Master) *metrics {
	mt := &metrics{reg: prometheus.NewRegistry(), reconfigs: prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gavel", Name: "reconfigurations_total",
		Help: "Chain configurations (epochs) this master applied from the Raft log.",
	})}
	mt.forgotten = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gavel", Name: "master_reports_forgotten_total",
		Help: "Reports of nodes that are gone (not members, silent for master.forget_after) that this master forgot as leader.",
	})
	mt.reg.MustRegister(mt.reconfigs, mt.forgotten, &masterCollector{m: m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return mt
}

var (
	descIsLeader  = prometheus.NewDesc("gavel_master_is_leader", "1 while this master acts as the Raft leader.", nil, nil)
	descTerm      = prometheus.NewDesc("gavel_master_term", "Current Raft term.", nil, nil)
	descEpoch     = prometheus.NewDesc("gavel_chain_epoch", "Epoch of the chain configuration this master has applied.", nil, nil)
	descLength    = prometheus.NewDesc("gavel_chain_length", "Members of the chain (joining nodes excluded).", nil, nil)
	descJoining   = prometheus.NewDesc("gavel_chain_joining", "Nodes joining at the tail.", nil, nil)
	descPosition  = prometheus.NewDesc("gavel_chain_member", "1 for each chain member by node id and position (head, middle, tail, single, joining).", []string{"member", "position"}, nil)
	descLag       = prometheus.NewDesc("gavel_replication_lag_updates", "How many updates a node's last heartbeat was behind the most advanced member's (leader only).", []string{"member"}, nil)
	descHeartbeat = prometheus.NewDesc("gavel_node_heartbeat_age_seconds", "Time since the leader last heard from a member (leader only).", []string{"member"}, nil)
	descWatchers  = prometheus.NewDesc("gavel_master_watchers", "Configuration watch streams open on this master.", nil, nil)
	descReports   = prometheus.NewDesc("gavel_master_node_reports",
		"Nodes whose latest heartbeat the leader keeps: members, and others until master.forget_after (leader only).", nil, nil)
)

// masterCollector reads the master's state at scrape time.
type masterCollector struct{ m *Master }

// Describe sends the descriptors of the state metrics.
func (c *masterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descIsLeader, descTerm, descEpoch, descLength, descJoining, descPosition,
		descLag, descHeartbeat, descWatchers, descReports} {
		ch <- d
	}
}

// Collect reports the master's Raft role, its configuration and, at the
// leader, each member's lag and heartbeat age.
func (c *masterCollector) Collect(ch chan<- prometheus.Metric) {
	m := c.m
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	leader := 0.0
	if m.IsLeader() {
		leader = 1
	}
	gauge(descIsLeader, leader)
	gauge(descTerm, float64(m.term()))
	cfg := m.fsm.config()
	gauge(descEpoch, float64(cfg.Epoch))
	gauge(descLength, float64(len(cfg.Chain)))
	gauge(descJoining, float64(len(cfg.Joining)))
	for i, mem := range cfg.Chain {
		pos := "middle"
		switch {
		case len(cfg.Chain) == 1:
			pos = "single"
		case i == 0:
			pos = "head"
		case i == len(cfg.Chain)-1:
			pos = "tail"
		}
		gauge(descPosition, 1, mem.ID, pos)
	}
	for _, mem := range cfg.Joining {
		gauge(descPosition, 1, mem.ID, "joining")
	}
	gauge(descWatchers, float64(m.watchers.Load()))
	if n, ok := m.reports(); ok {
		gauge(descReports, float64(n))
	}
	health := m.nodeHealth()
	var top uint64
	for _, h := range health {
		top = max(top, h.Applied)
	}
	for _, h := range health {
		if h.LastHeartbeatMs < 0 {
			continue
		}
		gauge(descLag, float64(top-h.Applied), h.Id)
		gauge(descHeartbeat, float64(h.LastHeartbeatMs)/1000, h.Id)
	}
}

// HTTPHandler serves the master's /metrics (Prometheus), /healthz (the
// process answers), /readyz (a leader is known: 503 otherwise) and the Go
// profiler under /debug/pprof/.
func (m *Master) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	profiling.Register(mux)
	mux.Handle("/metrics", promhttp.HandlerFor(m.metrics.reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if addr, id := m.raft.LeaderWithID(); addr == "" || id == "" {
			http.Error(w, "not ready: no Raft leader known (state "+m.raft.State().String()+")", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready: state", m.raft.State().String())
	})
	return mux
}
