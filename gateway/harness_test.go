package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/chain"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/master"
)

// The integration tests run real chain nodes (and masters) in the test
// process, on loopback, a real Gateway in front of them, and talk to it
// with a gorilla WebSocket client, as wscat or a page would.

// testCluster is a chain of nodes, maybe with masters.
type testCluster struct {
	t       testing.TB
	dir     string
	nodes   map[string]*chain.Node
	addrs   map[string]string // node and master ids -> gRPC addresses
	ids     []string          // node ids, in chain order
	masters []*master.Master
	mAddrs  []string
	client  *client.Client
}

// listen opens a loopback listener on a free port.
func listen(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// testLogger writes to a file of the test's directory, shown when the test
// fails.
func testLogger(t testing.TB, dir, name string) *slog.Logger {
	path := filepath.Join(dir, name+".log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		f.Close()
		if t.Failed() {
			b, _ := os.ReadFile(path)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("---- last lines of %s.log ----\n%s", name, strings.Join(lines, "\n"))
		}
	})
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startStaticChain starts n nodes n1..nN in a static configuration
// (epoch 1, no masters).
func startStaticChain(t testing.TB, n int) *testCluster {
	t.Helper()
	return startStaticChainWith(t, n, nil)
}

// startStaticChainWith is startStaticChain with edit applied to each
// node's options.
func startStaticChainWith(t testing.TB, n int, edit func(*chain.NodeOptions)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, dir: t.TempDir(), nodes: map[string]*chain.Node{}, addrs: map[string]string{}}
	cfg := &api.ChainConfig{Epoch: 1}
	lis := map[string]net.Listener{}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		lis[id] = listen(t)
		c.ids = append(c.ids, id)
		c.addrs[id] = lis[id].Addr().String()
		cfg.Chain = append(cfg.Chain, &api.Member{Id: id, Addr: c.addrs[id]})
	}
	for _, id := range c.ids {
		opts := chain.NodeOptions{ID: id, Addr: c.addrs[id], Initial: cfg,
			Tick: 5 * time.Millisecond, HelloRetry: 20 * time.Millisecond, Logger: testLogger(t, c.dir, id)}
		if edit != nil {
			edit(&opts)
		}
		node, err := chain.NewNode(opts)
		if err != nil {
			t.Fatal(err)
		}
		if err := node.Start(lis[id]); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(node.Stop)
		c.nodes[id] = node
	}
	c.newClient()
	return c
}

// startMasterChain starts 3 masters and n nodes that join through them,
// one at a time, so that the chain is n1 -> ... -> nN.
func startMasterChain(t testing.TB, n int) *testCluster {
	t.Helper()
	c := &testCluster{t: t, dir: t.TempDir(), nodes: map[string]*chain.Node{}, addrs: map[string]string{}}
	// Every listener is open before any master starts, so that no port is
	// chosen twice or taken in between.
	var peers []master.Peer
	var grpcLis, raftLis []net.Listener
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("m%d", i)
		grpcLis, raftLis = append(grpcLis, listen(t)), append(raftLis, listen(t))
		peers = append(peers, master.Peer{ID: id, Addr: grpcLis[i-1].Addr().String(), RaftAddr: raftLis[i-1].Addr().String()})
		c.mAddrs = append(c.mAddrs, peers[i-1].Addr)
	}
	for i, p := range peers {
		m, err := master.New(master.Options{ID: p.ID, Peers: peers, DataDir: filepath.Join(c.dir, p.ID), RaftListener: raftLis[i],
			Heartbeat: 50 * time.Millisecond, FailureTimeout: 500 * time.Millisecond, Lease: 200 * time.Millisecond,
			Raft: master.RaftTiming{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
				LeaderLeaseTimeout: 250 * time.Millisecond, CommitTimeout: 5 * time.Millisecond},
			Logger: testLogger(t, c.dir, p.ID)})
		if err != nil {
			t.Fatal(err)
		}
		m.Start(grpcLis[i])
		c.masters = append(c.masters, m)
		t.Cleanup(m.Stop)
	}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		l := listen(t)
		c.ids = append(c.ids, id)
		c.addrs[id] = l.Addr().String()
		node, err := chain.NewNode(chain.NodeOptions{ID: id, Addr: c.addrs[id], Tick: 5 * time.Millisecond,
			HelloRetry: 20 * time.Millisecond, Masters: c.mAddrs, Heartbeat: 50 * time.Millisecond,
			Logger: testLogger(t, c.dir, id)})
		if err != nil {
			t.Fatal(err)
		}
		if err := node.Start(l); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(node.Stop)
		c.nodes[id] = node
		c.waitChain(c.ids, 20*time.Second)
	}
	c.newClient()
	return c
}

