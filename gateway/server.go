// Package gateway is gavel's WebSocket and HTTP front for bidders: the
// line protocol of docs/gateway.md on /ws (wscat, scripts, the web page),
// the page on /, and health on /healthz.
//
// A Gateway talks to the chain like any client (package client: bids and
// opens to the head, reads to the tail, retried with the same request id;
// the bids of every connection share a few pipelined BidStream calls, a
// client.BidMux)
// and follows live auctions through one upstream Auctions.Watch stream per
// auction at the tail, fanned out to every local watcher (hub.go). It
// finds the tail from the masters' configuration watch, or from the nodes
// when the cluster has no masters (view.go).
//
// Identity: in open mode (no secret) a connection names its bidder with
// ?bidder=NAME or the login command; in auth mode it must present a token
// signed with the secret (token.go), which names the bidder and its role.
package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/internal/conns"
	"github.com/gavel-auction/gavel/internal/profiling"
	"github.com/gavel-auction/gavel/pki"
)

// pageHandler serves "/": the web page. gateway/page.go, which embeds
// gateway/web/, sets it from an init function to PageHandler(); until then
// "/" answers 404.
var pageHandler http.Handler = http.NotFoundHandler()

// Defaults for the zero values of Options.
const (
	DefaultQueueSize       = 256
	DefaultConflateAfter   = 50 * time.Millisecond
	DefaultWriteTimeout    = 10 * time.Second
	DefaultPingInterval    = 10 * time.Second
	DefaultPongWait        = 30 * time.Second
	DefaultReadLimit       = 64 << 10
	DefaultMetricsInterval = time.Second
	DefaultCallTimeout     = 5 * time.Second

	DefaultMaxConnections          = 20_000
	DefaultMaxConnectionsPerBidder = 16
	DefaultMaxWatches              = 1024
)

// stopTimeout bounds Stop.
const stopTimeout = 5 * time.Second

// A connection's buffers: its own read buffer, and the write buffer it
// borrows from writeBuffers for each message it sends.
const (
	readBufferSize  = 512
	writeBufferSize = 4096
)

// writeBuffers are the gateway's WebSocket write buffers, shared by every
// connection (gorilla takes one for a message and puts it back after).
var writeBuffers sync.Pool

// bidLanes is how many BidStream calls to the head carry the gateway's
// bids, each with many bids in flight. More than a few: a node's stream
// handler drives the replica itself for a few rounds when it finds it
// idle (chain/node.go), and its stream is not read meanwhile, so bids
// spread over more streams wait less. Measured with gavel bench --via ws
// (64 clients, a three-node chain): 4 lanes 3.7k bids/s, 16 lanes 5.0-5.7k,
// 64 lanes 5.5k.
const bidLanes = 16

// pingSweeps is how many times per ping interval the ping sweep runs.
const pingSweeps = 16

// maxSweepGap bounds the time between two sweeps of pingLoop, and so how
// long a connection outlives its token.
const maxSweepGap = time.Second

