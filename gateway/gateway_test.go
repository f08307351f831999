package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/chain"
	"github.com/gavel-auction/gavel/client"
)

// The commands of docs/gateway.md against a real chain: login, open, bid,
// result, auctions, JSON ids, and every kind of bad line answered with an
// error while the connection stays open.
func TestGatewayCommands(t *testing.T) {
	c := startStaticChain(t, 3)
	_, addr := startGateway(t, c, nil, nil)
	alice := dial(t, addr, "bidder=alice")
	bob := dial(t, addr, "bidder=bob")

	help := alice.call("help", "help")
	if cmds, _ := help["commands"].([]any); len(cmds) != len(helpOrder) {
		t.Errorf("help = %v", help)
	}
	open := alice.call("open a1 10m a brass  lamp", "open")
	if open.str("outcome") != "success" || open.num("closes_at") < time.Now().Add(9*time.Minute).UnixMilli() {
		t.Errorf("open = %v", open)
	}
	if r := alice.call("open a1 10m", "open"); r.str("outcome") != "exception" || r.str("reason") != "auction_exists" {
		t.Errorf("second open = %v", r)
	}
	b := alice.call("bid a1 100", "bid")
	if b.str("outcome") != "success" || b.str("reason") != "" || b.num("amount") != 100 || b.num("version") <= 0 {
		t.Errorf("bid = %v", b)
	}
	if r := bob.call("bid a1 100", "bid"); r.str("outcome") != "fail" || r.str("reason") != "too_low" {
		t.Errorf("bob's equal bid = %v", r)
	}
	res := bob.call("result a1", "result")
	if res.str("state") != "open" || res.num("highest") != 100 || res.str("bidder") != "alice" || res.str("winner") != "" ||
		res.str("item") != "a brass  lamp" || res.num("version") < b.num("version") || res.num("server_time") <= 0 {
		t.Errorf("result = %v", res)
	}
	list := bob.call("auctions", "auctions")
	if as, _ := list["auctions"].([]any); len(as) != 1 || as[0].(map[string]any)["auction"] != "a1" {
		t.Errorf("auctions = %v", list)
	}

	// JSON commands echo their id, a string or a number.
	j := bob.call(`{"op":"bid","auction":"a1","amount":150,"id":"7"}`, "bid")
	if j.str("id") != "7" || j.str("outcome") != "success" || j.str("bidder") != "bob" {
		t.Errorf("JSON bid = %v", j)
	}
	if r := bob.call(`{"op":"result","auction":"a1","id":8}`, "result"); r.num("id") != 8 || r.num("highest") != 150 {
		t.Errorf("JSON result = %v", r)
	}

	// Exceptions the chain or the gateway decides.
	if r := bob.call("bid a1 0", "bid"); r.str("outcome") != "exception" || r.str("reason") != "invalid_amount" {
		t.Errorf("bid 0 = %v", r)
	}
	if r := bob.call("bid a1 99999999999999999999", "bid"); r.str("reason") != "invalid_amount" {
		t.Errorf("overflowing bid = %v", r)
	}
	if r := bob.call("bid nope 5", "bid"); r.str("outcome") != "exception" || r.str("reason") != "unknown_auction" {
		t.Errorf("bid on unknown auction = %v", r)
	}
	if r := bob.call("result nope", "error"); !strings.Contains(r.str("error"), `unknown auction "nope"`) || r.str("line") != "result nope" {
		t.Errorf("result of unknown auction = %v", r)
	}
	if r := bob.call(`{"op":"bid","auction":"a1","amount":200,"bidder":"alice","id":"x"}`, "error"); !strings.Contains(r.str("error"), "you are bob") || r.str("id") != "x" {
		t.Errorf("bid as someone else = %v", r)
	}

	// Bad lines: an error each, with the line, and the connection stays.
	for _, line := range []string{"bid a1 abc", "fly away", `{"op":"bid","id":"9"}`, `{"op":`, "watch a1 from -3"} {
		r := bob.call(line, "error")
		if r.str("line") != line || r.str("error") == "" {
			t.Errorf("%q answered %v", line, r)
		}
	}
	if err := bob.ws.WriteMessage(websocket.BinaryMessage, []byte("bid a1 5")); err != nil {
		t.Fatal(err)
	}
	if r := bob.wait("binary frame error", isType("error")); !strings.Contains(r.str("error"), "binary frames") {
		t.Errorf("binary frame answered %v", r)
	}
	// Several lines in one frame: answered in order.
	bob.send("result a1\r\n\n  \nhelp\n")
	first := bob.wait("first of two replies", func(m msg) bool { return m.str("type") == "result" || m.str("type") == "help" })
	if first.str("type") != "result" {
		t.Errorf("two lines answered out of order: %v first", first)
	}
	bob.wait("help reply", isType("help"))

	// No bidder yet: bid refused until login; login renames.
	anon := dial(t, addr, "")
	if r := anon.call("bid a1 300", "error"); !strings.Contains(r.str("error"), "login NAME") {
		t.Errorf("anonymous bid = %v", r)
	}
	if r := anon.call("login carol", "login"); r.str("bidder") != "carol" {
		t.Errorf("login = %v", r)
	}
	if r := anon.call("bid a1 300", "bid"); r.str("outcome") != "success" || r.str("bidder") != "carol" {
		t.Errorf("bid after login = %v", r)
	}

	// A frame past the read limit closes the connection (1009).
	big := dial(t, addr, "bidder=big")
	big.send("help " + strings.Repeat("x", DefaultReadLimit))
	_, err := big.waitErr(5*time.Second, func(msg) bool { return false })
	if !websocket.IsCloseError(errors.Unwrap(err), websocket.CloseMessageTooBig) {
		t.Errorf("oversized frame: %v, want close 1009", err)
	}
	// The others were not affected.
	bob.call("help", "help")
	checkSeqs(t, alice)
	checkSeqs(t, bob)
}

