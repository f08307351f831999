package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// deliveryP99 bids through bidder at rate bids/s for d and returns the
// 99th percentile, over every watcher and every successful bid, of the
// time from the bid's reply reaching the bidder to its highest push
// reaching the watcher, with the number of (watcher, bid) pairs whose
// push never came.
func deliveryP99(t *testing.T, bidder *wsClient, watchers []*wsClient, auction string, next *atomic.Int64,
	rate int, d time.Duration) (time.Duration, int) {
	t.Helper()
	// Bids go out on a ticker, each in its own goroutine matching its
	// reply by JSON id, so that a slow reply does not hold back the next.
	var mu sync.Mutex
	acked := map[uint64]time.Time{} // seq -> when its bid's reply came
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); {
		<-tick.C
		id := fmt.Sprint("b", next.Add(1))
		amount := next.Load()
		if err := bidder.send(fmt.Sprintf(`{"op":"bid","auction":%q,"amount":%d,"id":%q}`, auction, amount, id)); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			m, err := bidder.expect(10*time.Second, "bid reply "+id, func(m wsMsg) bool { return m.Type == "bid" && m.ID == id })
			if err != nil {
				t.Error(err)
				return
			}
			if m.Outcome == "success" {
				mu.Lock()
				acked[m.Version] = m.At
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(acked) < rate*int(d/time.Second)/2 {
		t.Fatalf("only %d bids succeeded in %v at %d/s", len(acked), d, rate)
	}
	var last uint64
	for seq := range acked {
		last = max(last, seq)
	}
	var lat []time.Duration
	missed := 0
	deadline := time.Now().Add(10 * time.Second)
	for _, w := range watchers {
		if _, err := w.expect(max(time.Until(deadline), time.Millisecond), "the last bid's push", func(m wsMsg) bool {
			return m.Type == "highest" && m.Seq >= last
		}); err != nil {
			t.Errorf("watcher %s: %v", w.name, err)
		}
		seen := map[uint64]time.Time{}
		for _, m := range w.messages() {
			if m.Type == "highest" {
				seen[m.Seq] = m.At
			}
		}
		for seq, at := range acked {
			if got, ok := seen[seq]; ok {
				lat = append(lat, got.Sub(at))
			} else {
				missed++
			}
		}
	}
	slices.Sort(lat)
	return lat[len(lat)*99/100], missed
}

// dialSmallBuffer dials the gateway with a 4 KiB socket receive buffer,
// so that a client that never reads stops taking data within a few
// frames.
var dialSmallBuffer = &websocket.Dialer{HandshakeTimeout: 10 * time.Second,
	NetDialContext: (&net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
		if err != nil {
			return err
		}
		return serr
	}}).DialContext}

