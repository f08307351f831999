package e2e

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
)

// The soak: many auctions opened, bid on through the gateway by many
// bidders, watched, closed and retired, while the memory of every node and
// of the gateway is sampled; then a new node joins by a chunked snapshot
// and serves the retired auctions' results. The defaults run in CI in well
// under a minute; the full run is
//
//	go test ./e2e -run TestSoak -timeout 60m -v -soak.auctions 100000 -soak.bidders 10000 -soak.workers 32
var (
	flagSoakAuctions = flag.Int("soak.auctions", 1500, "TestSoak: auctions opened, bid on, closed and retired")
	flagSoakBidders  = flag.Int("soak.bidders", 300, "TestSoak: distinct bidders")
	flagSoakWorkers  = flag.Int("soak.workers", 8,
		"TestSoak: WebSocket connections that bid (each logs in as one bidder after another) and watch")
	flagSoakSample = flag.Duration("soak.sample", time.Second, "TestSoak: how often memory is sampled")
	flagSoakCSV    = flag.String("soak.csv", "", "TestSoak: also write the samples to this CSV file")
)

// Timing of the soak's auctions: each is open for soakDuration, and retired
// soakRetention after it closes.
const (
	soakDuration  = 500 * time.Millisecond
	soakRetention = time.Second
	soakBids      = 3 // bids per auction, each by the next bidder
)

// soakSample is one reading of a process's /metrics (and /proc).
type soakSample struct {
	at       time.Duration // since the load began
	id       string
	rss      float64 // process_resident_memory_bytes
	anon     float64 // RssAnon of /proc/PID/status (the process's own memory, not file pages)
	heap     float64 // go_memstats_heap_inuse_bytes
	gauges   map[string]float64
	opened   int64 // auctions opened by then
	finished bool  // taken after the load ended
}