// open takes gavel open's options, in the text and the JSON form: the
// chain opens the auction with them, and bids obey them.
func TestGatewayOpenOptions(t *testing.T) {
	c := startStaticChain(t, 1)
	_, addr := startGateway(t, c, nil, nil)
	w := dial(t, addr, "bidder=alice")
	o := w.call("open a1 10m --min-increment 5 --starting-price=100 --soft-close 30s a brass lamp", "open")
	if o.str("outcome") != "success" || o.num("min_increment") != 5 || o.num("starting_price") != 100 || o.num("soft_close_ms") != 30_000 {
		t.Fatalf("open with options = %v", o)
	}
	for _, tc := range []struct {
		amount  int64
		outcome string
	}{{99, "fail"}, {100, "success"}, {104, "fail"}, {105, "success"}} {
		if r := w.call(fmt.Sprintf("bid a1 %d", tc.amount), "bid"); r.str("outcome") != tc.outcome {
			t.Errorf("bid %d = %v, want %s", tc.amount, r, tc.outcome)
		}
	}
	res := w.call("result a1", "result")
	if res.num("min_increment") != 5 || res.num("starting_price") != 100 || res.num("soft_close_ms") != 30_000 || res.str("item") != "a brass lamp" {
		t.Errorf("result = %v", res)
	}
	j := w.call(`{"op":"open","auction":"a2","duration":"1h","min_increment":0,"starting_price":7,"soft_close":"1m","id":"o"}`, "open")
	// The chain raises an increment of 0 to 1: a bid must beat the highest.
	if j.str("outcome") != "success" || j.num("min_increment") != 1 || j.num("starting_price") != 7 || j.num("soft_close_ms") != 60_000 {
		t.Errorf("JSON open with options = %v", j)
	}
	list := w.call("auctions", "auctions")
	as, _ := list["auctions"].([]any)
	if len(as) != 2 || as[1].(map[string]any)["starting_price"] != json.Number("7") {
		t.Errorf("auctions = %v", list)
	}
	// Without options: the CLI's defaults.
	if d := w.call("open a3 10m", "open"); d.num("min_increment") != 1 || d.num("starting_price") != 0 || d.num("soft_close_ms") != 0 {
		t.Errorf("open without options = %v", d)
	}
}

// A JSON bid with an id is exactly-once across reconnections: the same
// command sent again — on a new connection, to this or another gateway,
// whether or not the first reply arrived — gets the first outcome and
// version, and the auction counts the bid once. The id only tells apart
// the bids of one bidder that are otherwise the same: another bidder's
// same id, or the same id for another auction or amount, is another bid.
func TestGatewayBidResentAfterReconnect(t *testing.T) {
	c := startStaticChain(t, 3)
	_, addr := startGateway(t, c, nil, nil)
	_, addr2 := startGateway(t, c, nil, func(o *Options) { o.ID = "g2" })
	c.open("a1", 10*time.Minute, 0)
	bids := func() uint64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r, err := c.client.Result(ctx, "a1")
		if err != nil {
			t.Fatal(err)
		}
		return r.GetInfo().GetBids()
	}

	// The reply arrives, the connection drops, the command is sent again.
	const first = `{"op":"bid","auction":"a1","amount":100,"id":"b-1"}`
	alice := dial(t, addr, "bidder=alice")
	r1 := alice.call(first, "bid")
	if r1.str("outcome") != "success" || r1.num("version") == 0 {
		t.Fatalf("first bid = %v", r1)
	}
	alice.close()
	again := dial(t, addr, "bidder=alice")
	r2 := again.call(first, "bid")
	if r2.str("outcome") != "success" || r2.num("version") != r1.num("version") || r2.str("id") != "b-1" {
		t.Errorf("resent bid = %v, want the first outcome and version %d", r2, r1.num("version"))
	}
	if n := bids(); n != 1 {
		t.Errorf("a1 counts %d bids after one bid sent twice, want 1", n)
	}

	// The connection drops before the reply; the command goes again to
	// another gateway.
	const second = `{"op":"bid","auction":"a1","amount":150,"id":7}`
	gone := dial(t, addr, "bidder=alice")
	gone.send(second)
	gone.close()
	other := dial(t, addr2, "bidder=alice")
	r3 := other.call(second, "bid")
	if r3.str("outcome") != "success" || r3.num("version") <= r1.num("version") || r3.num("id") != 7 {
		t.Errorf("bid resent after a lost reply = %v", r3)
	}
	if r := other.call(second, "bid"); r.num("version") != r3.num("version") {
		t.Errorf("third send = %v, want version %d", r, r3.num("version"))
	}
	if n := bids(); n != 2 {
		t.Errorf("a1 counts %d bids after two bids, want 2", n)
	}

	// The same id for another amount, or on another auction, is another
	// bid (a client may number its commands afresh on each connection); a
	// string "7" is not the number 7; another bidder's "b-1" is another
	// bid.
	if r := other.call(`{"op":"bid","auction":"a1","amount":180,"id":"b-1"}`, "bid"); r.str("outcome") != "success" {
		t.Errorf("b-1 for another amount = %v, want a new bid", r)
	}
	c.open("a2", 10*time.Minute, 0)
	if r := other.call(`{"op":"bid","auction":"a2","amount":100,"id":"b-1"}`, "bid"); r.str("outcome") != "success" {
		t.Errorf("b-1 on a2 = %v, want a new bid", r)
	}
	if r := other.call(`{"op":"bid","auction":"a1","amount":200,"id":"7"}`, "bid"); r.str("outcome") != "success" {
		t.Errorf(`bid with id "7" = %v, want a new bid`, r)
	}
	bob := dial(t, addr, "bidder=bob")
	if r := bob.call(`{"op":"bid","auction":"a1","amount":300,"id":"b-1"}`, "bid"); r.str("outcome") != "success" ||
		r.str("bidder") != "bob" {
		t.Errorf("bob's b-1 = %v, want a new bid", r)
	}
	// Text bids carry no id: each is a new bid.
	bob.call("bid a1 400", "bid")
	if r := bob.call("bid a1 400", "bid"); r.str("outcome") != "fail" || r.str("reason") != "too_low" {
		t.Errorf("second text bid of 400 = %v, want a new bid, too low", r)
	}
	if n := bids(); n != 7 {
		t.Errorf("a1 counts %d bids, want 7", n)
	}
}

