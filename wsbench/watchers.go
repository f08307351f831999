package wsbench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// watcher is one WebSocket connection watching one auction. Its reader
// goroutine is the only one that touches it after the watch, except for
// lastSeq, which the drain check reads, and the close at the end.
type watcher struct {
	ws      *websocket.Conn
	auction int
	shard   *latShard

	// lastSeq is the highest seq of a highest push received.
	lastSeq atomic.Uint64

	// Owned by the reader goroutine; read once it has ended.
	duplicated uint64 // highest pushes with a seq not above lastSeq
	others     uint64 // messages other than highest pushes (closed, errors, ...)
	lost       error  // why the connection ended before the bench closed it
}

// Patterns of the flat JSON objects the gateway sends; no value the bench
// reads contains a quote.
var (
	patType    = []byte(`"type":"`)
	patSeq     = []byte(`"seq":`)
	patAuction = []byte(`"auction":"`)
	patID      = []byte(`"id":`)
	typeHigh   = []byte("highest")
)

// stringField returns the value of the string field whose `"key":"`
// pattern is pat in msg, nil when there is none.
func stringField(msg, pat []byte) []byte {
	i := bytes.Index(msg, pat)
	if i < 0 {
		return nil
	}
	v := msg[i+len(pat):]
	j := bytes.IndexByte(v, '"')
	if j < 0 {
		return nil
	}
	return v[:j]
}

// uintField returns the value of the unsigned number field whose
// `"key":` pattern is pat in msg.
func uintField(msg, pat []byte) (uint64, bool) {
	i := bytes.Index(msg, pat)
	if i < 0 {
		return 0, false
	}
	var n uint64
	digits := 0
	for _, c := range msg[i+len(pat):] {
		if c < '0' || c > '9' {
			break
		}
		n = n*10 + uint64(c-'0')
		digits++
	}
	return n, digits > 0
}

// readFrame reads the next message of ws into buf (reused) and returns it
// with its type.
func readFrame(ws *websocket.Conn, buf []byte) (int, []byte, error) {
	typ, r, err := ws.NextReader()
	if err != nil {
		return 0, buf, err
	}
	buf = buf[:0]
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return typ, buf, nil
		}
		if err != nil {
			return 0, buf, err
		}
	}
}

// connectWatcher opens watcher i's connection and watches its auction,
// waiting for the gateway's watching reply; the caller starts its reader.
func (b *bench) connectWatcher(ctx context.Context, i int) (*watcher, error) {
	w := &watcher{auction: i % len(b.auctions), shard: &b.track.shards[i%latShards]}
	ws, err := b.dialer.dial(ctx, "")
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(b.cfg.Timeout)
	_ = ws.SetWriteDeadline(deadline)
	if err := ws.WriteMessage(websocket.TextMessage, []byte("watch "+b.auctions[w.auction])); err != nil {
		ws.Close()
		return nil, fmt.Errorf("watch: %w", err)
	}
	_ = ws.SetReadDeadline(deadline)
	var buf []byte
	for {
		var typ int
		typ, buf, err = readFrame(ws, buf)
		if err != nil {
			ws.Close()
			return nil, fmt.Errorf("watch %s: waiting for watching: %w", b.auctions[w.auction], err)
		}
		if typ != websocket.TextMessage {
			continue
		}
		switch string(stringField(buf, patType)) {
		case "watching":
			_ = ws.SetReadDeadline(time.Time{})
			w.ws = ws
			return w, nil
		case "error":
			ws.Close()
			return nil, fmt.Errorf("watch %s: %s", b.auctions[w.auction], bytes.TrimSpace(buf))
		}
	}
}

// read is a watcher's reader goroutine: it records every highest push
// until the connection ends.
func (w *watcher) read(b *bench) {
	defer b.readers.Done()
	auction := []byte(b.auctions[w.auction])
	buf := make([]byte, 0, 256)
	for {
		typ, msg, err := readFrame(w.ws, buf)
		buf = msg
		if err != nil {
			if !b.closing.Load() {
				w.lost = err
			}
			return
		}
		arr := b.now()
		if typ != websocket.TextMessage || !bytes.Equal(stringField(msg, patType), typeHigh) ||
			!bytes.Equal(stringField(msg, patAuction), auction) {
			w.others++
			continue
		}
		seq, ok := uintField(msg, patSeq)
		if !ok {
			w.others++
			continue
		}
		if seq <= w.lastSeq.Load() {
			w.duplicated++
			continue
		}
		w.lastSeq.Store(seq)
		b.track.delivered(w.auction, seq, arr, w.shard)
	}
}

// idOf returns the numeric "id" of a reply, and whether it has one.
func idOf(msg []byte) (uint64, bool) { return uintField(msg, patID) }