// Options configure a Gateway.
type Options struct {
	// ID names the gateway in logs, metrics and the master's watch list.
	ID string
	// Nodes are the chain nodes' gRPC addresses (any subset of the chain:
	// the client learns the rest).
	Nodes []string
	// Masters are the masters' gRPC addresses; with none, the gateway
	// learns the chain configuration from the nodes.
	Masters []string
	// Secret signs bidder tokens; empty runs the gateway in open mode.
	Secret string
	// AllowedOrigins are browser origins (scheme://host[:port]) allowed
	// besides the gateway's own host; "*" allows any.
	AllowedOrigins []string
	// AllowEmptyOrigin lets requests without an Origin header (wscat,
	// programs) connect in auth mode too; in open mode they always may.
	AllowEmptyOrigin bool
	// QueueSize bounds each connection's pending replies (default 256).
	QueueSize int
	// ConflateAfter is how long a highest push may wait for a connection
	// before a newer one of the same auction replaces it (default 50ms;
	// negative: only once QueueSize messages wait).
	ConflateAfter time.Duration
	// WriteTimeout bounds the write of one frame (default 10s).
	WriteTimeout time.Duration
	// PingInterval is the WebSocket ping period (default 10s); PongWait how
	// long a silent connection lives (default 30s, and more than
	// PingInterval).
	PingInterval, PongWait time.Duration
	// ReadLimit is the largest frame a client may send (default 64 KiB).
	ReadLimit int
	// SendBuffer, when positive, is the kernel send buffer (SO_SNDBUF) of
	// every accepted connection: it bounds what a client that stops
	// reading holds up in the kernel before the gateway's writes to it
	// stall and WriteTimeout cuts it off.
	SendBuffer int
	// MetricsInterval is the period of the metrics push (default 1s).
	MetricsInterval time.Duration
	// Pprof serves Go's profiles on /debug/pprof/ (CPU, heap, goroutines,
	// trace). They reveal the command line and memory contents: for an
	// address only operators reach.
	Pprof bool
	// CallTimeout bounds one bid, open or read, retries included
	// (default 5s, the config's client.timeout).
	CallTimeout time.Duration
	// MaxConnections bounds the gateway's connections, and
	// MaxConnectionsPerBidder one bidder's among them: a connection past
	// either is refused (503, 429), and so is a login past the second.
	// MaxWatches bounds the auctions one connection watches. Defaults
	// DefaultMaxConnections, DefaultMaxConnectionsPerBidder,
	// DefaultMaxWatches.
	MaxConnections, MaxConnectionsPerBidder, MaxWatches int
	// Logger receives the gateway's log lines; nil discards them.
	Logger *slog.Logger
	// TLS, when set, is the gateway's identity: it serves https and wss
	// with its certificate (asking bidders for none), and its gRPC
	// connections to nodes and masters run over mutual TLS, presenting
	// it. Nil serves http and ws and dials in plaintext.
	TLS *pki.Identity
	// DialOptions are added to every gRPC connection to nodes and masters,
	// after the credentials of TLS.
	DialOptions []grpc.DialOption
	// Now is the clock of server_time (time.Now if nil).
	Now func() time.Time
}

// dialOptions are the gateway's own options for every gRPC connection.
var dialOptions = []grpc.DialOption{
	grpc.WithTransportCredentials(insecure.NewCredentials()),
	client.ReconnectQuickly,
}

// Gateway is one gateway process's server. Create it with New, serve with
// Start, end with Stop.
type Gateway struct {
	opts   Options
	log    *slog.Logger
	secret []byte // nil in open mode
	client *client.Client
	bids   *client.BidMux // the connections' bids, over a few streams to the head
	view   *chainView
	hub    *hub
	stats  bidStats
	prom   *promMetrics // Prometheus registry; safe for concurrent use
	http   *http.Server
	up     websocket.Upgrader

	ctx    context.Context // cancelled by Stop: upstreams, view, metrics, connections
	cancel context.CancelFunc

	// mu guards conns, admitting, perBidder, stopped and wg's Add: no
	// goroutine is started once Stop has begun waiting.
	mu    sync.Mutex
	conns map[*conn]struct{}
	// admitting counts the connections admitted but not yet adopted;
	// perBidder counts each bidder's connections, those admitted included
	// (MaxConnections and MaxConnectionsPerBidder).
	admitting int
	perBidder map[string]int
	stopped   bool
	wg        sync.WaitGroup // every goroutine the gateway starts
	stopOnce  sync.Once

	// grpcConns are the gateway's connections to masters and nodes.
	grpcConns *conns.Cache
}