// Watches: the current state first, then every highest bid, the outbid
// push to every connection of the bidder who lost the lead, extended and
// closed; resuming from a seq; unwatch; an unknown auction.
func TestGatewayWatch(t *testing.T) {
	c := startStaticChain(t, 3)
	_, addr := startGateway(t, c, nil, nil)
	c.open("a1", 10*time.Minute, 0)
	alice1 := dial(t, addr, "bidder=alice")
	alice2 := dial(t, addr, "bidder=alice") // another tab of alice: bids nothing
	bob := dial(t, addr, "bidder=bob")
	watcher := dial(t, addr, "bidder=wendy")

	b := alice1.call("bid a1 10", "bid")
	watcher.call("watch a1", "watching")
	h := watcher.wait("current highest", push("highest", "a1"))
	if h.num("amount") != 10 || h.str("bidder") != "alice" || h.num("seq") != b.num("version") {
		t.Errorf("first push = %v (bid %v)", h, b)
	}
	if r := bob.call("bid a1 20", "bid"); r.str("outcome") != "success" {
		t.Fatalf("bob's bid = %v", r)
	}
	h2 := watcher.wait("bob's highest", push("highest", "a1"))
	if h2.num("amount") != 20 || h2.str("bidder") != "bob" || h2.num("seq") <= h.num("seq") {
		t.Errorf("second push = %v", h2)
	}
	for _, w := range []*wsc{alice1, alice2} {
		o := w.wait("outbid", push("outbid", "a1"))
		if o.num("amount") != 20 || o.str("bidder") != "bob" || o.num("your_bid") != 10 || o.num("seq") != h2.num("seq") {
			t.Errorf("%s: outbid = %v", w.name, o)
		}
	}
	// A bid through another path (the chain client) is pushed too, and
	// bob, who bid through the gateway, hears he was outbid.
	r := c.bid("a1", "zed", 30)
	h3 := watcher.wait("zed's highest", push("highest", "a1"))
	if h3.num("amount") != 30 || uint64(h3.num("seq")) != r.Version {
		t.Errorf("third push = %v", h3)
	}
	if o := bob.wait("bob outbid", push("outbid", "a1")); o.num("your_bid") != 20 || o.str("bidder") != "zed" {
		t.Errorf("bob's outbid = %v", o)
	}
	// Alice, outbid already, hears nothing more until she leads again.
	if _, err := alice1.waitErr(200*time.Millisecond, push("outbid", "a1")); err == nil {
		t.Error("alice outbid twice for one lead")
	}

	// Resuming: from the last seq seen, nothing is repeated; from 0, the
	// current state comes first.
	late := dial(t, addr, "")
	late.call(fmt.Sprintf("watch a1 from %d", h3.num("seq")), "watching")
	fresh := dial(t, addr, "")
	fresh.call(`{"op":"watch","auction":"a1","id":"w"}`, "watching")
	if f := fresh.wait("state", push("highest", "a1")); f.num("amount") != 30 {
		t.Errorf("fresh watcher's first push = %v", f)
	}
	c.bid("a1", "zed", 31)
	for _, w := range []*wsc{watcher, late, fresh} {
		if m := w.wait("highest 31", push("highest", "a1")); m.num("amount") != 31 {
			t.Errorf("%s: got %v, want the highest of 31", w.name, m)
		}
	}

	// Soft close: a bid in the window extends the close and says so.
	c.open("a2", 1500*time.Millisecond, time.Second)
	watcher.call("watch a2", "watching")
	time.Sleep(800 * time.Millisecond)
	bob.call("bid a2 5", "bid")
	hx := watcher.wait("highest on a2", push("highest", "a2"))
	ext := watcher.wait("extended", push("extended", "a2"))
	if ext.num("seq") != hx.num("seq") || ext.num("closes_at") != hx.num("closes_at") {
		t.Errorf("extended %v does not match highest %v", ext, hx)
	}
	cl := watcher.wait("closed a2", push("closed", "a2"))
	if cl.str("winner") != "bob" || cl.num("amount") != 5 || cl.num("seq") <= hx.num("seq") {
		t.Errorf("closed = %v", cl)
	}
	// A watch of a closed auction gets its last highest and the close.
	post := dial(t, addr, "")
	post.call("watch a2", "watching")
	if m := post.wait("state of closed a2", push("highest", "a2")); m.num("amount") != 5 {
		t.Errorf("closed auction's state = %v", m)
	}
	if m := post.wait("closed of closed a2", push("closed", "a2")); m.str("winner") != "bob" {
		t.Errorf("closed auction's close = %v", m)
	}

	// Unwatch: no more pushes.
	watcher.call("unwatch a1", "unwatched")
	c.bid("a1", "zed", 40)
	late.wait("highest 40", push("highest", "a1"))
	if m, err := watcher.waitErr(200*time.Millisecond, push("highest", "a1")); err == nil {
		t.Errorf("push after unwatch: %v", m)
	}
	if r := watcher.call("unwatch a1", "error"); !strings.Contains(r.str("error"), `not watching "a1"`) {
		t.Errorf("second unwatch = %v", r)
	}
	// An auction that does not exist: watching, then an error about it.
	watcher.call(`{"op":"watch","auction":"nope","id":5}`, "watching")
	if e := watcher.wait("error about nope", isType("error")); e.str("auction") != "nope" || e.num("id") != 5 ||
		!strings.Contains(e.str("error"), "unknown auction") {
		t.Errorf("watch of unknown auction: %v", e)
	}
	for _, w := range []*wsc{alice1, alice2, bob, watcher, late, fresh, post} {
		checkSeqs(t, w)
	}
}

