package chain

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/internal/profiling"
)

// BidDurationBuckets are the classic buckets of gavel_bid_duration_seconds
// (kept beside the native histogram for dashboards that need them): 100 µs
// to 5 s.
var BidDurationBuckets = []float64{.0001, .00025, .0005, .00075, .001, .0015, .002, .003, .005, .0075, .01, .015, .025, .05, .1, .25, .5, 1, 2.5, 5}

// outcomeLabels are the values of the outcome label: a decided bid's
// outcome, or "error" when the node could not answer (unavailable, timed
// out).
var outcomeLabels = []string{"success", "fail", "exception", "error"}

// nodeMetrics are a node's Prometheus metrics, on a registry of its own.
// The bid path only touches pre-resolved observers and counters (atomic
// updates, no lock); everything about the replica's state is read at
// scrape time by stateCollector.
type nodeMetrics struct {
	reg       *prometheus.Registry
	duration  map[api.Outcome]prometheus.Observer
	bids      map[api.Outcome]prometheus.Counter
	errDur    prometheus.Observer
	errBids   prometheus.Counter
	reconfigs prometheus.Counter
	// durable is the last seq on stable storage; fsync times each append.
	durable prometheus.Gauge
	fsync   prometheus.Observer
	// tooManyBidders counts bids refused with TOO_MANY_BIDDERS.
	tooManyBidders prometheus.Counter
}