// TestBadClientsAtScale measures 200 well-behaved watchers' delivery
// latency while a bidder bids 50 times a second through the gateway, then
// again while 1,000 more connections misbehave: 250 send a line that is
// not a command about once a second (each answered with an error), 250
// send a frame over the read limit (cut off with 1009), 250 send binary
// junk about once a second, and 250 watch the auction and send a burst
// of commands whose replies outgrow their buffers (gateway.send_buffer and
// a 4 KiB receive buffer), but never read (cut off once a write to them
// has waited gateway.write_timeout). Every misbehaving
// connection must be answered or cut off, and the good watchers' p99 may
// at most double (over a floor of 10 ms), with no push missed.
func TestBadClientsAtScale(t *testing.T) {
	const (
		good, perKind = 200, 250
		rate          = 50
		phase         = 3 * time.Second
		auction       = "s1"
	)
	c := newGatewayClusterWith(t, 3, gatewayOptions{ExtraYAML: "gateway:\n  write_timeout: 2s\n  read_limit: 4096\n"})
	url := func(name string) string { return c.wsURL("g1", name) }
	bidder, err := dialWS(t, url("bidder"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		m, err := bidder.call("open "+auction+" 10m bad clients at scale", "open", 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if m.Outcome == "success" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("open: %s", m.Raw)
		}
		time.Sleep(100 * time.Millisecond)
	}
	watchers := make([]*wsClient, good)
	for i := range watchers {
		w, err := dialWS(t, url(fmt.Sprintf("good%03d", i)), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.call("watch "+auction, "watching", 10*time.Second); err != nil {
			t.Fatal(err)
		}
		watchers[i] = w
	}
	var next atomic.Int64
	base, missed := deliveryP99(t, bidder, watchers, auction, &next, rate, phase)
	t.Logf("%d watchers, %d bids/s: p99 delivery %v, %d pushes missed", good, rate, base.Round(time.Microsecond), missed)
	if missed > 0 {
		t.Errorf("%d pushes missed without bad clients", missed)
	}

	// The misbehaving connections, each run by a goroutine that stops
	// when the test's phase ends or its connection does.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var answered, cutOff, stuck atomic.Int64
	closeCodes := sync.Map{} // kind -> []int, for the log
	noteClose := func(kind string, err error) {
		code := -1
		if ce, ok := err.(*websocket.CloseError); ok {
			code = ce.Code
		}
		v, _ := closeCodes.LoadOrStore(kind, &sync.Map{})
		n, _ := v.(*sync.Map).LoadOrStore(code, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	dialBad := func(d *websocket.Dialer, name string) *websocket.Conn {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, _, err := d.DialContext(ctx, url(name), nil)
		if err != nil {
			t.Errorf("dial %s: %v", name, err)
			return nil
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
	plain := &websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	garbage := []string{"bid", "bid s1 -5", "bid s1 lots", "watch", "{\"op\":", "{\"op\":\"bid\",\"amount\":\"x\"}",
		"\x00\x01\x02", "frobnicate the auction", strings.Repeat("z", 3000), `{"op":"open","auction":""}`}
	for i := 0; i < perKind; i++ {
		// Garbage lines, replies read: each is answered with an error.
		if conn := dialBad(plain, fmt.Sprintf("garbage%03d", i)); conn != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := 0; ; j++ {
					select {
					case <-stop:
						return
					case <-time.After(time.Duration(500+rand.IntN(1000)) * time.Millisecond):
					}
					_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if err := conn.WriteMessage(websocket.TextMessage, []byte(garbage[j%len(garbage)])); err != nil {
						return
					}
					_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, data, err := conn.ReadMessage(); err != nil {
						noteClose("garbage", err)
						return
					} else if strings.Contains(string(data), `"type":"error"`) {
						answered.Add(1)
					}
				}
			}()
		}
		// Frames over the read limit: cut off.
		if conn := dialBad(plain, fmt.Sprintf("huge%03d", i)); conn != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				_ = conn.WriteMessage(websocket.TextMessage, []byte("watch "+strings.Repeat("x", 8192)))
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				for {
					if _, _, err := conn.ReadMessage(); err != nil {
						noteClose("huge", err)
						if websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
							cutOff.Add(1)
						}
						return
					}
				}
			}()
		}
		// Binary junk, replies read.
		if conn := dialBad(plain, fmt.Sprintf("binary%03d", i)); conn != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				junk := make([]byte, 64)
				for {
					select {
					case <-stop:
						return
					case <-time.After(time.Duration(500+rand.IntN(1000)) * time.Millisecond):
					}
					for k := range junk {
						junk[k] = byte(rand.IntN(256))
					}
					_ = conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
					if err := conn.WriteMessage(websocket.BinaryMessage, junk); err != nil {
						return
					}
					_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, data, err := conn.ReadMessage(); err != nil {
						noteClose("binary", err)
						return
					} else if strings.Contains(string(data), `"type":"error"`) {
						answered.Add(1)
					}
				}
			}()
		}
		// Watch, send a burst of commands whose replies outgrow the
		// connection's buffers, and never read: cut off once the gateway's
		// write to it has waited write_timeout.
		if conn := dialBad(dialSmallBuffer, fmt.Sprintf("deaf%03d", i)); conn != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				burst := []byte(strings.TrimSuffix(strings.Repeat("help\n", 400), "\n"))
				_ = conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
				_ = conn.WriteMessage(websocket.TextMessage, []byte("watch "+auction))
				// 1,200 help replies of about 400 bytes: several times what
				// the gateway's queue and both socket buffers hold.
				for range 3 {
					_ = conn.WriteMessage(websocket.TextMessage, burst)
				}
				<-stop
				// Read the raw socket, answering no ping: a connection the
				// gateway cut off ends (after what it had sent), one it
				// still serves stays silent until the deadline.
				raw := conn.UnderlyingConn()
				_ = raw.SetReadDeadline(time.Now().Add(3 * time.Second))
				buf := make([]byte, 64<<10)
				for {
					if _, err := raw.Read(buf); err != nil {
						var ne net.Error
						if errors.As(err, &ne) && ne.Timeout() {
							stuck.Add(1)
						} else {
							cutOff.Add(1)
						}
						return
					}
				}
			}()
		}
	}
	time.Sleep(500 * time.Millisecond) // let the flood start
	loaded, missed := deliveryP99(t, bidder, watchers, auction, &next, rate, phase)
	t.Logf("the same with %d misbehaving connections: p99 delivery %v, %d pushes missed", 4*perKind,
		loaded.Round(time.Microsecond), missed)
	// The deaf connections are cut off once a write has waited
	// write_timeout (2s): the phase took longer than that.
	close(stop)
	wg.Wait()
	closeCodes.Range(func(k, v any) bool {
		var parts []string
		v.(*sync.Map).Range(func(code, n any) bool {
			parts = append(parts, fmt.Sprintf("%v×%d", code, n.(*atomic.Int64).Load()))
			return true
		})
		t.Logf("%s connections ended with close codes %s", k, strings.Join(parts, " "))
		return true
	})
	t.Logf("misbehaving connections: %d error replies read, %d connections cut off, %d still open at the end",
		answered.Load(), cutOff.Load(), stuck.Load())
	if missed > 0 {
		t.Errorf("%d pushes missed with bad clients", missed)
	}
	if limit := 2 * max(base, 10*time.Millisecond); loaded > limit {
		t.Errorf("p99 delivery %v with bad clients, over twice %v without (limit %v)", loaded, base, limit)
	}
	if answered.Load() < int64(perKind) {
		t.Errorf("only %d error replies to %d connections sending garbage", answered.Load(), 2*perKind)
	}
	if n := cutOff.Load(); n < 2*perKind {
		t.Errorf("only %d of the %d oversized and deaf connections were cut off", n, 2*perKind)
	}
}