// New returns a gateway for the chain of opts.Nodes. It does not listen
// yet: see Start.
func New(opts Options) (*Gateway, error) {
	if opts.ID == "" {
		return nil, ErrNoID
	}
	if len(opts.Nodes) == 0 {
		return nil, ErrNoNodes
	}
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.ConflateAfter == 0 {
		opts.ConflateAfter = DefaultConflateAfter
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.PingInterval <= 0 {
		opts.PingInterval = DefaultPingInterval
	}
	if opts.PongWait <= opts.PingInterval {
		opts.PongWait = max(DefaultPongWait, 3*opts.PingInterval)
	}
	if opts.ReadLimit <= 0 {
		opts.ReadLimit = DefaultReadLimit
	}
	if opts.MetricsInterval <= 0 {
		opts.MetricsInterval = DefaultMetricsInterval
	}
	if opts.CallTimeout <= 0 {
		opts.CallTimeout = DefaultCallTimeout
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = DefaultMaxConnections
	}
	if opts.MaxConnectionsPerBidder <= 0 {
		opts.MaxConnectionsPerBidder = DefaultMaxConnectionsPerBidder
	}
	if opts.MaxWatches <= 0 {
		opts.MaxWatches = DefaultMaxWatches
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TLS != nil {
		opts.DialOptions = append([]grpc.DialOption{opts.TLS.DialOption()}, opts.DialOptions...)
	}
	log := opts.Logger.With("gateway", opts.ID)
	cl, err := client.New(opts.Nodes, client.Options{Logger: log, DialOptions: opts.DialOptions})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &Gateway{opts: opts, log: log, client: cl, bids: cl.NewBidMux(bidLanes), ctx: ctx, cancel: cancel,
		conns: map[*conn]struct{}{}, perBidder: map[string]int{},
		grpcConns: conns.New(slices.Concat(dialOptions, opts.DialOptions)...)}
	if opts.Secret != "" {
		g.secret = []byte(opts.Secret)
	}
	g.view = newChainView(g)
	g.hub = newHub(g)
	g.prom = newPromMetrics(g)
	g.up = websocket.Upgrader{
		HandshakeTimeout: 10 * time.Second,
		// An idle connection holds a small read buffer and no write
		// buffer: commands are short lines, and writers borrow a buffer
		// from the pool for one message at a time ("What a watcher
		// costs" in docs/gateway.md).
		ReadBufferSize:  readBufferSize,
		WriteBufferSize: writeBufferSize,
		WriteBufferPool: &writeBuffers,
		// serveWS checks the origin itself, to answer with a clear message.
		CheckOrigin: func(*http.Request) bool { return true },
	}
	// Failed TLS handshakes from browsers (an untrusted certificate, a
	// plain http request) are the server's error log: debug level.
	g.http = &http.Server{Handler: g.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	if opts.TLS != nil {
		g.http.TLSConfig = opts.TLS.HTTPSConfig()
	}
	return g, nil
}

// Handler returns the gateway's HTTP handler: /ws, /healthz, /metrics
// (Prometheus), /debug/pprof/ with Options.Pprof, and the page.
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", g.serveWS)
	mux.HandleFunc("/healthz", g.serveHealth)
	mux.Handle("/metrics", g.prom.handler())
	if g.opts.Pprof {
		profiling.Register(mux)
	}
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { pageHandler.ServeHTTP(w, r) }))
	return mux
}

// Start serves on lis (https and wss with Options.TLS, else http and
// ws), and starts following the chain, until Stop.
func (g *Gateway) Start(lis net.Listener) {
	mode, scheme := "open", "http"
	if !g.open() {
		mode = "auth"
	}
	if g.http.TLSConfig != nil {
		scheme = "https"
	}
	g.log.Info("gateway started", "addr", lis.Addr().String(), "scheme", scheme, "mode", mode,
		"masters", len(g.opts.Masters), "nodes", len(g.opts.Nodes))
	if g.opts.SendBuffer > 0 {
		lis = sendBufferListener{Listener: lis, size: g.opts.SendBuffer}
	}
	g.goFn(func() {
		var err error
		if g.http.TLSConfig != nil {
			err = g.http.ServeTLS(lis, "", "")
		} else {
			err = g.http.Serve(lis)
		}
		if err != nil && err != http.ErrServerClosed {
			g.log.Error("HTTP server failed", "err", err)
		}
	})
	g.goFn(func() { g.view.run(g.ctx) })
	g.goFn(g.metricsLoop)
	g.goFn(g.pingLoop)
}