// metrics on: a reply, then a push every interval with the chain, the
// counts and the bids this gateway relayed.
func TestGatewayMetrics(t *testing.T) {
	c := startStaticChain(t, 3)
	g, addr := startGateway(t, c, nil, nil)
	c.open("a1", 10*time.Minute, 0)
	w := dial(t, addr, "bidder=alice")
	w.call("watch a1", "watching")
	if r := w.call("metrics on", "metrics"); r["on"] != true {
		t.Fatalf("metrics on = %v", r)
	}
	for i := range 20 {
		w.call(fmt.Sprintf("bid a1 %d", 10+i), "bid")
	}
	var m msg
	deadline := time.Now().Add(5 * time.Second)
	for {
		m = w.wait("metrics push", func(m msg) bool { return m.str("type") == "metrics" && m.has("bids_per_s") })
		if v, _ := m["bids_per_s"].(interface{ Float64() (float64, error) }); v != nil {
			if f, _ := v.Float64(); f > 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics push counts the bids: last %v", m)
		}
	}
	lat, _ := m["latency_ms"].(map[string]any)
	if m.num("epoch") != 1 || m.str("head") != "n1" || m.str("tail") != "n3" || m.num("connections") != 1 ||
		m.num("watchers") != 1 || lat["p50"] == nil || lat["p99"] == nil || m.num("server_time") <= 0 {
		t.Errorf("metrics push = %v", m)
	}
	w.call(`{"op":"metrics","on":false}`, "metrics")
	time.Sleep(250 * time.Millisecond) // pushes queued before the reply may still come
	n := len(w.all())
	time.Sleep(300 * time.Millisecond)
	if len(w.all()) != n {
		t.Errorf("metrics pushes after metrics off")
	}
	// /healthz tells the same.
	resp, err := http.Get("http://" + addr + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	body.ReadFrom(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(body.String(), `"gateway":"g1"`) || !strings.Contains(body.String(), `"tail":"n3"`) {
		t.Errorf("/healthz = %d %s", resp.StatusCode, body.String())
	}
	_ = g
}

// Auth mode: tokens at the upgrade (header or ?token=), refused clearly
// when missing, forged or expired; roles; no login; the origin check,
// which wants an Origin.
func TestGatewayAuth(t *testing.T) {
	c := startStaticChain(t, 3)
	secret := "0123456789abcdef-auth"
	_, addr := startGateway(t, c, nil, func(o *Options) {
		o.Secret = secret
		o.AllowedOrigins = []string{"https://auctions.example.com"}
	})
	now := time.Now()
	alice, _ := auth.NewToken([]byte(secret), "alice", auth.RoleBidder, time.Hour, now)
	admin, _ := auth.NewToken([]byte(secret), "root", auth.RoleAdmin, time.Hour, now)
	expired, _ := auth.NewToken([]byte(secret), "alice", auth.RoleBidder, time.Minute, now.Add(-time.Hour))
	forged, _ := auth.NewToken([]byte("another-secret-123456"), "alice", auth.RoleAdmin, time.Hour, now)

	for _, tc := range []struct {
		name, query string
		hdr         http.Header
		want        string
	}{
		{"no token", "", nil, "HTTP 401: missing token"},
		{"no token but a name", "bidder=alice", nil, "HTTP 401: missing token"},
		{"forged", "token=" + forged, nil, "HTTP 401: invalid token: token signature does not match"},
		{"expired", "", http.Header{"Authorization": {"Bearer " + expired}}, "HTTP 401: invalid token: token expired at"},
		{"garbage", "", http.Header{"Authorization": {"Bearer xyz"}}, "HTTP 401: invalid token: malformed token"},
		{"basic auth", "", http.Header{"Authorization": {"Basic YTpi"}}, `HTTP 401: Authorization: want "Bearer TOKEN"`},
		{"someone else", "bidder=bob&token=" + alice, nil, "HTTP 403: the token is for alice, not bob"},
		{"foreign page", "token=" + alice, http.Header{"Origin": {"https://evil.example.com"}}, "HTTP 403: origin https://evil.example.com may not connect"},
		{"no origin", "token=" + alice, http.Header{"Origin": nil}, "HTTP 403: no Origin header: this gateway takes bidders with tokens"},
	} {
		hdr := http.Header{"Origin": {"http://" + addr}}
		for k, v := range tc.hdr {
			hdr[k] = v
		}
		_, body, err := dialErr(addr, tc.query, hdr)
		if err == nil || !strings.HasPrefix(body, tc.want) {
			t.Errorf("%s: dial = %v %q, want %q", tc.name, err, body, tc.want)
		}
	}
	// Allowed origins: the gateway's own host, and the configured one.
	for _, origin := range []string{"http://" + addr, "https://auctions.example.com"} {
		w, body, err := dialErr(addr, "token="+alice, http.Header{"Origin": {origin}})
		if err != nil {
			t.Errorf("origin %s refused: %v %s", origin, err, body)
			continue
		}
		w.close()
	}

	a, body, err := dialErr(addr, "", http.Header{"Authorization": {"Bearer " + alice}, "Origin": {"http://" + addr}})
	if err != nil {
		t.Fatalf("alice: %v %s", err, body)
	}
	a.t = t
	defer a.close()
	if r := a.call("login bob", "error"); !strings.Contains(r.str("error"), "login is not available") {
		t.Errorf("login in auth mode = %v", r)
	}
	if r := a.call("open a1 10m", "error"); !strings.Contains(r.str("error"), "only admins may open") {
		t.Errorf("open as bidder = %v", r)
	}
	if h := a.call("help", "help"); strings.Contains(fmt.Sprint(h["commands"]), "login") {
		t.Errorf("auth-mode help offers login: %v", h)
	}
	root, body, err := dialErr(addr, "token="+admin, http.Header{"Origin": {"http://" + addr}})
	if err != nil {
		t.Fatalf("root: %v %s", err, body)
	}
	root.t = t
	defer root.close()
	if r := root.call("open a1 10m lamp", "open"); r.str("outcome") != "success" {
		t.Errorf("open as admin = %v", r)
	}
	if r := a.call("bid a1 10", "bid"); r.str("outcome") != "success" || r.str("bidder") != "alice" {
		t.Errorf("alice's bid = %v", r)
	}
}

// Without TLS, nodes with auth.secret cannot tell the gateway from a
// bidder: the gateway passes each connection's token with its bids and
// opens, and the nodes check it, also on bids forwarded from a node that
// is not the head (unary and streamed). A bid at a node without its
// bidder's token is refused there.
func TestGatewayTokensReachTheNodes(t *testing.T) {
	secret := "0123456789abcdef-auth"
	c := startStaticChainWith(t, 3, func(o *chain.NodeOptions) { o.Secret = secret })
	_, addr := startGateway(t, c, nil, func(o *Options) { o.Secret = secret })
	now := time.Now()
	alice, _ := auth.NewToken([]byte(secret), "alice", auth.RoleBidder, time.Hour, now)
	admin, _ := auth.NewToken([]byte(secret), "root", auth.RoleAdmin, time.Hour, now)
	hdr := http.Header{"Origin": {"http://" + addr}}
	root, body, err := dialErr(addr, "token="+admin, hdr)
	if err != nil {
		t.Fatalf("root: %v %s", err, body)
	}
	root.t = t
	defer root.close()
	if r := root.call("open a1 10m lamp", "open"); r.str("outcome") != "success" {
		t.Fatalf("open through the gateway with an admin token = %v", r)
	}
	a, body, err := dialErr(addr, "token="+alice, hdr)
	if err != nil {
		t.Fatalf("alice: %v %s", err, body)
	}
	a.t = t
	defer a.close()
	if r := a.call("bid a1 10", "bid"); r.str("outcome") != "success" {
		t.Fatalf("alice's bid through the gateway = %v", r)
	}

	// Straight at n2, the middle node: it forwards to the head with the
	// token.
	cl, err := client.New([]string{c.addrs["n2"]}, client.Options{Pinned: true})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := cl.Bid(auth.WithToken(ctx, alice), "a1", "alice", 20, ""); err != nil || r.Outcome != api.Outcome_SUCCESS {
		t.Errorf("alice's bid at n2 with her token: %v %v", r, err)
	}
	s := cl.NewBidSession()
	defer s.Close()
	if r, err := s.Bid(auth.WithToken(ctx, alice), "a1", "alice", 30, ""); err != nil || r.Outcome != api.Outcome_SUCCESS {
		t.Errorf("alice's streamed bid at n2 with her token: %v %v", r, err)
	}
	if _, err := cl.Bid(ctx, "a1", "alice", 40, ""); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a bid for alice at n2 without a token: %v, want Unauthenticated", err)
	}
	if r, err := s.Bid(ctx, "a1", "alice", 50, ""); err != nil || r.Reason != api.Reason_NOT_AUTHORIZED {
		t.Errorf("a streamed bid for alice without a token: %v %v, want NOT_AUTHORIZED", r, err)
	}
}

// With gateway.allow_empty_origin, a program without an Origin connects in
// auth mode; in open mode it always may.
func TestGatewayEmptyOrigin(t *testing.T) {
	c := startStaticChain(t, 1)
	secret := "0123456789abcdef-auth"
	_, addr := startGateway(t, c, nil, func(o *Options) { o.Secret, o.AllowEmptyOrigin = secret, true })
	alice, _ := auth.NewToken([]byte(secret), "alice", auth.RoleBidder, time.Hour, time.Now())
	w, body, err := dialErr(addr, "token="+alice, nil)
	if err != nil {
		t.Fatalf("no Origin with allow_empty_origin: %v %s", err, body)
	}
	w.close()
	_, open := startGateway(t, c, nil, nil)
	w, body, err = dialErr(open, "bidder=bob", nil)
	if err != nil {
		t.Fatalf("no Origin in open mode: %v %s", err, body)
	}
	w.close()
}

// A connection whose token expires is closed, with close code 1008 and a
// reason that says so, whether it is idle (the gateway's sweep) or sends
// a command (the reader checks first); the gateway logs it.
func TestGatewayClosesExpiredToken(t *testing.T) {
	c := startStaticChain(t, 1)
	secret := "0123456789abcdef-auth"
	var offset atomic.Int64 // the gateway's clock runs this far ahead
	g, addr := startGateway(t, c, nil, func(o *Options) {
		o.Secret = secret
		o.Now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	})
	tok, _ := auth.NewToken([]byte(secret), "alice", auth.RoleBidder, time.Hour, time.Now())
	hdr := http.Header{"Origin": {"http://" + addr}}
	idle, body, err := dialErr(addr, "token="+tok, hdr)
	if err != nil {
		t.Fatalf("dial: %v %s", err, body)
	}
	idle.t = t
	defer idle.close()
	busy, body, err := dialErr(addr, "token="+tok, hdr)
	if err != nil {
		t.Fatalf("dial: %v %s", err, body)
	}
	busy.t = t
	defer busy.close()
	if r := busy.call("help", "help"); r == nil {
		t.Fatal("no help before expiry")
	}
	offset.Store(int64(2 * time.Hour))
	busy.send("auctions")
	for _, w := range []*wsc{busy, idle} {
		select {
		case <-w.readEnd:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: connection still open 5s after its token expired", w.name)
		}
		var ce *websocket.CloseError
		if !errors.As(w.err, &ce) || ce.Code != websocket.ClosePolicyViolation || !strings.HasPrefix(ce.Text, "token expired at ") {
			t.Errorf("%s: connection ended with %v, want close 1008 \"token expired at ...\"", w.name, w.err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for g.metrics().Connections != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := g.metrics().Connections; n != 0 {
		t.Errorf("%d connections left after expiry", n)
	}
}

// gatedListener hands out connections whose writes can be held, like a
// client that stops reading (its TCP window closed).
type gatedListener struct {
	net.Listener
	mu   sync.Mutex // guards open and wake
	open bool
	wake chan struct{}
}

type gatedConn struct {
	net.Conn
	l *gatedListener
}

func (l *gatedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &gatedConn{Conn: c, l: l}, nil
}

func (l *gatedListener) set(open bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open = open
	if open {
		close(l.wake)
		l.wake = make(chan struct{})
	}
}

func (c *gatedConn) Write(p []byte) (int, error) {
	for {
		c.l.mu.Lock()
		open, wake := c.l.open, c.l.wake
		c.l.mu.Unlock()
		if open {
			return c.Conn.Write(p)
		}
		<-wake
	}
}

// A watcher that takes nothing while 300 bids come in holds a bounded
// queue; when it reads again it gets the newest highest bid and the close,
// not the backlog, with increasing seqs.
func TestGatewaySlowConsumer(t *testing.T) {
	c := startStaticChain(t, 3)
	gl := &gatedListener{Listener: listen(t), open: true, wake: make(chan struct{})}
	const queue = 8
	g, addr := startGateway(t, c, gl, func(o *Options) { o.QueueSize = queue })
	c.open("a1", 6*time.Second, 0)
	slow := dial(t, addr, "bidder=slow")
	slow.call("watch a1", "watching")
	c.bid("a1", "bidder0", 1)
	slow.wait("first highest", push("highest", "a1"))

	gl.set(false) // the gateway's writes to the slow watcher now hang
	defer gl.set(true)
	const bids = 300
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < bids; i += 4 {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				c.client.Bid(ctx, "a1", fmt.Sprintf("bidder%d", i%7), int64(10+i), "")
				cancel()
			}
		})
	}
	wg.Wait()
	top := c.bid("a1", "last", 10_000)
	// The gateway's queue for the slow connection stays small.
	var sc *conn
	g.mu.Lock()
	for cn := range g.conns {
		if cn.bidder == "slow" {
			sc = cn
		}
	}
	g.mu.Unlock()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.hub.mu.Lock()
		up := g.hub.upstreams["a1"]
		seen := up != nil && up.lastSeq >= top.Version
		g.hub.mu.Unlock()
		if seen {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the gateway did not see the last bid")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := sc.q.pending(); n > queue {
		t.Errorf("slow watcher's queue holds %d messages, want at most %d (conflated)", n, queue)
	}
	// Let the auction close while still stuck, then read again.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for {
		r, err := c.client.Result(ctx, "a1")
		if err != nil {
			t.Fatal(err)
		}
		if r.Info.GetState().String() == "CLOSED_STATE" {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the close event reaches the gateway
	gl.set(true)
	cl := slow.wait("closed", push("closed", "a1"))
	if cl.str("winner") != "last" || cl.num("amount") != 10_000 {
		t.Errorf("closed = %v", cl)
	}
	var highs []int64
	for _, m := range slow.all() {
		if m.str("type") == "highest" {
			highs = append(highs, m.num("amount"))
		}
	}
	// One before the gate, what the writer had taken when it stuck, a
	// queue's worth, and the newest.
	if len(highs) > 2*queue+2 || highs[len(highs)-1] != 10_000 {
		t.Errorf("slow watcher got highest pushes %v: want at most %d ending with 10000", highs, 2*queue+2)
	}
	checkSeqs(t, slow)
}

// With masters, the gateway follows the masters' configuration: when the
// tail dies, its upstream resumes at the new tail after the last seq it
// saw, and watchers see every highest bid once, in order.
func TestGatewayFollowsTailChange(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master group")
	}
	c := startMasterChain(t, 3)
	// Every highest push is asserted: none may be replaced by a newer one
	// because a loaded test machine made it wait (ConflateAfter).
	g, addr := startGateway(t, c, nil, func(o *Options) { o.ConflateAfter = -1 })
	c.open("a1", 10*time.Minute, 0)
	w := dial(t, addr, "")
	w.call("watch a1", "watching")
	amount := int64(0)
	bid := func() int64 {
		amount++
		c.bid("a1", fmt.Sprintf("b%d", amount%3), amount)
		return amount
	}
	bid()
	// The stream is open once the first bid is pushed: every later bid
	// comes as it happens.
	w.wait("highest 1", func(m msg) bool { return m.str("type") == "highest" && m.num("amount") == 1 })
	for range 9 {
		bid()
	}
	w.wait("highest 10", func(m msg) bool { return m.str("type") == "highest" && m.num("amount") == 10 })
	// Kill the tail while bids keep coming.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var last int64
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			last = bid()
			time.Sleep(5 * time.Millisecond)
		}
	})
	time.Sleep(100 * time.Millisecond)
	c.nodes["n3"].Stop()
	c.waitChain([]string{"n1", "n2"}, 10*time.Second)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	w.wait(fmt.Sprintf("highest %d", last), func(m msg) bool { return m.str("type") == "highest" && m.num("amount") == last })
	checkSeqs(t, w)
	// Bids come one at a time, so every amount was the highest once; the
	// watcher may miss none (it read all the while) and see none twice.
	seen := map[int64]int{}
	for _, m := range w.all() {
		if m.str("type") == "highest" {
			seen[m.num("amount")]++
		}
	}
	for a := int64(1); a <= last; a++ {
		if seen[a] != 1 {
			t.Errorf("highest %d pushed %d times", a, seen[a])
		}
	}
	if t.Failed() {
		t.Logf("messages:\n%s", w.dump())
	}
	if m := g.metrics(); m.Tail != "n2" {
		t.Errorf("gateway's tail = %q, want n2", m.Tail)
	}
}

