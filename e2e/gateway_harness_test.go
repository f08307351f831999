package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Gateway clusters: 3 masters, n nodes and one or more `gavel gateway`
// processes, all real processes on loopback sharing one config.yaml, and a
// small WebSocket client (wsClient) that speaks docs/gateway.md.
//
//	c := newGatewayCluster(t, 3)               // m1..m3, n1..n3, g1
//	ws := dialWS(t, c.wsURL("g1", "alice"), nil)
//	rep, err := ws.call("bid a1 100", "bid", 5*time.Second)
//
// c.kill("g1") and c.startGateway("g1") crash and restart a gateway (the
// cluster's start picks the `gateway` subcommand for a gateway id); the
// gateway's log is g1.log in the test's directory, shown when a test fails.

// gatewayOptions configure newGatewayClusterWith. The zero value is one
// gateway, g1, in open (dev) mode.
type gatewayOptions struct {
	// Gateways are the gateway ids (default g1).
	Gateways []string
	// ExtraYAML is appended to config.yaml: whole top-level sections other
	// than cluster, masters, nodes, master, chain, log and gateways, e.g.
	// "auth:\n  secret: s3cret\n" or "gateway:\n  allowed_origins: [...]\n".
	ExtraYAML string
}

// newGatewayCluster starts 3 masters, n nodes (chain n1 -> ... -> nN) and
// gateway g1, and waits until g1's /healthz answers 200. Every process is
// SIGKILLed when the test ends.
func newGatewayCluster(t *testing.T, nodes int) *cluster {
	t.Helper()
	return newGatewayClusterWith(t, nodes, gatewayOptions{})
}

// newGatewayClusterWith is newGatewayCluster with options.
func newGatewayClusterWith(t *testing.T, nodes int, opts gatewayOptions) *cluster {
	t.Helper()
	ids := opts.Gateways
	if len(ids) == 0 {
		ids = []string{"g1"}
	}
	addrs := map[string]string{}
	var b strings.Builder
	b.WriteString("gateways:\n")
	for _, id := range ids {
		addrs[id] = freePort(t)
		fmt.Fprintf(&b, "  - id: %s\n    addr: %s\n", id, addrs[id])
	}
	b.WriteString(opts.ExtraYAML)
	c := newMasterCluster(t, nodes, b.String())
	c.gatewayIDs = append(c.gatewayIDs, ids...)
	for _, id := range ids {
		c.addrs[id] = addrs[id]
	}
	for _, id := range ids {
		c.startGateway(id)
	}
	return c
}

// isGateway reports whether id is one of the cluster's gateways.
func (c *cluster) isGateway(id string) bool { return slices.Contains(c.gatewayIDs, id) }

// startGateway starts (or restarts, after kill) gateway id and waits until
// its /healthz answers 200.
func (c *cluster) startGateway(id string) *proc {
	c.t.Helper()
	if !c.isGateway(id) {
		c.t.Fatalf("%s is not a gateway of this cluster (gateways %v)", id, c.gatewayIDs)
	}
	p := c.start(id)
	c.waitGateway(id, p)
	return p
}

// waitGateway waits up to 15 s until gateway id answers GET /healthz with
// 200, failing at once if its process exits.
func (c *cluster) waitGateway(id string, p *proc) {
	c.t.Helper()
	hc := c.httpClient(500 * time.Millisecond)
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for {
		select {
		case <-p.exited:
			c.t.Fatalf("gateway %s exited while starting (%v); its log:\n%s", id, p.cmd.ProcessState, tail(p.log, 40))
		default:
		}
		resp, err := hc.Get(c.gatewayURL(id) + "/healthz")
		if err == nil {
			body, _ := readAllLimit(resp, 512)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(body))
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("gateway %s: /healthz not OK after 15s: %s; its log:\n%s", id, last, tail(p.log, 40))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// gatewayURL is the base HTTP URL of gateway id, e.g. http://127.0.0.1:4242
// (https with TLS).
func (c *cluster) gatewayURL(id string) string {
	if c.caPool != nil {
		return "https://" + c.addrs[id]
	}
	return "http://" + c.addrs[id]
}

// httpClient returns a client of the gateways with timeout: with TLS, one
// that trusts the cluster's CA.
func (c *cluster) httpClient(timeout time.Duration) *http.Client {
	hc := &http.Client{Timeout: timeout}
	if c.caPool != nil {
		hc.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.caPool, MinVersion: tls.VersionTLS12}}
	}
	return hc
}

