package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// msg is any message of the gateway's line protocol (docs/gateway.md):
// a reply or a push.
type msg struct {
	Type    string `json:"type"`
	ID      string `json:"id"`
	Auction string `json:"auction"`
	Bidder  string `json:"bidder"`
	Amount  int64  `json:"amount"`
	Outcome string `json:"outcome"`
	Reason  string `json:"reason"`
	Detail  string `json:"detail"`
	Version uint64 `json:"version"`
	Seq     uint64 `json:"seq"`
	State   string `json:"state"`
	Highest int64  `json:"highest"`
	Error   string `json:"error"`
}

// wsConn is one WebSocket connection to the gateway. Commands go out as
// JSON with an id; a reader goroutine hands each reply to its caller and
// each push to onPush.
type wsConn struct {
	name   string
	conn   *websocket.Conn
	onPush func(msg)
	done   chan struct{} // closed when the reader ends

	writeMu sync.Mutex // one writer at a time

	mu      sync.Mutex // guards the fields below
	nextID  int
	pending map[string]chan msg
	readErr error
}

// dial connects to the gateway's /ws as bidder (open mode: ?bidder=NAME).
func dial(ctx context.Context, addr, bidder string, onPush func(msg)) (*wsConn, error) {
	u := url.URL{Scheme: "ws", Host: addr, Path: "/ws", RawQuery: url.Values{"bidder": {bidder}}.Encode()}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, _, err := websocket.DefaultDialer.DialContext(dctx, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("%s: dial %s: %w", bidder, u.String(), err)
	}
	w := &wsConn{name: bidder, conn: conn, onPush: onPush, done: make(chan struct{}), pending: map[string]chan msg{}}
	go w.read()
	return w, nil
}

func (w *wsConn) read() {
	defer close(w.done)
	for {
		_, data, err := w.conn.ReadMessage()
		if err != nil {
			w.mu.Lock()
			w.readErr = err
			w.mu.Unlock()
			return
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var m msg
			if json.Unmarshal([]byte(line), &m) != nil {
				continue
			}
			w.mu.Lock()
			ch := w.pending[m.ID]
			delete(w.pending, m.ID)
			w.mu.Unlock()
			switch {
			case m.ID != "" && ch != nil:
				ch <- m
			case m.ID == "" && w.onPush != nil:
				w.onPush(m)
			}
		}
	}
}

// call sends a JSON command (op and its fields) and waits for its reply.
func (w *wsConn) call(ctx context.Context, cmd map[string]any) (msg, error) {
	w.mu.Lock()
	w.nextID++
	id := strconv.Itoa(w.nextID)
	ch := make(chan msg, 1)
	w.pending[id] = ch
	w.mu.Unlock()
	cmd["id"] = id
	line, _ := json.Marshal(cmd)
	w.writeMu.Lock()
	_ = w.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	err := w.conn.WriteMessage(websocket.TextMessage, line)
	w.writeMu.Unlock()
	if err != nil {
		w.forget(id)
		return msg{}, fmt.Errorf("%s: send: %w", w.name, err)
	}
	select {
	case m := <-ch:
		return m, nil
	case <-w.done:
		w.mu.Lock()
		err := w.readErr
		w.mu.Unlock()
		return msg{}, fmt.Errorf("%s: connection ended: %w", w.name, err)
	case <-ctx.Done():
		w.forget(id)
		return msg{}, ctx.Err()
	}
}

// forget drops the wait for a reply that will not be read (a late one is
// then ignored).
func (w *wsConn) forget(id string) {
	w.mu.Lock()
	delete(w.pending, id)
	w.mu.Unlock()
}

// close closes the connection and waits (briefly) for the reader.
func (w *wsConn) close() {
	w.writeMu.Lock()
	_ = w.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, "demo over"),
		time.Now().Add(time.Second))
	w.writeMu.Unlock()
	w.conn.Close()
	select {
	case <-w.done:
	case <-time.After(2 * time.Second):
	}
}

// errUnavailable marks a reply saying the chain could not be reached.
var errUnavailable = errors.New("unavailable")

// result asks the gateway for an auction's result. A gateway that cannot
// reach the chain answers with an error ("chain unavailable: ..."),
// returned wrapping errUnavailable.
func (w *wsConn) result(ctx context.Context, auction string) (msg, error) {
	m, err := w.call(ctx, map[string]any{"op": "result", "auction": auction})
	if err != nil {
		return m, err
	}
	if m.Type == "error" {
		if strings.Contains(m.Error, "unavailable") {
			return m, fmt.Errorf("%w: %s", errUnavailable, m.Error)
		}
		return m, errors.New(m.Error)
	}
	return m, nil
}
