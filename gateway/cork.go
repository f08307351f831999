package gateway

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"sync"
)

// corkConn is the network connection under a client's WebSocket. While
// corked it gathers what the WebSocket writes, and uncork sends it in one
// write: a writer round of several frames (a reply and the pushes that
// waited for it, a ping) costs one system call and one wake-up of the
// client rather than one per frame. Uncorked, writes go straight through.
type corkConn struct {
	net.Conn

	// mu guards corked and buf: the WebSocket's writer corks and uncorks,
	// but its reader also writes (the pong to a client's ping, the echo of
	// a close frame), serialized with the writer only by the WebSocket.
	mu     sync.Mutex
	corked bool
	buf    *[]byte // borrowed from corkBuffers while corked
}

// corkBuffers are the gathering buffers of corked connections.
var corkBuffers = sync.Pool{New: func() any { b := make([]byte, 0, writeBufferSize); return &b }}

// Write sends p, or gathers it while corked.
func (c *corkConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.corked {
		*c.buf = append(*c.buf, p...)
		c.mu.Unlock()
		return len(p), nil
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// cork starts gathering writes.
func (c *corkConn) cork() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		c.corked = true
		c.buf = corkBuffers.Get().(*[]byte)
	}
}

// uncork sends what was gathered, in one write, and stops gathering. Its
// error is the write's: what the WebSocket was told it wrote is lost.
func (c *corkConn) uncork() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.corked {
		return nil
	}
	c.corked = false
	buf := c.buf
	c.buf = nil
	var err error
	if len(*buf) > 0 {
		_, err = c.Conn.Write(*buf)
	}
	if cap(*buf) <= 64<<10 { // a large round's buffer is not kept
		*buf = (*buf)[:0]
		corkBuffers.Put(buf)
	}
	return err
}

// corkingWriter hands the WebSocket upgrader a corkConn in place of the
// connection it hijacks.
type corkingWriter struct {
	http.ResponseWriter
	conn *corkConn // set by Hijack
}

// Hijack takes the connection over, as http.Hijacker, wrapped.
func (w *corkingWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := w.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("the response does not implement http.Hijacker")
	}
	c, brw, err := h.Hijack()
	if err != nil {
		return nil, nil, err
	}
	w.conn = &corkConn{Conn: c}
	return w.conn, brw, nil
}