func newNodeMetrics(n *Node) *nodeMetrics {
	m := &nodeMetrics{reg: prometheus.NewRegistry(), duration: map[api.Outcome]prometheus.Observer{},
		bids: map[api.Outcome]prometheus.Counter{}}
	dur := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "gavel", Name: "bid_duration_seconds",
		Help:    "Time from a bid's arrival to its answer, at the node that answered the client, by outcome.",
		Buckets: BidDurationBuckets,
		// Native histogram too, for Prometheus servers that scrape them.
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 160,
		NativeHistogramMinResetDuration: time.Hour,
	}, []string{"outcome"})
	bids := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "gavel", Name: "bids_total",
		Help: "Bids answered to clients by this node, by outcome (error: not decided in time).",
	}, []string{"outcome"})
	for _, o := range []api.Outcome{api.Outcome_SUCCESS, api.Outcome_FAIL, api.Outcome_EXCEPTION} {
		label := outcomeLabels[o-1]
		m.duration[o], m.bids[o] = dur.WithLabelValues(label), bids.WithLabelValues(label)
	}
	m.errDur, m.errBids = dur.WithLabelValues("error"), bids.WithLabelValues("error")
	m.reconfigs = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gavel", Name: "reconfigurations_total",
		Help: "Chain configurations this node installed.",
	})
	m.durable = prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: "gavel", Name: "node_durable_seq",
		Help: "Sequence number of the last update on this node's stable storage (its write-ahead log).",
	})
	dataBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Namespace: "gavel", Name: "node_data_dir_bytes",
		Help: "Size of this node's data dir (write-ahead log, snapshot, metadata).",
	}, func() float64 { return float64(n.dataBytes.Load()) })
	fsync := prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "gavel", Name: "node_log_append_seconds",
		Help:    "Time to append one group commit to the write-ahead log, fsync included with chain.sync: always.",
		Buckets: BidDurationBuckets,
	})
	m.fsync = fsync
	m.tooManyBidders = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gavel", Name: "bids_too_many_bidders_total",
		Help: "Bids answered by this node with TOO_MANY_BIDDERS: a new bidder on an auction that has chain.max_bidders.",
	})
	m.reg.MustRegister(dur, bids, m.reconfigs, m.durable, dataBytes, fsync, m.tooManyBidders, &stateCollector{n: n},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// observeReply records the reason of a bid answered to a client.
func (m *nodeMetrics) observeReply(rep *api.BidReply) {
	if rep.GetReason() == api.Reason_TOO_MANY_BIDDERS {
		m.tooManyBidders.Inc()
	}
}

// observeBid records one bid answered to a client; err means no outcome.
func (m *nodeMetrics) observeBid(start time.Time, outcome api.Outcome, err error) {
	d := time.Since(start).Seconds()
	if obs, ok := m.duration[outcome]; ok && err == nil {
		obs.Observe(d)
		m.bids[outcome].Inc()
		return
	}
	m.errDur.Observe(d)
	m.errBids.Inc()
}

// stateCollector reports the replica's state at scrape time, read on the
// driver like any other input.
type stateCollector struct{ n *Node }

var (
	descEpoch = prometheus.NewDesc("gavel_chain_epoch", "Epoch of the chain configuration this node has installed.", nil, nil)
	descRole  = prometheus.NewDesc("gavel_node_role",
		"1 for this node's role in its configuration (head, middle, tail, single, joining, removed, none), 0 for the others.",
		[]string{"role"}, nil)
	descLength    = prometheus.NewDesc("gavel_chain_length", "Members of the chain in this node's configuration (joining nodes excluded).", nil, nil)
	descJoining   = prometheus.NewDesc("gavel_chain_joining", "Nodes joining at the tail in this node's configuration.", nil, nil)
	descApplied   = prometheus.NewDesc("gavel_node_applied_seq", "Sequence number of the last update this node applied.", nil, nil)
	descCommitted = prometheus.NewDesc("gavel_node_committed_seq", "Highest sequence number this node knows committed.", nil, nil)
	descLag       = prometheus.NewDesc("gavel_replication_lag_updates",
		"Updates this node applied that the tail has not yet (applied - committed); the master reports each node's lag behind the head.", nil, nil)
	descCaughtUp = prometheus.NewDesc("gavel_node_caught_up", "1 when this node holds every committed update.", nil, nil)
	descLease    = prometheus.NewDesc("gavel_node_lease_seconds", "Lease time left from the master (-1 without a master).", nil, nil)
	descWatchers = prometheus.NewDesc("gavel_node_watch_streams", "Auctions.Watch streams this node serves.", nil, nil)
	descAuctions = prometheus.NewDesc("gavel_auctions", "Auctions in this node's state (open, and closed but not yet retired).", nil, nil)

	// The bounds (docs/operations.md, "Bounds").
	descClosed  = prometheus.NewDesc("gavel_auctions_closed", "Closed auctions in this node's state, waiting to be retired.", nil, nil)
	descRetired = prometheus.NewDesc("gavel_auctions_retired_total",
		"Auctions retired from the state (chain.retention after their close); their results are in the archive.", nil, nil)
	descRequestIDs = prometheus.NewDesc("gavel_request_ids",
		"Request ids remembered in the bidders' request-id tables (chain.max_request_ids bounds them).", nil, nil)
	descTables  = prometheus.NewDesc("gavel_bidder_tables", "Bidders with a request-id table in the state.", nil, nil)
	descClients = prometheus.NewDesc("gavel_client_sessions", "Client sessions in the state (forgotten after an hour idle).", nil, nil)
	descLimit   = prometheus.NewDesc("gavel_state_limit",
		"The limits the replicated state applies, as the head's last Trim set them (0: none).", []string{"limit"}, nil)
	descHistories = prometheus.NewDesc("gavel_node_watch_histories",
		"Open auctions whose recent changes this node keeps for resumed watches (chain.watch_history each).", nil, nil)
	descWatchRefused = prometheus.NewDesc("gavel_node_watch_streams_refused_total",
		"Watch streams refused because the node served chain.max_watch_streams.", nil, nil)
	descChunksSent     = prometheus.NewDesc("gavel_snapshot_chunks_sent_total", "Snapshot chunks this node sent to peers.", nil, nil)
	descChunksReceived = prometheus.NewDesc("gavel_snapshot_chunks_received_total", "Snapshot chunks this node received.", nil, nil)
	descSnapsInstalled = prometheus.NewDesc("gavel_snapshots_installed_total",
		"Snapshots this node installed from its predecessor (joins, and peers that lacked retained updates).", nil, nil)
)

// roleLabels names each role for gavel_node_role.
var roleLabels = map[api.Role]string{api.Role_ROLE_UNSPECIFIED: "none", api.Role_HEAD: "head", api.Role_MIDDLE: "middle",
	api.Role_TAIL: "tail", api.Role_SINGLE: "single", api.Role_JOINING: "joining", api.Role_REMOVED: "removed"}

// Describe sends the descriptors of the state metrics.
func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descEpoch, descRole, descLength, descJoining, descApplied, descCommitted,
		descLag, descCaughtUp, descLease, descWatchers, descAuctions, descClosed, descRetired, descRequestIDs,
		descTables, descClients, descLimit, descHistories, descWatchRefused, descChunksSent, descChunksReceived,
		descSnapsInstalled} {
		ch <- d
	}
}