// The ping sweep pings every connection each ping interval: a client
// that answers (gorilla answers pings while it reads) stays connected
// however long it is silent; one that does not is closed with 1001 once
// the pong wait has passed.
func TestGatewayPings(t *testing.T) {
	c := startStaticChain(t, 1)
	_, addr := startGateway(t, c, nil, func(o *Options) {
		o.PingInterval, o.PongWait = 50*time.Millisecond, 300*time.Millisecond
	})
	var pings atomic.Int64
	answers, _, err := dialSetup(addr, "bidder=a", nil, func(ws *websocket.Conn) {
		ws.SetPingHandler(func(data string) error {
			pings.Add(1)
			return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	answers.t = t
	t.Cleanup(answers.close)
	mute, _, err := dialSetup(addr, "bidder=b", nil, func(ws *websocket.Conn) { ws.SetPingHandler(func(string) error { return nil }) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mute.close)
	_, err = mute.waitErr(5*time.Second, func(msg) bool { return false })
	if !websocket.IsCloseError(errors.Unwrap(err), websocket.CloseGoingAway) || !strings.Contains(err.Error(), "no pong") {
		t.Errorf("a client that never pongs: %v, want close 1001 (no pong)", err)
	}
	if n := pings.Load(); n < 3 {
		t.Errorf("%d pings in the time the other client was cut off, want several", n)
	}
	answers.call("help", "help") // still there
}

// Bids through the gateway go on when the head dies: the gateway's bid
// streams move to the new head, and a bidder that gets no outcome (an
// unavailable exception, while the master splices the chain) sends the
// same JSON command again until it has one. Every bid is counted once.
func TestGatewayBidsFollowHeadChange(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a master group")
	}
	c := startMasterChain(t, 3)
	// A short call timeout: bids during the splice answer unavailable.
	_, addr := startGateway(t, c, nil, func(o *Options) { o.CallTimeout = 150 * time.Millisecond })
	c.open("a1", 10*time.Minute, 0)
	var next, ids, resent atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for b := range 4 {
		w := dial(t, addr, fmt.Sprintf("bidder=b%d", b))
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				ids.Add(1)
				line := fmt.Sprintf(`{"op":"bid","auction":"a1","amount":%d,"id":"%d"}`, next.Add(1), n)
				for try := 0; ; try++ {
					w.send(line)
					r, err := w.waitErr(10*time.Second, func(m msg) bool { return m.str("type") == "bid" && m.str("id") == fmt.Sprint(n) })
					if err != nil {
						t.Errorf("b%d: bid %d: %v", b, n, err)
						return
					}
					if r.str("outcome") == "success" || r.str("outcome") == "fail" {
						break
					}
					if r.str("reason") != "unavailable" || try > 50 {
						t.Errorf("b%d: bid %d: %v", b, n, r)
						return
					}
					resent.Add(1)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	c.nodes["n1"].Stop()
	c.waitChain([]string{"n2", "n3"}, 10*time.Second)
	time.Sleep(500 * time.Millisecond)
	close(stop)
	wg.Wait()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	r, err := c.client.Result(ctx, "a1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.GetInfo().GetBids(), uint64(ids.Load()); got != want {
		t.Errorf("a1 counts %d bids, want %d: one per id, however often sent", got, want)
	}
	t.Logf("%d bids, %d sent again after an unavailable answer", ids.Load(), resent.Load())
}

// Stop ends every connection with 1001 and returns promptly.
func TestGatewayStop(t *testing.T) {
	c := startStaticChain(t, 1)
	g, addr := startGateway(t, c, nil, nil)
	c.open("a1", time.Minute, 0)
	w := dial(t, addr, "bidder=a")
	w.call("watch a1", "watching")
	start := time.Now()
	g.Stop()
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Stop took %v", d)
	}
	_, err := w.waitErr(5*time.Second, func(msg) bool { return false })
	if !websocket.IsCloseError(errors.Unwrap(err), websocket.CloseGoingAway) {
		t.Errorf("after Stop: %v, want close 1001", err)
	}
	if _, _, err := dialErr(addr, "", nil); err == nil {
		t.Error("dial after Stop succeeded")
	}
}

// An idle connection holds one goroutine, its reader: no writer while it
// has nothing to send, no ticker, no command goroutine ("What a watcher
// costs" in docs/gateway.md).
func TestGatewayIdleConnectionHoldsOneGoroutine(t *testing.T) {
	c := startStaticChain(t, 1)
	c.open("a1", time.Hour, 0)
	c.bid("a1", "first", 10)
	g, addr := startGateway(t, c, nil, func(o *Options) { o.MetricsInterval = time.Hour })
	warm, err := dialRaw(addr, "bidder=warm")
	if err != nil {
		t.Fatal(err)
	}
	defer warm.c.Close()
	warm.send("watch a1")
	settle := func(watchers int) int {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			if w, _ := g.hub.counts(); w == watchers {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("the gateway does not count %d watchers", watchers)
			}
			time.Sleep(10 * time.Millisecond)
		}
		time.Sleep(300 * time.Millisecond) // the writers of the replies and pushes end
		return runtime.NumGoroutine()
	}
	before := settle(1)
	const n = 100
	for i := range n {
		w, err := dialRaw(addr, fmt.Sprintf("bidder=w%d", i))
		if err != nil {
			t.Fatal(err)
		}
		defer w.c.Close()
		if err := w.send("watch a1"); err != nil {
			t.Fatal(err)
		}
	}
	after := settle(1 + n)
	// A few goroutines of the test's chain and gateway may come and go
	// meanwhile (a gRPC stream's, a writer ending late): a margin of 5
	// either way still tells one goroutine per connection from two.
	if d := after - before; d < n-5 || d > n+5 {
		t.Errorf("%d idle watchers added %d goroutines, want %d (one each)", n, d, n)
	}
}