// wsURL is the WebSocket URL of gateway id's /ws (wss with TLS), logged
// in as bidder in open mode (?bidder=NAME); bidder "" gives the bare URL.
func (c *cluster) wsURL(id, bidder string) string {
	scheme := "ws"
	if c.caPool != nil {
		scheme = "wss"
	}
	u := scheme + "://" + c.addrs[id] + "/ws"
	if bidder != "" {
		u += "?bidder=" + url.QueryEscape(bidder)
	}
	return u
}

// gatewayLog returns the last n lines of gateway id's log.
func (c *cluster) gatewayLog(id string, n int) string {
	return tail(filepath.Join(c.dir, id+".log"), n)
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func readAllLimit(resp *http.Response, n int64) (string, error) {
	b, err := io.ReadAll(io.LimitReader(resp.Body, n))
	return string(b), err
}

// wsMsg is one JSON object from the gateway: a reply or a push. The fields
// are the union of docs/gateway.md's; fields() has every key as decoded.
type wsMsg struct {
	Type       string `json:"type"`
	ID         string `json:"id"`
	Auction    string `json:"auction"`
	Amount     int64  `json:"amount"`
	Bidder     string `json:"bidder"`
	Outcome    string `json:"outcome"`
	Reason     string `json:"reason"`
	Detail     string `json:"detail"`
	State      string `json:"state"`
	Highest    int64  `json:"highest"`
	Winner     string `json:"winner"`
	ClosesAt   int64  `json:"closes_at"`
	Seq        uint64 `json:"seq"`
	From       uint64 `json:"from"`
	Version    uint64 `json:"version"`
	YourBid    int64  `json:"your_bid"`
	ServerTime int64  `json:"server_time"`
	Error      string `json:"error"`
	Line       string `json:"line"`

	Raw string    `json:"-"`
	At  time.Time `json:"-"` // when the test received it
}

// parseWSMsg decodes one JSON object sent by the gateway, in one pass (a
// test with thousands of watchers decodes hundreds of thousands of them).
func parseWSMsg(raw string) (wsMsg, error) {
	type plain wsMsg // wsMsg's fields, without this function's id handling
	var aux struct {
		plain
		// ID shadows plain's: "id" may come back as a number for a
		// numeric id; keep its text.
		ID json.RawMessage `json:"id"`
	}
	if err := json.Unmarshal([]byte(raw), &aux); err != nil {
		return wsMsg{}, fmt.Errorf("%w in %s", err, raw)
	}
	m := wsMsg(aux.plain)
	if len(aux.ID) > 0 && aux.ID[0] == '"' {
		if err := json.Unmarshal(aux.ID, &m.ID); err != nil {
			return wsMsg{}, fmt.Errorf("%w in %s", err, raw)
		}
	} else if len(aux.ID) > 0 && string(aux.ID) != "null" {
		m.ID = string(aux.ID)
	}
	m.Raw = raw
	return m, nil
}

// fields decodes every key of the message, numbers as json.Number.
func (m wsMsg) fields() map[string]any {
	var f map[string]any
	dec := json.NewDecoder(strings.NewReader(m.Raw))
	dec.UseNumber()
	_ = dec.Decode(&f)
	return f
}

// isPush reports whether a message is a push rather than a reply.
func (m wsMsg) isPush() bool {
	switch m.Type {
	case "highest", "extended", "closed", "outbid", "metrics":
		return true
	}
	return false
}

// wsClient is a WebSocket client of the gateway. A goroutine reads every
// message and keeps it; expect and call take messages in arrival order,
// each at most once, leaving the others (pushes among replies) for later.
// Its methods return errors rather than failing the test, so that many
// clients can run in goroutines.
type wsClient struct {
	name string
	conn *websocket.Conn
	done chan struct{} // closed when the reader ends

	writeMu sync.Mutex // one writer at a time

	mu      sync.Mutex // guards the fields below
	msgs    []wsMsg
	taken   []bool
	readErr error
	notify  chan struct{} // closed and replaced on each message
}

// dialWS connects to a gateway's /ws (10 s bound) and closes the connection
// when the test ends.
func dialWS(t testing.TB, u string, hdr http.Header) (*wsClient, error) {
	return dialWSWith(t, &websocket.Dialer{HandshakeTimeout: 10 * time.Second}, u, hdr)
}

// dialWSWith is dialWS with a dialer of the caller's (for wss with a CA).
func dialWSWith(t testing.TB, d *websocket.Dialer, u string, hdr http.Header) (*wsClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := d.DialContext(ctx, u, hdr)
	if err != nil {
		if resp != nil {
			body, _ := readAllLimit(resp, 512)
			resp.Body.Close()
			return nil, fmt.Errorf("dial %s: %v (HTTP %s: %s)", u, err, resp.Status, strings.TrimSpace(body))
		}
		return nil, fmt.Errorf("dial %s: %v", u, err)
	}
	w := &wsClient{name: u, conn: conn, done: make(chan struct{}), notify: make(chan struct{})}
	go w.read()
	t.Cleanup(w.close)
	return w, nil
}

func (w *wsClient) read() {
	defer close(w.done)
	for {
		_, data, err := w.conn.ReadMessage()
		now := time.Now()
		w.mu.Lock()
		if err != nil {
			w.readErr = err
			close(w.notify)
			w.notify = make(chan struct{})
			w.mu.Unlock()
			return
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			m, err := parseWSMsg(line)
			if err != nil {
				m = wsMsg{Type: "!unparsable", Error: err.Error(), Raw: line}
			}
			m.At = now
			w.msgs = append(w.msgs, m)
			w.taken = append(w.taken, false)
		}
		close(w.notify)
		w.notify = make(chan struct{})
		w.mu.Unlock()
	}
}

// send writes one text frame (a command line or a JSON command).
func (w *wsClient) send(line string) error {
	w.writeMu.Lock()
	defer w.writeMu.Unlock()
	w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return w.conn.WriteMessage(websocket.TextMessage, []byte(line))
}

// expect waits up to timeout for the first message not taken yet that
// satisfies pred, takes it and returns it.
func (w *wsClient) expect(timeout time.Duration, what string, pred func(wsMsg) bool) (wsMsg, error) {
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
		notify, readErr, n := w.notify, w.readErr, len(w.msgs)
		w.mu.Unlock()
		if readErr != nil {
			return wsMsg{}, fmt.Errorf("%s: waiting for %s: connection ended (%v) after %d messages", w.name, what, readErr, n)
		}
		select {
		case <-notify:
		case <-deadline.C:
			return wsMsg{}, fmt.Errorf("%s: no %s within %v; last messages:\n%s", w.name, what, timeout, w.lastRaw(8))
		}
	}
}

