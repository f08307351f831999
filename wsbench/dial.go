package wsbench

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// Target is a gateway and how to reach it.
type Target struct {
	// Addr is the gateway's host:port: ws://Addr/ws, http://Addr/metrics.
	Addr string
	// TLS, when set, makes the bench dial wss:// and https:// with it (the
	// cluster's CA, and the client certificate); nil dials ws:// and
	// http://.
	TLS *tls.Config
	// Token, when set (a gateway in auth mode), returns the bearer token a
	// connection presents: bidder's for a bidder, and for bidder "" one
	// for the watchers, who place no bid.
	Token func(bidder string) (string, error)
}

// scheme returns the WebSocket and HTTP schemes of t.
func (t Target) scheme() (ws, web string) {
	if t.TLS != nil {
		return "wss", "https"
	}
	return "ws", "http"
}

// wsURL returns the /ws URL for a connection of bidder ("" for none).
func (t Target) wsURL(bidder string) string {
	ws, _ := t.scheme()
	u := ws + "://" + t.Addr + "/ws"
	if bidder != "" {
		u += "?bidder=" + url.QueryEscape(bidder)
	}
	return u
}

// MetricsURL returns the URL of the gateway's Prometheus metrics.
func (t Target) MetricsURL() string {
	_, web := t.scheme()
	return web + "://" + t.Addr + "/metrics"
}

// Per-connection buffer sizes. A push is about 150 bytes; the read buffer
// holds a few, and messages larger than it are read in pieces. Writes
// borrow a buffer from a shared pool for the time of one write: a watcher
// writes one command in its life.
const (
	readBufferSize  = 512
	writeBufferSize = 512
)

// sourceAddrs is how many loopback source addresses (127.0.0.2 and up)
// connections to a gateway on loopback are spread over: each has its own
// range of ephemeral ports (about 28,000 with Linux's default), so tens
// of thousands of connections never run short of them.
const sourceAddrs = 16

// dialer opens WebSocket connections to one target. It is safe for
// concurrent use.
type dialer struct {
	t       Target
	ws      websocket.Dialer
	timeout time.Duration
	sources []net.IP     // local addresses to spread over; nil: the system's choice
	next    atomic.Int64 // round-robin position in sources
}

// newDialer returns a dialer of t whose dials and handshakes take at most
// timeout.
func newDialer(t Target, timeout time.Duration) *dialer {
	d := &dialer{t: t, timeout: timeout, sources: loopbackSources(t.Addr)}
	d.ws = websocket.Dialer{
		HandshakeTimeout: timeout,
		ReadBufferSize:   readBufferSize,
		WriteBufferSize:  writeBufferSize,
		WriteBufferPool:  &sync.Pool{},
		TLSClientConfig:  t.TLS,
		NetDialContext:   d.netDial,
	}
	return d
}

// loopbackSources returns the source addresses to spread connections to
// addr over: 127.0.0.2 ... on Linux when addr is an IPv4 loopback
// address (Linux routes all of 127.0.0.0/8 to lo), nil otherwise.
func loopbackSources(addr string) []net.IP {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || runtime.GOOS != "linux" {
		return nil
	}
	ip := net.ParseIP(host).To4()
	if ip == nil || !ip.IsLoopback() {
		return nil
	}
	ips := make([]net.IP, sourceAddrs)
	for i := range ips {
		ips[i] = net.IPv4(127, 0, 0, byte(2+i))
	}
	return ips
}

// netDial opens the TCP connection of one WebSocket, from the next source
// address when there are some.
func (d *dialer) netDial(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := net.Dialer{Timeout: d.timeout}
	if len(d.sources) > 0 {
		ip := d.sources[(d.next.Add(1)-1)%int64(len(d.sources))]
		nd.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return nd.DialContext(ctx, network, addr)
}

// dial opens a connection as bidder ("" for a watcher, which places no
// bid), within the dialer's timeout.
func (d *dialer) dial(ctx context.Context, bidder string) (*websocket.Conn, error) {
	hdr := http.Header{}
	if d.t.Token != nil {
		tok, err := d.t.Token(bidder)
		if err != nil {
			return nil, fmt.Errorf("token for %q: %w", bidder, err)
		}
		hdr.Set("Authorization", "Bearer "+tok)
		// A gateway with tokens wants to know the page a connection
		// comes from: its own.
		_, web := d.t.scheme()
		hdr.Set("Origin", web+"://"+d.t.Addr)
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	u := d.t.wsURL(bidder)
	ws, resp, err := d.ws.DialContext(ctx, u, hdr)
	if err != nil {
		if resp != nil && resp.Body != nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
			resp.Body.Close()
			return nil, fmt.Errorf("dial %s: %v (HTTP %s: %s)", u, err, resp.Status, strings.TrimSpace(string(body)))
		}
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	return ws, nil
}

// closeConns says goodbye (close frame 1000) on every connection, from a
// few goroutines, each write bounded by a second.
func closeConns(conns []*websocket.Conn) {
	msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
	parallel(len(conns), 8, func(i int) bool {
		if c := conns[i]; c != nil {
			_ = c.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second))
		}
		return true
	})
}

// parallel calls f(0) ... f(n-1) from at most workers goroutines and
// returns when every call has returned; once some f returns false no
// further call starts.
func parallel(n, workers int, f func(i int) bool) {
	var next atomic.Int64
	var stop atomic.Bool
	var wg sync.WaitGroup
	for range min(max(workers, 1), n) {
		wg.Go(func() {
			for !stop.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if !f(i) {
					stop.Store(true)
				}
			}
		})
	}
	wg.Wait()
}
