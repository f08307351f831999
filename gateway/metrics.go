package gateway

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// promMetrics are the gateway's Prometheus metrics, on a registry of its
// own: connection and watch counts read at scrape time, and the delay of
// each push.
type promMetrics struct {
	reg       *prometheus.Registry
	pushDelay prometheus.Histogram
	// refusedConns counts connections (and logins) refused at a bound, by
	// reason; watchesRefused the watches refused at MaxWatches.
	refusedConns   *prometheus.CounterVec
	watchesRefused prometheus.Counter
}

var (
	descConnections = prometheus.NewDesc("gavel_ws_connections", "Open WebSocket connections.", nil, nil)
	descWatchers    = prometheus.NewDesc("gavel_ws_watchers", "Watch subscriptions of the open connections.", nil, nil)
	descUpstreams   = prometheus.NewDesc("gavel_ws_upstream_watches", "Upstream Auctions.Watch streams (one per followed auction).", nil, nil)
)

func newPromMetrics(g *Gateway) *promMetrics {
	m := &promMetrics{reg: prometheus.NewRegistry(), pushDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: "gavel", Name: "ws_push_delay_seconds",
		Help:                        "From the tail's commit of a change (the event's server time) to the gateway queueing its pushes to the watchers.",
		Buckets:                     []float64{.0005, .001, .002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		NativeHistogramBucketFactor: 1.1, NativeHistogramMaxBucketNumber: 160,
		NativeHistogramMinResetDuration: time.Hour,
	})}
	m.refusedConns = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "gavel", Name: "ws_refused_total",
		Help: "Connections (and logins) refused at a bound: gateway_full (gateway.max_connections), " +
			"bidder_full (gateway.max_connections_per_bidder).",
	}, []string{"reason"})
	for _, r := range []string{"gateway_full", "bidder_full"} {
		m.refusedConns.WithLabelValues(r)
	}
	m.watchesRefused = prometheus.NewCounter(prometheus.CounterOpts{
		Namespace: "gavel", Name: "ws_watches_refused_total",
		Help: "Watches refused because the connection watched gateway.max_watches auctions.",
	})
	m.reg.MustRegister(m.pushDelay, m.refusedConns, m.watchesRefused, &gatewayCollector{g: g},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// refused counts a connection refused for reason.
func (m *promMetrics) refused(reason string) { m.refusedConns.WithLabelValues(reason).Inc() }

// observePush records the delay of the pushes of an event stamped
// eventMs (Unix ms at the tail); clocks of different hosts may disagree,
// so a negative delay counts as zero.
func (m *promMetrics) observePush(eventMs, nowMs int64) {
	if eventMs <= 0 {
		return
	}
	m.pushDelay.Observe(float64(max(0, nowMs-eventMs)) / 1000)
}

// gatewayCollector reads the connection and watch counts at scrape time.
type gatewayCollector struct{ g *Gateway }

// Describe sends the descriptors of the gauges.
func (c *gatewayCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descConnections
	ch <- descWatchers
	ch <- descUpstreams
}

// Collect reports the gauges.
func (c *gatewayCollector) Collect(ch chan<- prometheus.Metric) {
	watchers, upstreams := c.g.hub.counts()
	c.g.mu.Lock()
	conns := len(c.g.conns)
	c.g.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descConnections, prometheus.GaugeValue, float64(conns))
	ch <- prometheus.MustNewConstMetric(descWatchers, prometheus.GaugeValue, float64(watchers))
	ch <- prometheus.MustNewConstMetric(descUpstreams, prometheus.GaugeValue, float64(upstreams))
}

// handler serves /metrics.
func (m *promMetrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{EnableOpenMetrics: true})
}