func (c *testCluster) newClient() {
	var addrs []string
	for _, id := range c.ids {
		addrs = append(addrs, c.addrs[id])
	}
	cl, err := client.New(addrs, client.Options{})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	c.client = cl
}

// waitChain waits until the master leader's configuration is exactly ids,
// with nobody joining.
func (c *testCluster) waitChain(ids []string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, m := range c.masters {
			if !m.IsLeader() {
				continue
			}
			cfg := m.Config()
			var got []string
			for _, mb := range cfg.Chain {
				got = append(got, mb.ID)
			}
			if fmt.Sprint(got) == fmt.Sprint(ids) && len(cfg.Joining) == 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("the chain did not become %v within %v", ids, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// open opens an auction through the chain client.
func (c *testCluster) open(id string, d time.Duration, softClose time.Duration) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.client.Open(ctx, &api.OpenAuction{Auction: id, Item: "lamp", DurationMs: d.Milliseconds(), MinIncrement: 1,
		SoftCloseMs: softClose.Milliseconds()})
	if err != nil || r.Outcome != api.Outcome_SUCCESS {
		c.t.Fatalf("open %s: %v %v", id, r, err)
	}
}

// bid places a bid through the chain client (not through a gateway).
func (c *testCluster) bid(a, bidder string, amount int64) *api.BidReply {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.client.Bid(ctx, a, bidder, amount, "")
	if err != nil {
		c.t.Fatalf("bid %d on %s by %s: %v", amount, a, bidder, err)
	}
	return r
}

// startGateway starts a gateway in front of c, listening on lis (a fresh
// one if nil), and returns it with its host:port.
func startGateway(t testing.TB, c *testCluster, lis net.Listener, edit func(*Options)) (*Gateway, string) {
	t.Helper()
	var nodes []string
	for _, id := range c.ids {
		nodes = append(nodes, c.addrs[id])
	}
	opts := Options{ID: "g1", Nodes: nodes, Masters: c.mAddrs, MetricsInterval: 100 * time.Millisecond,
		Logger: testLogger(t, c.dir, "g1")}
	if edit != nil {
		edit(&opts)
	}
	g, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if lis == nil {
		lis = listen(t)
	}
	g.Start(lis)
	t.Cleanup(g.Stop)
	return g, lis.Addr().String()
}

// ---------------------------------------------------------------------------
// A WebSocket client.

// msg is one JSON object from the gateway.
type msg map[string]any

func (m msg) str(k string) string { s, _ := m[k].(string); return s }
func (m msg) num(k string) int64 {
	n, _ := m[k].(json.Number)
	v, _ := n.Int64()
	return v
}
func (m msg) has(k string) bool { _, ok := m[k]; return ok }

// wsc is a test's WebSocket connection: a goroutine keeps every message;
// wait takes them in order, each once.
type wsc struct {
	t    testing.TB
	name string
	ws   *websocket.Conn

	mu      sync.Mutex // guards msgs, taken, err, notify
	msgs    []msg
	taken   []bool
	err     error
	notify  chan struct{}
	readEnd chan struct{}
}

// dial connects to ws://addr/ws?query, failing the test on an error.
func dial(t testing.TB, addr, query string) *wsc {
	t.Helper()
	w, body, err := dialErr(addr, query, nil)
	if err != nil {
		t.Fatalf("dial %s?%s: %v %s", addr, query, err, body)
	}
	t.Cleanup(w.close)
	w.t = t
	return w
}

// dialErr connects and returns, on a refused upgrade, the response body.
func dialErr(addr, query string, hdr http.Header) (*wsc, string, error) {
	return dialSetup(addr, query, hdr, nil)
}

// dialSetup is dialErr with setup run on the connection before its reader
// starts (to set its handlers).
func dialSetup(addr, query string, hdr http.Header, setup func(*websocket.Conn)) (*wsc, string, error) {
	u := "ws://" + addr + "/ws"
	if query != "" {
		u += "?" + query
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	ws, resp, err := d.Dial(u, hdr)
	if err != nil {
		body := ""
		if resp != nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			body = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
		}
		return nil, body, err
	}
	if setup != nil {
		setup(ws)
	}
	w := &wsc{name: query, ws: ws, notify: make(chan struct{}), readEnd: make(chan struct{})}
	go w.read()
	return w, "", nil
}

func (w *wsc) read() {
	defer close(w.readEnd)
	for {
		_, data, err := w.ws.ReadMessage()
		w.mu.Lock()
		if err != nil {
			w.err = err
		} else {
			dec := json.NewDecoder(strings.NewReader(string(data)))
			dec.UseNumber()
			var m msg
			if derr := dec.Decode(&m); derr != nil {
				m = msg{"type": "!unparsable", "raw": string(data)}
			}
			w.msgs = append(w.msgs, m)
			w.taken = append(w.taken, false)
		}
		close(w.notify)
		w.notify = make(chan struct{})
		w.mu.Unlock()
		if err != nil {
			return
		}
	}
}

func (w *wsc) close() {
	_ = w.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	w.ws.Close()
	<-w.readEnd
}

// send writes one text frame.
func (w *wsc) send(text string) {
	w.t.Helper()
	if err := w.ws.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		w.t.Fatalf("%s: send %q: %v", w.name, text, err)
	}
}

// wait takes the first message not taken yet that satisfies pred, waiting
// up to 10 s for it.
func (w *wsc) wait(what string, pred func(msg) bool) msg {
	w.t.Helper()
	m, err := w.waitErr(10*time.Second, pred)
	if err != nil {
		w.t.Fatalf("%s: waiting for %s: %v; messages:\n%s", w.name, what, err, w.dump())
	}
	return m
}

func (w *wsc) waitErr(timeout time.Duration, pred func(msg) bool) (msg, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		for i, m := range w.msgs {
			if !w.taken[i] && pred(m) {
				w.taken[i] = true
				w.mu.Unlock()
				return m, nil
			}
		}
		notify, err := w.notify, w.err
		w.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("connection ended: %w", err)
		}
		select {
		case <-notify:
		case <-deadline.C:
			return nil, fmt.Errorf("none within %v", timeout)
		}
	}
}

