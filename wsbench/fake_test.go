package wsbench

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// fakeGateway is a stand-in for a gateway, enough for the bench: watch,
// JSON bids with ids (each one succeeds, with the next seq), highest
// pushes to every watcher of the auction, and /metrics whose memory grows
// by 1000 bytes per connection. Faults can be injected into the pushes.
type fakeGateway struct {
	t   testing.TB
	srv *httptest.Server
	up  websocket.Upgrader

	// auth makes the fake want "Authorization: Bearer token-of-BIDDER".
	auth bool
	// drop, when set, says whether the push of seq to the watcher with
	// index w (in the order watchers watched) is left out; dup whether it
	// is sent twice.
	drop, dup func(w int, seq uint64) bool

	mu       sync.Mutex // guards the fields below
	seq      uint64
	watchers map[string][]*fakeConn // by auction
	nwatch   int
	conns    int
	opened   []string
}

// fakeConn is one connection to the fake gateway.
type fakeConn struct {
	mu    sync.Mutex // one writer at a time
	ws    *websocket.Conn
	index int // watcher index, -1 for a bidder
}

func (c *fakeConn) send(v any) {
	b, _ := json.Marshal(v)
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.WriteMessage(websocket.TextMessage, b)
}

func newFakeGateway(t testing.TB) *fakeGateway {
	g := &fakeGateway{t: t, watchers: map[string][]*fakeConn{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", g.serveWS)
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		g.mu.Lock()
		n := float64(g.conns)
		g.mu.Unlock()
		fmt.Fprintf(w, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"+
			"process_resident_memory_bytes %g\ngo_memstats_heap_inuse_bytes %g\ngo_memstats_heap_alloc_bytes %g\n"+
			"go_memstats_stack_inuse_bytes %g\ngo_goroutines %g\n", 1e7+1000*n, 4e6+500*n, 3e6+500*n, 1e5+200*n, 10+n)
	})
	g.srv = httptest.NewUnstartedServer(mux)
	t.Cleanup(g.srv.Close)
	return g
}

// start serves g over http, or https with the test server's certificate
// when tlsOn is set, until the test ends, and returns the Target to reach
// it.
func (g *fakeGateway) start(tlsOn bool) Target {
	var t Target
	if tlsOn {
		g.srv.StartTLS()
		pool := x509.NewCertPool()
		pool.AddCert(g.srv.Certificate())
		t.TLS = &tls.Config{RootCAs: pool}
	} else {
		g.srv.Start()
	}
	t.Addr = g.addr()
	if g.auth {
		t.Token = func(bidder string) (string, error) { return "token-of-" + bidder, nil }
	}
	return t
}

// addr is the fake's host:port.
func (g *fakeGateway) addr() string {
	return strings.TrimPrefix(strings.TrimPrefix(g.srv.URL, "http://"), "https://")
}

func (g *fakeGateway) serveWS(w http.ResponseWriter, r *http.Request) {
	if g.auth && r.Header.Get("Authorization") != "Bearer token-of-"+r.URL.Query().Get("bidder") {
		http.Error(w, "bad token", http.StatusUnauthorized)
		return
	}
	ws, err := g.up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &fakeConn{ws: ws, index: -1}
	g.mu.Lock()
	g.conns++
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.conns--
		g.mu.Unlock()
		ws.Close()
	}()
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				c.mu.Lock()
				_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
				c.mu.Unlock()
			}
			return
		}
		line := string(msg)
		if a, ok := strings.CutPrefix(line, "watch "); ok {
			g.mu.Lock()
			c.index = g.nwatch
			g.nwatch++
			g.watchers[a] = append(g.watchers[a], c)
			g.mu.Unlock()
			c.send(map[string]any{"type": "watching", "auction": a, "from": 0})
			continue
		}
		var cmd struct {
			Op      string `json:"op"`
			Auction string `json:"auction"`
			Amount  int64  `json:"amount"`
			ID      uint64 `json:"id"`
		}
		if err := json.Unmarshal(msg, &cmd); err != nil || cmd.Op != "bid" {
			c.send(map[string]any{"type": "error", "error": "not understood", "line": line})
			continue
		}
		g.bid(cmd.Auction, cmd.Amount, func(seq uint64) {
			c.send(map[string]any{"type": "bid", "auction": cmd.Auction, "amount": cmd.Amount, "outcome": "success",
				"reason": "", "version": seq, "id": cmd.ID})
		})
	}
}

// bid sequences a successful bid, calls reply with its seq and pushes it
// to the auction's watchers (the push after the reply).
func (g *fakeGateway) bid(auction string, amount int64, reply func(seq uint64)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	seq := g.seq
	reply(seq)
	push := map[string]any{"type": "highest", "auction": auction, "amount": amount, "bidder": "b", "closes_at": 0,
		"seq": seq, "server_time": 0}
	for _, w := range g.watchers[auction] {
		if g.drop != nil && g.drop(w.index, seq) {
			continue
		}
		w.send(push)
		if g.dup != nil && g.dup(w.index, seq) {
			w.send(push)
		}
	}
}

// lastSeq returns the last seq the fake handed out.
func (g *fakeGateway) lastSeq() uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seq
}

// fakeChain is the chain of a fake gateway: opens are recorded, bids are
// the gateway's.
type fakeChain struct{ g *fakeGateway }

func (c fakeChain) Open(_ context.Context, auction string, _ time.Duration) error {
	c.g.mu.Lock()
	defer c.g.mu.Unlock()
	c.g.opened = append(c.g.opened, auction)
	return nil
}

func (c fakeChain) Bid(_ context.Context, auction, _ string, amount int64) (BidResult, error) {
	var res BidResult
	c.g.bid(auction, amount, func(seq uint64) { res = BidResult{Outcome: "success", Version: seq} })
	return res, nil
}