// Stop closes every connection (close frame 1001, going away), ends the
// upstream watches and waits for the gateway's goroutines, at most a few
// seconds in all.
func (g *Gateway) Stop() {
	g.stopOnce.Do(func() {
		g.mu.Lock()
		g.stopped = true
		conns := make([]*conn, 0, len(g.conns))
		for c := range g.conns {
			conns = append(conns, c)
		}
		g.mu.Unlock()
		for _, c := range conns {
			c.close(websocket.CloseGoingAway, "gateway stopping")
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = g.http.Shutdown(ctx) // hijacked WebSockets are not its business: closed above
		cancel()
		g.cancel()
		done := make(chan struct{})
		go func() { g.wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(stopTimeout):
			g.log.Warn("gateway stop: some goroutines still running", "after", stopTimeout)
		}
		g.bids.Close()
		g.client.Close()
		g.grpcConns.Close()
		g.log.Info("gateway stopped")
	})
}

// goFn runs f in a goroutine tracked by Stop; false (f not run) once the
// gateway is stopping.
func (g *Gateway) goFn(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
	return true
}

// open reports whether the gateway runs in open mode (no secret).
func (g *Gateway) open() bool { return g.secret == nil }

// nowMs is the gateway's clock in Unix milliseconds: every push's server_time.
func (g *Gateway) nowMs() int64 { return g.opts.Now().UnixMilli() }

// ---------------------------------------------------------------------------
// HTTP.

// identity is who a connection acts as.
type identity struct {
	bidder string
	role   auth.Role
	token  bool // from a token (auth mode): login is refused
	// tokenText and expires are the token and its expiry (Unix seconds).
	tokenText string
	expires   int64
}

// httpError answers a refused request with a plain-text explanation.
func httpError(w http.ResponseWriter, code int, msg string) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="gavel"`)
	}
	http.Error(w, msg, code)
}

// serveWS upgrades a request to a WebSocket connection.
func (g *Gateway) serveWS(w http.ResponseWriter, r *http.Request) {
	if msg := g.checkOrigin(r); msg != "" {
		g.log.Debug("connection refused", "remote", r.RemoteAddr, "why", msg)
		httpError(w, http.StatusForbidden, msg)
		return
	}
	id, code, msg := g.identify(r)
	if code != 0 {
		g.log.Debug("connection refused", "remote", r.RemoteAddr, "why", msg)
		httpError(w, code, msg)
		return
	}
	if code, msg := g.admit(id.bidder); code != 0 {
		g.log.Debug("connection refused", "remote", r.RemoteAddr, "bidder", id.bidder, "why", msg)
		httpError(w, code, msg)
		return
	}
	cw := &corkingWriter{ResponseWriter: w}
	ws, err := g.up.Upgrade(cw, r, nil)
	if err != nil {
		g.release(id.bidder)
		return // the upgrader has answered the request
	}
	c := newConn(g, ws, cw.conn, id, r.RemoteAddr)
	if !g.adopt(c) {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "gateway stopping"),
			time.Now().Add(time.Second))
		ws.Close()
		return
	}
	g.log.Debug("connection opened", "remote", r.RemoteAddr, "bidder", id.bidder, "role", string(id.role))
}

// adopt registers c and starts its reader; false once stopping.
func (g *Gateway) adopt(c *conn) bool {
	if c.bidder != "" {
		g.hub.setBidder(c, "", c.bidder)
	}
	g.mu.Lock()
	g.admitting--
	if !g.stopped {
		// The first ping comes after half to all of a ping interval, so
		// that connections opened together are not pinged together.
		c.pingAt = time.Now().Add(g.opts.PingInterval/2 + rand.N(g.opts.PingInterval/2+1))
		g.conns[c] = struct{}{}
	}
	g.mu.Unlock()
	if !g.goFn(c.readLoop) {
		g.forget(c)
		g.hub.removeConn(c, c.bidder)
		return false
	}
	return true
}

// forget unregisters a connection that has ended.
func (g *Gateway) forget(c *conn) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.conns[c]; ok {
		delete(g.conns, c)
		g.unbid(c.bidder)
	}
}

// admit takes a place for a new connection of bidder ("" for none yet),
// or returns the HTTP status and message that refuse it: the gateway
// holds MaxConnections (503), or the bidder MaxConnectionsPerBidder (429).
// A connection admitted is adopted or released.
func (g *Gateway) admit(bidder string) (int, string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n := len(g.conns) + g.admitting; n >= g.opts.MaxConnections {
		g.prom.refused("gateway_full")
		return http.StatusServiceUnavailable, fmt.Sprintf("gateway %s holds %d connections, the most it takes "+
			"(gateway.max_connections): try again later, or another gateway", g.opts.ID, n)
	}
	if msg := g.bidderFull(bidder); msg != "" {
		g.prom.refused("bidder_full")
		return http.StatusTooManyRequests, msg
	}
	g.admitting++
	if bidder != "" {
		g.perBidder[bidder]++
	}
	return 0, ""
}

// bidderFull says why bidder may not have one more connection, or "";
// mu held.
func (g *Gateway) bidderFull(bidder string) string {
	if n := g.perBidder[bidder]; bidder != "" && n >= g.opts.MaxConnectionsPerBidder {
		return fmt.Sprintf("bidder %s has %d connections to gateway %s, the most one bidder may have "+
			"(gateway.max_connections_per_bidder): close one first", bidder, n, g.opts.ID)
	}
	return ""
}

// release gives back the place of an admitted connection that was never
// adopted.
func (g *Gateway) release(bidder string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.admitting--
	g.unbid(bidder)
}

// unbid takes one connection off bidder's count; mu held.
func (g *Gateway) unbid(bidder string) {
	if bidder == "" {
		return
	}
	if g.perBidder[bidder]--; g.perBidder[bidder] <= 0 {
		delete(g.perBidder, bidder)
	}
}

// rebid moves a connection from bidder old to bidder (login), unless
// bidder has the most connections it may have: then it returns why.
func (g *Gateway) rebid(old, bidder string) string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if old == bidder {
		return ""
	}
	if msg := g.bidderFull(bidder); msg != "" {
		g.prom.refused("bidder_full")
		return msg
	}
	g.unbid(old)
	g.perBidder[bidder]++
	return ""
}

// checkOrigin returns why a request may not connect, or "". A browser's
// request has an Origin: the gateway's own host, or one of
// AllowedOrigins. A request without one (wscat, programs) may connect in
// open mode; with a secret only with AllowEmptyOrigin, so that a page of
// another site cannot hide where it comes from.
func (g *Gateway) checkOrigin(r *http.Request) string {
	origin := r.Header.Get("Origin")
	if origin == "" {
		if g.open() || g.opts.AllowEmptyOrigin {
			return ""
		}
		return fmt.Sprintf("no Origin header: this gateway takes bidders with tokens, from its own pages (%s) or "+
			"gateway.allowed_origins; a program sends an Origin (wscat -o http://%s), or the gateway is run with gateway.allow_empty_origin",
			r.Host, r.Host)
	}
	u, err := url.Parse(origin)
	if err == nil && u.Host != "" && strings.EqualFold(u.Host, r.Host) {
		return ""
	}
	for _, a := range g.opts.AllowedOrigins {
		if a == "*" || strings.EqualFold(strings.TrimSuffix(a, "/"), origin) {
			return ""
		}
	}
	return fmt.Sprintf("origin %s may not connect: the page must come from this gateway (%s) or from gateway.allowed_origins",
		origin, r.Host)
}

// identify returns who the request acts as, or an HTTP status and why.
func (g *Gateway) identify(r *http.Request) (identity, int, string) {
	q := r.URL.Query()
	bidder := q.Get("bidder")
	if g.open() {
		if bidder != "" {
			if err := auth.CheckName(bidder); err != nil {
				return identity{}, http.StatusBadRequest, fmt.Sprintf("?bidder=: %v", err)
			}
		}
		return identity{bidder: bidder}, 0, ""
	}
	tok := q.Get("token")
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, t, _ := strings.Cut(strings.TrimSpace(h), " ")
		if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(t) == "" {
			return identity{}, http.StatusUnauthorized, "Authorization: want \"Bearer TOKEN\" with a token from gavel token"
		}
		tok = strings.TrimSpace(t)
	}
	if tok == "" {
		return identity{}, http.StatusUnauthorized, fmt.Sprintf("%v: this gateway requires a bearer token "+
			"(Authorization: Bearer TOKEN, or ?token=TOKEN); get one with: gavel token --bidder NAME", auth.ErrNoToken)
	}
	claims, err := auth.VerifyToken(g.secret, tok, g.opts.Now())
	if err != nil {
		return identity{}, http.StatusUnauthorized, "invalid token: " + err.Error()
	}
	if bidder != "" && bidder != claims.Bidder {
		return identity{}, http.StatusForbidden, fmt.Sprintf("the token is for %s, not %s: nobody bids under another name", claims.Bidder, bidder)
	}
	return identity{bidder: claims.Bidder, role: claims.Role, token: true, tokenText: tok, expires: claims.Expires}, 0, ""
}

// health is the /healthz answer.
type health struct {
	Status      string   `json:"status"`
	Gateway     string   `json:"gateway"`
	Mode        string   `json:"mode"`
	Epoch       uint64   `json:"epoch"`
	Chain       []string `json:"chain"`
	Tail        string   `json:"tail"`
	Connections int      `json:"connections"`
	Watchers    int      `json:"watchers"`
	Upstreams   int      `json:"upstreams"`
}

// serveHealth answers 200 with the gateway's state while it serves.
func (g *Gateway) serveHealth(w http.ResponseWriter, r *http.Request) {
	m := g.metrics()
	h := health{Status: "ok", Gateway: g.opts.ID, Mode: "open", Epoch: m.Epoch, Chain: m.Chain, Tail: m.Tail,
		Connections: m.Connections, Watchers: m.Watchers, Upstreams: m.Upstreams}
	if !g.open() {
		h.Mode = "auth"
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(h)
}

// ---------------------------------------------------------------------------
// Metrics.

// metrics returns the gateway's figures now.
func (g *Gateway) metrics() metricsPush {
	now := g.opts.Now()
	perSec, lat := g.stats.snapshot(now)
	m := metricsPush{Type: "metrics", Gateway: g.opts.ID, BidsPerS: perSec, LatencyMs: lat, Chain: []string{}, ServerTime: now.UnixMilli()}
	if cfg, _ := g.view.get(); cfg != nil {
		m.Epoch, m.Chain = cfg.Epoch, memberIDs(cfg.Chain)
		m.Head, m.Tail = cfg.Chain[0].GetId(), tailOf(cfg).GetId()
	}
	m.Watchers, m.Upstreams = g.hub.counts()
	g.mu.Lock()
	m.Connections = len(g.conns)
	g.mu.Unlock()
	return m
}

// pingLoop asks every connection for a ping each ping interval: each
// connection when its pingAt comes, so that pings are spread over the
// interval, checked pingSweeps times per interval (at least every
// maxSweepGap). The same sweep closes the connections whose token has
// expired.
func (g *Gateway) pingLoop() {
	t := time.NewTicker(min(max(g.opts.PingInterval/pingSweeps, time.Millisecond), maxSweepGap))
	defer t.Stop()
	var due, expired []*conn
	for {
		select {
		case <-g.ctx.Done():
			return
		case now := <-t.C:
			clock := g.opts.Now()
			g.mu.Lock()
			for c := range g.conns {
				switch {
				case c.expired(clock):
					expired = append(expired, c)
				case !now.Before(c.pingAt):
					c.pingAt = now.Add(g.opts.PingInterval)
					due = append(due, c)
				}
			}
			g.mu.Unlock()
			for _, c := range due {
				c.q.ping()
			}
			for _, c := range expired {
				c.closeExpired()
			}
			clear(due)
			clear(expired)
			due, expired = due[:0], expired[:0]
		}
	}
}

// metricsLoop pushes metrics to the connections that want them, every
// metrics interval.
func (g *Gateway) metricsLoop() {
	t := time.NewTicker(g.opts.MetricsInterval)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-t.C:
			g.pushMetrics(nil)
		}
	}
}

// pushMetrics queues a metrics push for only, or (nil) for every
// connection with metrics on. A pending one is replaced: a slow client
// gets the newest.
func (g *Gateway) pushMetrics(only *conn) {
	var to []*conn
	if only != nil {
		to = append(to, only)
	} else {
		g.mu.Lock()
		for c := range g.conns {
			if c.metricsOn.Load() {
				to = append(to, c)
			}
		}
		g.mu.Unlock()
	}
	if len(to) == 0 {
		return
	}
	frame := encode(g.metrics())
	for _, c := range to {
		c.q.pushLatest("metrics", frame)
	}
}

// sendBufferListener sets the kernel send buffer of every connection it
// accepts (Options.SendBuffer).
type sendBufferListener struct {
	net.Listener
	size int
}

// Accept accepts a connection and sets its send buffer.
func (l sendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		_ = tc.SetWriteBuffer(l.size) // best effort: the kernel clamps it
	}
	return c, err
}
