package gateway

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestGatewayConnectionBounds: past gateway.max_connections a connection
// is refused with 503, past gateway.max_connections_per_bidder with 429,
// and so is a login as a bidder at the bound; a connection that ends
// frees its place.
func TestGatewayConnectionBounds(t *testing.T) {
	c := startStaticChain(t, 1)
	g, addr := startGateway(t, c, nil, func(o *Options) { o.MaxConnections, o.MaxConnectionsPerBidder = 3, 2 })
	a1 := dial(t, addr, "bidder=alice")
	dial(t, addr, "bidder=alice")
	_, body, err := dialErr(addr, "bidder=alice", nil)
	if err == nil || !strings.Contains(body, "bidder alice has 2 connections") || !strings.Contains(body, "max_connections_per_bidder") {
		t.Fatalf("third connection of alice: %v %q", err, body)
	}
	anon := dial(t, addr, "")
	_, body, err = dialErr(addr, "bidder=bob", nil)
	if err == nil || !strings.Contains(body, "holds 3 connections") || !strings.Contains(body, "gateway.max_connections") {
		t.Fatalf("fourth connection: %v %q", err, body)
	}
	if e := anon.call("login alice", "error"); !strings.Contains(e.str("error"), "too many connections for this bidder") {
		t.Fatalf("login as alice, at her bound: %v", e)
	}
	anon.call("login carol", "login")
	a1.close()
	waitFor(t, "alice's first connection forgotten", func() bool {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.conns) == 2 && g.perBidder["alice"] == 1
	})
	dial(t, addr, "bidder=alice")
	rec := scrape(t, addr)
	for _, want := range []string{`gavel_ws_refused_total{reason="bidder_full"} 2`, `gavel_ws_refused_total{reason="gateway_full"} 1`} {
		if !strings.Contains(rec, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestGatewayWatchBound: a connection watches at most gateway.max_watches
// auctions; past it a watch gets an error naming the bound.
func TestGatewayWatchBound(t *testing.T) {
	c := startStaticChain(t, 1)
	_, addr := startGateway(t, c, nil, func(o *Options) { o.MaxWatches = 2 })
	for _, a := range []string{"a1", "a2", "a3"} {
		c.open(a, time.Hour, 0)
	}
	w := dial(t, addr, "bidder=wendy")
	w.call("watch a1", "watching")
	w.call("watch a2", "watching")
	if e := w.call("watch a3", "error"); !strings.Contains(e.str("error"), "at most 2, gateway.max_watches") {
		t.Fatalf("third watch: %v", e)
	}
	w.call("unwatch a1", "unwatched")
	w.call("watch a3", "watching")
	if rec := scrape(t, addr); !strings.Contains(rec, "gavel_ws_watches_refused_total 1") {
		t.Error("gavel_ws_watches_refused_total is not 1")
	}
}

// TestGatewayForgetsClosedAuctions: the gateway follows the auctions a
// connected bidder bid on (for outbid pushes) only until they close; a
// watched auction's upstream stays while it is watched, then goes too.
func TestGatewayForgetsClosedAuctions(t *testing.T) {
	c := startStaticChain(t, 1)
	g, addr := startGateway(t, c, nil, nil)
	b := dial(t, addr, "bidder=bea")
	w := dial(t, addr, "bidder=wendy")
	for i := range 5 {
		a := fmt.Sprintf("s%d", i)
		c.open(a, 300*time.Millisecond, 0)
		b.call("bid "+a+" 10", "bid")
	}
	w.call("watch s0", "watching")
	w.wait("s0 closed", push("closed", "s0"))
	waitFor(t, "only the watched auction's upstream left", func() bool {
		_, ups := g.hub.counts()
		g.hub.mu.Lock()
		defer g.hub.mu.Unlock()
		return ups == 1 && len(g.hub.bidders["bea"].auctions) == 0
	})
	w.call("unwatch s0", "unwatched")
	waitFor(t, "no upstream left", func() bool { _, ups := g.hub.counts(); return ups == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String()
		}
	}
}