// call sends a line and waits for the first message of type typ.
func (w *wsc) call(line, typ string) msg {
	w.t.Helper()
	w.send(line)
	return w.wait(fmt.Sprintf("%s reply to %q", typ, line), isType(typ))
}

// all returns every message received so far.
func (w *wsc) all() []msg {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]msg(nil), w.msgs...)
}

func (w *wsc) dump() string {
	var b strings.Builder
	for _, m := range w.all() {
		j, _ := json.Marshal(m)
		fmt.Fprintf(&b, "  %s\n", j)
	}
	return b.String()
}

func isType(typ string) func(msg) bool { return func(m msg) bool { return m.str("type") == typ } }

// push matches a push of type typ about auction a.
func push(typ, a string) func(msg) bool {
	return func(m msg) bool { return m.str("type") == typ && m.str("auction") == a }
}

// checkSeqs fails the test unless, per auction, the seqs of the highest and
// closed pushes w received strictly increase, and every push has a
// server_time.
func checkSeqs(t *testing.T, w *wsc) {
	t.Helper()
	last := map[string]int64{}
	for _, m := range w.all() {
		switch m.str("type") {
		case "highest", "closed", "extended", "outbid", "metrics":
			if m.num("server_time") <= 0 {
				t.Errorf("%s: push without server_time: %v", w.name, m)
			}
		}
		switch m.str("type") {
		case "highest", "closed":
			a, seq := m.str("auction"), m.num("seq")
			if seq <= last[a] {
				t.Errorf("%s: %s push on %s with seq %d after seq %d", w.name, m.str("type"), a, seq, last[a])
			}
			last[a] = seq
		}
	}
}