// Collect reads the replica's state on the driver (bounded by a second)
// and reports it.
func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	var (
		role                            api.Role
		epoch, applied, committed       uint64
		length, joining, watchers, auct int
		caughtUp                        bool
		lease                           int64
		stats                           auction.Stats
		limits                          auction.Limits
		snaps                           SnapshotStats
		histories                       int
	)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := c.n.do(ctx, func(r *Replica) {
		role, epoch, applied, committed, caughtUp = r.Role(), r.Epoch(), r.Applied(), r.Committed(), r.CaughtUp()
		length, joining = len(r.Config().GetChain()), len(r.Config().GetJoining())
		watchers, auct = c.n.watches.count(), r.State().Len()
		lease = r.LeaseLeft(c.n.nowMs())
		stats, limits, snaps = r.State().Stats(), r.State().Limits(), r.SnapshotStats()
		histories = len(c.n.watches.histories)
	}); err != nil {
		return // a stopping node reports only its counters
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(descEpoch, float64(epoch))
	for r, label := range roleLabels {
		v := 0.0
		if r == role {
			v = 1
		}
		gauge(descRole, v, label)
	}
	gauge(descLength, float64(length))
	gauge(descJoining, float64(joining))
	gauge(descApplied, float64(applied))
	gauge(descCommitted, float64(committed))
	gauge(descLag, float64(applied-min(committed, applied)))
	gauge(descCaughtUp, b2f(caughtUp))
	leaseSec := float64(lease) / 1000
	if lease < 0 {
		leaseSec = -1
	}
	gauge(descLease, leaseSec)
	gauge(descWatchers, float64(watchers))
	gauge(descAuctions, float64(auct))
	counter := func(d *prometheus.Desc, v uint64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v))
	}
	gauge(descClosed, float64(stats.Closed))
	counter(descRetired, stats.Retired)
	gauge(descRequestIDs, float64(stats.RequestIDs))
	gauge(descTables, float64(stats.BidderTables))
	gauge(descClients, float64(stats.Clients))
	gauge(descLimit, float64(limits.RetentionMs)/1000, "retention_seconds")
	gauge(descLimit, float64(limits.MaxRequestIDs), "max_request_ids")
	gauge(descLimit, float64(limits.MaxBidders), "max_bidders")
	gauge(descHistories, float64(histories))
	counter(descWatchRefused, c.n.watches.refused.Load())
	counter(descChunksSent, snaps.ChunksSent)
	counter(descChunksReceived, snaps.ChunksReceived)
	counter(descSnapsInstalled, snaps.Installed)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// HTTPHandler serves the node's /metrics (Prometheus), /healthz (the
// process answers), /readyz (a caught-up chain member: 503 otherwise,
// saying why) and the Go profiler under /debug/pprof/.
func (n *Node) HTTPHandler() http.Handler {
	mux := http.NewServeMux()
	profiling.Register(mux)
	mux.Handle("/metrics", promhttp.HandlerFor(n.metrics.reg, promhttp.HandlerOpts{EnableOpenMetrics: true}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, req *http.Request) {
		var why string
		err := n.do(req.Context(), func(r *Replica) {
			switch {
			case r.Config() == nil:
				why = "no configuration yet"
			case r.Role() == api.Role_JOINING:
				why = "joining: catching up from the tail"
			case r.Role() == api.Role_REMOVED:
				why = "removed from the chain"
			case !r.CaughtUp():
				why = "not caught up yet"
			}
		})
		if err != nil {
			why = err.Error()
		}
		if why != "" {
			http.Error(w, "not ready: "+why, http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	return mux
}
