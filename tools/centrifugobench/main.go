// Command centrifugobench measures Centrifugo, the WebSocket fan-out server
// gavel's gateway is compared with, the way `gavel bench ws` measures the
// gateway: N idle WebSocket subscribers of a few channels, the server's
// memory per idle subscriber (from its Prometheus metrics, before minus
// after, divided by N), then publications at R per second through its HTTP
// API and the delivery latency from the publish call's reply to the push
// reaching each subscriber, with missed and duplicated publications.
//
// Centrifugo is a Go binary (go install
// github.com/centrifugal/centrifugo/v6@v6.9.1); scripts/bench-centrifugo
// starts it with the configuration this tool expects (anonymous
// connections, client subscriptions allowed, an HTTP API key, metrics on)
// and runs this tool against it.
//
//	go run ./tools/centrifugobench --addr 127.0.0.1:8000 --api-key bench --subscribers 20000 --rate 1000 --duration 30s
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8000", "Centrifugo's HTTP address")
	apiKey := flag.String("api-key", "bench", "Centrifugo's http_api.key")
	subscribers := flag.Int("subscribers", 2000, "idle WebSocket subscribers")
	channels := flag.Int("channels", 8, "channels the subscribers are spread over")
	rate := flag.Int("rate", 500, "publications per second, over every channel")
	duration := flag.Duration("duration", 10*time.Second, "how long to publish")
	flag.Parse()
	if err := run(*addr, *apiKey, *subscribers, *channels, *rate, *duration); err != nil {
		fmt.Fprintln(os.Stderr, "centrifugobench:", err)
		os.Exit(1)
	}
}

// subscriber is one WebSocket connection subscribed to one channel; its
// reader records when each publication's seq arrived.
type subscriber struct {
	conn    *websocket.Conn
	channel int
	mu      sync.Mutex
	got     map[int64]time.Time
	dups    int
}

func run(addr, apiKey string, n, channels, rate int, d time.Duration) error {
	raiseFileLimit()
	metricsURL := "http://" + addr + "/metrics"
	before, err := memory(metricsURL)
	if err != nil {
		return err
	}
	subs := make([]*subscriber, n)
	var failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	start := time.Now()
	for i := range subs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s, err := subscribe(addr, i, i%channels)
			if err != nil {
				if failed.Add(1) <= 3 {
					fmt.Fprintln(os.Stderr, "subscribe:", err)
				}
				return
			}
			subs[i] = s
		}()
	}
	wg.Wait()
	fmt.Fprintf(os.Stderr, "%d subscribers in %v, %d failed\n", n-int(failed.Load()), time.Since(start).Round(time.Millisecond), failed.Load())
	time.Sleep(3 * time.Second)
	var after memSample
	for i := 0; i < 3; i++ {
		m, err := memory(metricsURL)
		if err != nil {
			return err
		}
		if i == 0 || m.rss < after.rss {
			after = m
		}
		time.Sleep(time.Second)
	}
	live := n - int(failed.Load())
	fmt.Printf("centrifugo: %d idle subscribers: rss %.1f KB/subscriber, heap %.1f KB/subscriber\n", live,
		float64(after.rss-before.rss)/float64(live)/1024, float64(after.heap-before.heap)/float64(live)/1024)

	// Publish at rate, round robin over the channels.
	client := &http.Client{Timeout: 5 * time.Second}
	published := map[int64]time.Time{} // seq -> publish reply received
	var pubMu sync.Mutex
	var pubWG sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	var seq int64
	for end := time.Now().Add(d); time.Now().Before(end); {
		<-tick.C
		seq++
		s := seq
		pubWG.Add(1)
		go func() {
			defer pubWG.Done()
			body := fmt.Sprintf(`{"channel":"bench%d","data":{"seq":%d}}`, s%int64(channels), s)
			req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/api/publish", strings.NewReader(body))
			req.Header.Set("X-API-Key", apiKey)
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				fmt.Fprintln(os.Stderr, "publish:", err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			pubMu.Lock()
			published[s] = time.Now()
			pubMu.Unlock()
		}()
	}
	tick.Stop()
	pubWG.Wait()
	time.Sleep(2 * time.Second)
	var lat []time.Duration
	missed, dups, expected := 0, 0, 0
	for _, s := range subs {
		if s == nil {
			continue
		}
		s.mu.Lock()
		dups += s.dups
		for q, at := range published {
			if int(q%int64(channels)) != s.channel {
				continue
			}
			expected++
			if got, ok := s.got[q]; ok {
				lat = append(lat, got.Sub(at))
			} else {
				missed++
			}
		}
		s.mu.Unlock()
		s.conn.Close()
	}
	slices.Sort(lat)
	pct := func(p int) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, len(lat)*p/100)].Round(10 * time.Microsecond)
	}
	fmt.Printf("centrifugo: %d publications at %d/s: pushes expected %d, received %d, missed %d, duplicated %d; delivery p50 %v p90 %v p99 %v max %v\n",
		len(published), rate, expected, len(lat), missed, dups, pct(50), pct(90), pct(99), pct(100))
	return nil
}