// call sends a command and waits for the first message of type typ not
// taken yet (for a JSON command with an "id", the reply echoing it).
func (w *wsClient) call(line, typ string, timeout time.Duration) (wsMsg, error) {
	var id string
	if strings.HasPrefix(strings.TrimSpace(line), "{") {
		var cmd map[string]any
		if json.Unmarshal([]byte(line), &cmd) == nil && cmd["id"] != nil {
			id = fmt.Sprint(cmd["id"])
		}
	}
	if err := w.send(line); err != nil {
		return wsMsg{}, fmt.Errorf("%s: send %q: %w", w.name, line, err)
	}
	return w.expect(timeout, fmt.Sprintf("%q reply to %q", typ, line), func(m wsMsg) bool {
		return m.Type == typ && (id == "" || m.ID == id)
	})
}

// messages returns every message received so far, in arrival order.
func (w *wsClient) messages() []wsMsg {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.msgs)
}

func (w *wsClient) lastRaw(n int) string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var b strings.Builder
	for _, m := range w.msgs[max(0, len(w.msgs)-n):] {
		fmt.Fprintf(&b, "  %s\n", m.Raw)
	}
	if b.Len() == 0 {
		return "  (none)"
	}
	return b.String()
}

// close sends a close frame and ends the connection; it may be called more
// than once.
func (w *wsClient) close() {
	w.writeMu.Lock()
	_ = w.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""),
		time.Now().Add(time.Second))
	w.writeMu.Unlock()
	w.conn.Close()
	select {
	case <-w.done:
	case <-time.After(5 * time.Second):
	}
}