func TestSoak(t *testing.T) {
	nAuctions, nBidders, nWorkers := *flagSoakAuctions, *flagSoakBidders, *flagSoakWorkers
	maxRequestIDs := max(1000, nAuctions/5) // reached within the run
	// Snapshots often enough that the log no longer holds the first
	// updates when n4 joins: it needs a snapshot.
	snapshotEvery := max(1000, nAuctions/20)
	c := newSoakCluster(t, fmt.Sprintf(`chain:
  tick: 10ms
  hello_retry: 50ms
  snapshot_every: %d
  snapshot_chunk: 65536
  retention: %v
  max_request_ids: %d
  watch_history: 16
gateway:
  max_connections_per_bidder: 4
log:
  level: info
`, snapshotEvery, soakRetention, maxRequestIDs))
	nodes := []string{"n1", "n2", "n3"}
	watched := append(slices.Clone(nodes), "g1")

	cl, err := client.New([]string{c.addrs["n1"], c.addrs["n2"], c.addrs["n3"]}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	// Sampling.
	var (
		samplesMu sync.Mutex
		samples   []soakSample
		opened    atomic.Int64
		loadDone  atomic.Bool
	)
	start := time.Now()
	sample := func() {
		for _, id := range watched {
			s, err := c.scrape(id)
			if err != nil {
				t.Logf("sampling %s: %v", id, err)
				continue
			}
			s.at, s.opened, s.finished = time.Since(start).Round(time.Millisecond), opened.Load(), loadDone.Load()
			samplesMu.Lock()
			samples = append(samples, s)
			samplesMu.Unlock()
		}
	}
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		tick := time.NewTicker(*flagSoakSample)
		defer tick.Stop()
		for {
			sample()
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	// Openers: auctions a000000.. in order, handed to the bidders.
	ids := make(chan string, nWorkers) // opened just before they are bid on
	var openers sync.WaitGroup
	next := atomic.Int64{}
	for range 8 {
		openers.Add(1)
		go func() {
			defer openers.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(nAuctions) || ctx.Err() != nil {
					return
				}
				id := fmt.Sprintf("a%06d", i)
				octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
				rep, err := cl.Open(octx, &api.OpenAuction{Auction: id, Item: "soak item " + id,
					DurationMs: soakDuration.Milliseconds(), MinIncrement: 1})
				ocancel()
				if err != nil || rep.Outcome != api.Outcome_SUCCESS {
					t.Errorf("open %s: %v %v", id, rep, err)
					cancel()
					return
				}
				opened.Add(1)
				select {
				case ids <- id:
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() { openers.Wait(); close(ids) }()

	// Bidders: each worker connection takes auctions, watches each, and
	// bids soakBids times on it, logged in as the next bidder each time;
	// it unwatches an auction once its closed push arrives.
	var (
		bidder   atomic.Int64
		bids     atomic.Int64
		outcomes sync.Map // outcome -> *atomic.Int64
		workers  sync.WaitGroup
	)
	count := func(outcome string) {
		v, _ := outcomes.LoadOrStore(outcome, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	for w := range nWorkers {
		workers.Add(1)
		go func() {
			defer workers.Done()
			sc, err := dialSoak(ctx, c.wsURL("g1", ""))
			if err != nil {
				t.Errorf("worker %d: %v", w, err)
				cancel()
				return
			}
			defer sc.close()
			if err := sc.work(ctx, ids, func() string { return fmt.Sprintf("bidder%05d", bidder.Add(1)%int64(nBidders)) },
				func(outcome string) { bids.Add(1); count(outcome) }); err != nil && ctx.Err() == nil {
				t.Errorf("worker %d: %v", w, err)
				cancel()
			}
		}()
	}
	workers.Wait()
	loadTime := time.Since(start)
	loadDone.Store(true)
	if t.Failed() {
		t.FailNow()
	}
	var summary []string
	outcomes.Range(func(k, v any) bool {
		summary = append(summary, fmt.Sprintf("%s %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	slices.Sort(summary)
	t.Logf("load: %d auctions opened, %d bids (%s) by %d bidders over %d connections in %v",
		opened.Load(), bids.Load(), strings.Join(summary, ", "), nBidders, nWorkers, loadTime.Round(time.Millisecond))

	// Every auction closes and retires; then the state, the watch
	// histories and the gateway's upstreams are empty.
	deadline := time.Now().Add(soakDuration + soakRetention + 30*time.Second)
	for {
		done := true
		for _, id := range nodes {
			s, err := c.scrape(id)
			if err != nil || s.gauges["gavel_auctions"] != 0 || s.gauges["gavel_auctions_retired_total"] != float64(nAuctions) {
				done = false
			}
		}
		g, err := c.scrape("g1")
		done = done && err == nil && g.gauges["gavel_ws_upstream_watches"] == 0
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every auction retired (or the gateway still follows some) %v after the load", soakDuration+soakRetention+30*time.Second)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(2 * *flagSoakSample) // a few samples of the quiet cluster
	cancel()
	<-samplerDone
	sample()

	c.reportSoak(t, samples, watched)
	for _, s := range samples {
		if s.id == "g1" {
			continue
		}
		if n := s.gauges["gavel_request_ids"]; n > float64(maxRequestIDs+maxRequestIDs/4+5*soakBids) {
			t.Errorf("%s at %v remembers %.0f request ids, chain.max_request_ids is %d", s.id, s.at, n, maxRequestIDs)
		}
		// Auctions in memory: those open or retiring, at the rate they come.
		if n, limit := s.gauges["gavel_auctions"], float64(nAuctions); n > limit {
			t.Errorf("%s at %v holds %.0f auctions", s.id, s.at, n)
		}
	}
	checkFlat(t, samples, watched)

	// A new node joins: the tail sends it the state and the archive of
	// every retired auction in chunks; then it serves those results.
	joinStart := time.Now()
	c.start("n4")
	c.waitConfig("n4 appended", 5*time.Minute, func(cfg *api.ChainConfig) bool {
		return slices.Equal(chainIDs(cfg), []string{"n1", "n2", "n3", "n4"})
	})
	joinTime := time.Since(joinStart)
	s4, err := c.scrape("n4")
	if err != nil {
		t.Fatal(err)
	}
	chunks := s4.gauges["gavel_snapshot_chunks_received_total"]
	t.Logf("n4 joined in %v: %.0f snapshot chunks received, %.0f snapshots installed; RSS %.1f MiB",
		joinTime.Round(time.Millisecond), chunks, s4.gauges["gavel_snapshots_installed_total"], s4.rss/(1<<20))
	if chunks < 2 || s4.gauges["gavel_snapshots_installed_total"] < 1 {
		t.Errorf("n4 joined without a chunked snapshot: %.0f chunks", chunks)
	}
	for _, i := range []int{0, nAuctions / 2, nAuctions - 1} {
		id := fmt.Sprintf("a%06d", i)
		var (
			res *api.ResultReply
			err error
		)
		for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
			res, err = c.auctions("n4").Result(rctx, &api.ResultRequest{Auction: id}, grpc.WaitForReady(true))
			rcancel()
			if err == nil {
				break // served once n4, the new tail, has caught up
			}
		}
		if err != nil || !res.GetInfo().GetRetired() || res.GetInfo().GetState() != api.AuctionState_CLOSED_STATE || res.Node != "n4" {
			t.Errorf("result of %s from n4: %v %v", id, res, err)
		}
	}
	waitSameDigest(t, c, []string{"n1", "n2", "n3", "n4"})
}

// newSoakCluster starts 3 masters, nodes n1..n3 (n4 is in the
// configuration, for the join at the end) and gateway g1, with sections as
// the chain, gateway and log sections.
func newSoakCluster(t *testing.T, sections string) *cluster {
	t.Helper()
	g1 := freePort(t)
	c := newMasterClusterWith(t, masterClusterOptions{Nodes: 3, Spare: 1, Sections: sections,
		ExtraYAML: fmt.Sprintf("gateways:\n  - id: g1\n    addr: %s\n", g1)})
	c.gatewayIDs, c.addrs["g1"] = []string{"g1"}, g1
	c.startGateway("g1")
	return c
}

// scrape reads process id's /metrics (a node's http_addr, the gateway's
// addr) and its RssAnon from /proc.
func (c *cluster) scrape(id string) (soakSample, error) {
	addr := c.httpAddrs[id]
	if c.isGateway(id) {
		addr = c.addrs[id]
	}
	s := soakSample{id: id, gauges: map[string]float64{}}
	hc := &http.Client{Timeout: 5 * time.Second}
	resp, err := hc.Get("http://" + addr + "/metrics")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || strings.Contains(line, "{") {
			continue
		}
		name, value, ok := strings.Cut(line, " ")
		if !ok {
			continue
		}
		if v, err := strconv.ParseFloat(strings.Fields(value)[0], 64); err == nil {
			s.gauges[name] = v
		}
	}
	s.rss, s.heap = s.gauges["process_resident_memory_bytes"], s.gauges["go_memstats_heap_inuse_bytes"]
	c.mu.Lock()
	p := c.procs[id]
	c.mu.Unlock()
	if p != nil {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid)); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if f := strings.Fields(line); len(f) >= 2 && f[0] == "RssAnon:" {
					kb, _ := strconv.ParseFloat(f[1], 64)
					s.anon = kb * 1024
				}
			}
		}
	}
	return s, sc.Err()
}

// reportSoak logs the samples as a table per process, and writes them to
// -soak.csv.
func (c *cluster) reportSoak(t *testing.T, samples []soakSample, ids []string) {
	var csv strings.Builder
	csv.WriteString("seconds,process,opened,rss_bytes,rss_anon_bytes,heap_inuse_bytes,auctions,retired,request_ids,watch_histories,ws_connections,ws_upstreams,goroutines\n")
	for _, id := range ids {
		var b strings.Builder
		fmt.Fprintf(&b, "%s:\n%8s %8s %9s %9s %9s %9s %9s %9s %6s\n", id, "t", "opened", "RSS MiB", "anon MiB", "heap MiB",
			"auctions", "retired", "req ids", "gorout")
		for _, s := range samples {
			if s.id != id {
				continue
			}
			g := s.gauges
			fmt.Fprintf(&b, "%8s %8d %9.1f %9.1f %9.1f %9.0f %9.0f %9.0f %6.0f\n", s.at.Round(time.Second), s.opened,
				s.rss/(1<<20), s.anon/(1<<20), s.heap/(1<<20), g["gavel_auctions"], g["gavel_auctions_retired_total"],
				g["gavel_request_ids"], g["go_goroutines"])
			fmt.Fprintf(&csv, "%.3f,%s,%d,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f,%.0f\n", s.at.Seconds(), id, s.opened,
				s.rss, s.anon, s.heap, g["gavel_auctions"], g["gavel_auctions_retired_total"], g["gavel_request_ids"],
				g["gavel_node_watch_histories"], g["gavel_ws_connections"], g["gavel_ws_upstream_watches"], g["go_goroutines"])
		}
		t.Log(b.String())
	}
	if *flagSoakCSV != "" {
		if err := os.WriteFile(*flagSoakCSV, []byte(csv.String()), 0o644); err != nil {
			t.Errorf("writing %s: %v", *flagSoakCSV, err)
		}
	}
}

// checkFlat checks that each process's own memory (RssAnon) stays flat
// once auctions retire: its peak over the second half of the load is not
// much above its peak over the first half (after the first retirements).
func checkFlat(t *testing.T, samples []soakSample, ids []string) {
	for _, id := range ids {
		var load []soakSample
		for _, s := range samples {
			if s.id == id && !s.finished && s.gauges["gavel_auctions_retired_total"] > 0 || s.id == id && id == "g1" && !s.finished {
				load = append(load, s)
			}
		}
		if len(load) < 4 {
			t.Logf("%s: %d samples under load with auctions retiring: too few to judge flatness", id, len(load))
			continue
		}
		peak := func(ss []soakSample) float64 {
			m := 0.0
			for _, s := range ss {
				m = max(m, s.anon)
			}
			return m
		}
		first, second := peak(load[:len(load)/2]), peak(load[len(load)/2:])
		t.Logf("%s: peak RssAnon %.1f MiB in the first half of the load, %.1f MiB in the second", id, first/(1<<20), second/(1<<20))
		if second > first*1.3+24<<20 {
			t.Errorf("%s: memory grows under load: peak RssAnon %.1f MiB in the first half, %.1f MiB in the second",
				id, first/(1<<20), second/(1<<20))
		}
	}
}

// waitSameDigest waits until the nodes report one applied seq and state
// digest.
func waitSameDigest(t *testing.T, c *cluster, ids []string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		sts := c.statuses(ids...)
		first := sts[ids[0]]
		same := true
		for _, id := range ids[1:] {
			same = same && sts[id].Applied == first.Applied && sts[id].StateDigest == first.StateDigest
		}
		if same {
			t.Logf("%v: applied %d, digest %s, %d auctions retired", ids, first.Applied, first.StateDigest, first.Retired)
			return
		}
		if time.Now().After(deadline) {
			for _, id := range ids {
				t.Logf("%s: applied %d digest %s", id, sts[id].Applied, sts[id].StateDigest)
			}
			t.Fatal("the nodes did not converge on one state")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// soakConn is one bidding WebSocket connection of the soak: lean (it keeps
// no message it does not need), since it sees millions in a full run.
type soakConn struct {
	ws      *websocket.Conn
	replies chan wsMsg    // replies, in order
	closed  chan string   // auctions whose closed push arrived
	done    chan struct{} // closed when the reader ends
	err     error         // why the reader ended; read after done
}

func dialSoak(ctx context.Context, u string) (*soakConn, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ws, _, err := (&websocket.Dialer{HandshakeTimeout: 10 * time.Second}).DialContext(dctx, u, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", u, err)
	}
	sc := &soakConn{ws: ws, replies: make(chan wsMsg, 64), closed: make(chan string, 4096), done: make(chan struct{})}
	go sc.read()
	return sc, nil
}

func (sc *soakConn) read() {
	defer close(sc.done)
	for {
		_, data, err := sc.ws.ReadMessage()
		if err != nil {
			sc.err = err
			return
		}
		for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			m, err := parseWSMsg(line)
			if err != nil {
				sc.err = fmt.Errorf("unparsable %q: %v", line, err)
				return
			}
			switch {
			case m.Type == "closed":
				sc.closed <- m.Auction
			case m.isPush():
			default:
				sc.replies <- m
			}
		}
	}
}

func (sc *soakConn) close() {
	sc.ws.Close()
	<-sc.done
}

// call sends a command and takes the next reply, which must be of type typ.
func (sc *soakConn) call(line, typ string) (wsMsg, error) {
	sc.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if err := sc.ws.WriteMessage(websocket.TextMessage, []byte(line)); err != nil {
		return wsMsg{}, fmt.Errorf("send %q: %w", line, err)
	}
	select {
	case m := <-sc.replies:
		if m.Type != typ {
			return m, fmt.Errorf("%q: got %s (%s%s), want %s", line, m.Type, m.Error, m.Detail, typ)
		}
		return m, nil
	case <-sc.done:
		return wsMsg{}, fmt.Errorf("%q: connection ended: %v", line, sc.err)
	case <-time.After(30 * time.Second):
		return wsMsg{}, fmt.Errorf("%q: no reply within 30s", line)
	}
}

// work bids on the auctions of ids until it is closed, logged in as
// next() for each bid; outcome is told each bid's outcome.
func (sc *soakConn) work(ctx context.Context, ids <-chan string, next func() string, outcome func(string)) error {
	watching := 0
	unwatch := func(block bool) error {
		for watching > 0 {
			var a string
			if block {
				select {
				case a = <-sc.closed:
				case <-time.After(soakDuration + 30*time.Second):
					return fmt.Errorf("%d watched auctions not closed %v after the last bid", watching, soakDuration+30*time.Second)
				}
			} else {
				select {
				case a = <-sc.closed:
				default:
					return nil
				}
			}
			if _, err := sc.call("unwatch "+a, "unwatched"); err != nil {
				return err
			}
			watching--
		}
		return nil
	}
	for id := range ids {
		if ctx.Err() != nil {
			return nil
		}
		if _, err := sc.call("watch "+id, "watching"); err != nil {
			return err
		}
		watching++
		for k := range soakBids {
			if _, err := sc.call("login "+next(), "login"); err != nil {
				return err
			}
			rep, err := sc.call(fmt.Sprintf("bid %s %d", id, 10*(k+1)), "bid")
			if err != nil {
				return err
			}
			outcome(rep.Outcome + "/" + rep.Reason)
		}
		if err := unwatch(false); err != nil {
			return err
		}
	}
	return unwatch(true)
}