// subscribe connects subscriber i and subscribes it to channel ch.
func subscribe(addr string, i, ch int) (*subscriber, error) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/30000), byte(1+i%250))}
	if !strings.HasPrefix(addr, "127.") {
		local = nil
	}
	d := &websocket.Dialer{HandshakeTimeout: 10 * time.Second, ReadBufferSize: 512, WriteBufferSize: 512,
		NetDialContext: (&net.Dialer{LocalAddr: local}).DialContext}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, _, err := d.DialContext(ctx, "ws://"+addr+"/connection/websocket", nil)
	if err != nil {
		return nil, err
	}
	cmds := fmt.Sprintf("{\"id\":1,\"connect\":{}}\n{\"id\":2,\"subscribe\":{\"channel\":\"bench%d\"}}", ch)
	if err := conn.WriteMessage(websocket.TextMessage, []byte(cmds)); err != nil {
		conn.Close()
		return nil, err
	}
	s := &subscriber{conn: conn, channel: ch, got: map[int64]time.Time{}}
	subscribed := make(chan error, 1)
	go s.read(subscribed)
	select {
	case err := <-subscribed:
		if err != nil {
			conn.Close()
			return nil, err
		}
	case <-time.After(10 * time.Second):
		conn.Close()
		return nil, fmt.Errorf("no subscribe reply within 10s")
	}
	return s, nil
}

// read handles every frame: replies, pushes, and the server's pings
// (empty objects, answered with an empty object).
func (s *subscriber) read(subscribed chan<- error) {
	var msg struct {
		ID    int             `json:"id"`
		Error json.RawMessage `json:"error"`
		Push  *struct {
			Pub *struct {
				Data struct {
					Seq int64 `json:"seq"`
				} `json:"data"`
			} `json:"pub"`
		} `json:"push"`
	}
	for {
		_, data, err := s.conn.ReadMessage()
		now := time.Now()
		if err != nil {
			select {
			case subscribed <- err:
			default:
			}
			return
		}
		for _, line := range bytes.Split(data, []byte("\n")) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			if string(line) == "{}" {
				_ = s.conn.WriteMessage(websocket.TextMessage, []byte("{}"))
				continue
			}
			msg.ID, msg.Error, msg.Push = 0, nil, nil
			if err := json.Unmarshal(line, &msg); err != nil {
				continue
			}
			switch {
			case msg.ID == 2 && len(msg.Error) > 0:
				subscribed <- fmt.Errorf("subscribe: %s", msg.Error)
				return
			case msg.ID == 2:
				subscribed <- nil
			case msg.Push != nil && msg.Push.Pub != nil:
				s.mu.Lock()
				if _, dup := s.got[msg.Push.Pub.Data.Seq]; dup {
					s.dups++
				} else {
					s.got[msg.Push.Pub.Data.Seq] = now
				}
				s.mu.Unlock()
			}
		}
	}
}

// memSample is a server's resident set and Go heap in use.
type memSample struct{ rss, heap float64 }

// memory reads process_resident_memory_bytes and go_memstats_heap_inuse_bytes.
func memory(url string) (memSample, error) {
	resp, err := http.Get(url)
	if err != nil {
		return memSample{}, fmt.Errorf("metrics: %w (is prometheus.enabled set?)", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return memSample{}, err
	}
	var m memSample
	for _, line := range strings.Split(string(body), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[1], 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "process_resident_memory_bytes":
			m.rss = v
		case "go_memstats_heap_inuse_bytes":
			m.heap = v
		}
	}
	if m.rss == 0 {
		return m, fmt.Errorf("metrics at %s: no process_resident_memory_bytes", url)
	}
	return m, nil
}

// raiseFileLimit lets this process hold tens of thousands of connections.
func raiseFileLimit() {
	var l syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l) == nil {
		if l.Max < 1<<20 {
			l.Max = 1 << 20 // root may raise the hard limit; others keep theirs
		}
		l.Cur = l.Max
		if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l) != nil {
			_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l)
			l.Cur = l.Max
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l)
		}
	}
}
