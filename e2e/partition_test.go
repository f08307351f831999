package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/chain"
	"github.com/gavel-auction/gavel/checker"
	"github.com/gavel-auction/gavel/master"
)

// faultNet is the network between the in-process masters and nodes of a
// partition test: every connection a node opens goes through its dialer,
// which refuses, and cuts, the connections of a partitioned process.
// Connections the test's clients open are not affected, so a test can
// still ask a partitioned node what it would answer.
type faultNet struct {
	// mu guards the fields below.
	mu    sync.Mutex
	ids   map[string]string // addr -> process id
	cut   map[string]bool   // partitioned process ids
	conns []trackedConn
}

type trackedConn struct {
	from, to string
	conn     net.Conn
}

func newFaultNet() *faultNet {
	return &faultNet{ids: map[string]string{}, cut: map[string]bool{}}
}

func (f *faultNet) register(id, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids[addr] = id
}

// dialOption is the grpc.DialOption of process from.
func (f *faultNet) dialOption(from string) grpc.DialOption {
	return grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		f.mu.Lock()
		to := f.ids[addr]
		blocked := f.cut[from] || f.cut[to]
		f.mu.Unlock()
		if blocked {
			return nil, fmt.Errorf("faultnet: %s -> %s (%s) is partitioned", from, to, addr)
		}
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.cut[from] || f.cut[to] {
			c.Close()
			return nil, errors.New("faultnet: partitioned while dialing")
		}
		f.conns = append(f.conns, trackedConn{from: from, to: to, conn: c})
		return c, nil
	})
}

// partition cuts id off from every other process: its connections are
// closed and new ones refused, in both directions.
func (f *faultNet) partition(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cut[id] = true
	kept := f.conns[:0]
	for _, tc := range f.conns {
		if tc.from == id || tc.to == id {
			tc.conn.Close()
			continue
		}
		kept = append(kept, tc)
	}
	f.conns = kept
}

// heal ends id's partition.
func (f *faultNet) heal(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.cut, id)
}

// inProcessCluster runs 3 masters and 3 nodes in the test process, on
// loopback, wired through a faultNet. Their logs go to files in the test's
// directory, printed when the test fails.
type inProcessCluster struct {
	*cluster
	net     *faultNet
	masters []*master.Master
	nodes   map[string]*chain.Node
	logs    []string
}

func newInProcessCluster(t *testing.T) *inProcessCluster {
	t.Helper()
	c := &inProcessCluster{
		cluster: &cluster{t: t, dir: t.TempDir(), addrs: map[string]string{}, procs: map[string]*proc{},
			conns: map[string]*grpc.ClientConn{}, inProcess: true},
		net: newFaultNet(), nodes: map[string]*chain.Node{},
	}
	t.Cleanup(c.stop)
	var peers []master.Peer
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("m%d", i)
		c.masterIDs = append(c.masterIDs, id)
		c.addrs[id] = freePort(t)
		peers = append(peers, master.Peer{ID: id, Addr: c.addrs[id], RaftAddr: freePort(t)})
		c.net.register(id, c.addrs[id])
	}
	for _, p := range peers {
		m, err := master.New(master.Options{ID: p.ID, Peers: peers, DataDir: filepath.Join(c.dir, p.ID),
			Heartbeat: 50 * time.Millisecond, FailureTimeout: failureTimeout, Lease: leaseDuration,
			Raft: master.RaftTiming{HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
				LeaderLeaseTimeout: 250 * time.Millisecond, CommitTimeout: 5 * time.Millisecond},
			Logger: c.logger(p.ID), RaftLog: c.logFile(p.ID + "-raft")})
		if err != nil {
			t.Fatal(err)
		}
		c.masters = append(c.masters, m)
		m.Start(c.listen(p.Addr))
	}
	c.leader(15 * time.Second)
	for i := 1; i <= 3; i++ {
		id := fmt.Sprintf("n%d", i)
		c.ids = append(c.ids, id)
		c.addrs[id] = freePort(t)
		c.net.register(id, c.addrs[id])
		n, err := chain.NewNode(chain.NodeOptions{ID: id, Addr: c.addrs[id], Tick: 5 * time.Millisecond,
			HelloRetry: 20 * time.Millisecond, Masters: c.masterAddrs(), Heartbeat: 50 * time.Millisecond,
			DialOptions: []grpc.DialOption{c.net.dialOption(id)}, Logger: c.logger(id)})
		if err != nil {
			t.Fatal(err)
		}
		c.nodes[id] = n
		if err := n.Start(c.listen(c.addrs[id])); err != nil {
			t.Fatal(err)
		}
		want := slices.Clone(c.ids)
		c.waitConfig(fmt.Sprintf("chain %v", want), 15*time.Second, func(cfg *api.ChainConfig) bool {
			return slices.Equal(chainIDs(cfg), want) && len(cfg.Joining) == 0
		})
	}
	return c
}

// masterAddrs lists the masters' gRPC addresses.
func (c *inProcessCluster) masterAddrs() []string {
	var out []string
	for _, id := range c.masterIDs {
		out = append(out, c.addrs[id])
	}
	return out
}

func (c *inProcessCluster) listen(addr string) net.Listener {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		c.t.Fatal(err)
	}
	return lis
}

func (c *inProcessCluster) logFile(name string) *os.File {
	path := filepath.Join(c.dir, name+".log")
	f, err := os.Create(path)
	if err != nil {
		c.t.Fatal(err)
	}
	c.logs = append(c.logs, path)
	c.t.Cleanup(func() { f.Close() })
	return f
}

func (c *inProcessCluster) logger(id string) *slog.Logger {
	return slog.New(slog.NewTextHandler(c.logFile(id), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// stop stops every node and master, bounded in time, and shows the logs of
// a failed test.
func (c *inProcessCluster) stop() {
	done := make(chan struct{})
	go func() {
		for _, n := range c.nodes {
			n.Stop()
		}
		for _, m := range c.masters {
			m.Stop()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		c.t.Errorf("in-process cluster did not stop within 15s")
	}
	if c.t.Failed() {
		for _, path := range c.logs {
			if b, err := os.ReadFile(path); err == nil {
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				if len(lines) > 30 {
					lines = lines[len(lines)-30:]
				}
				c.t.Logf("---- last lines of %s ----\n%s", filepath.Base(path), strings.Join(lines, "\n"))
			}
		}
	}
}

// probe is one read sent straight to a node.
type probe struct {
	start, end time.Time
	node       string // who was asked
	servedBy   string // who answered ("" on error)
}

// TestPartitionedTailStopsServing cuts the tail off from the masters and
// the other nodes while bidders bid through the head and probes read at
// the tail directly (the probes are not cut off: a client on the tail's
// side of the partition). The tail must stop answering reads within its
// lease, before the master has installed a new tail; the new tail then
// serves; no read in the whole history is stale (porcupine). Healed, the
// old tail rejoins as a new member.
func TestPartitionedTailStopsServing(t *testing.T) {
	c := newInProcessCluster(t)
	w := newWorkload(c.cluster, "a1", "a2")
	w.start(4, 2)

	// Probes read a1 at n3 (the tail) and at n2 (the next tail), directly.
	var (
		probesMu sync.Mutex // guards probes
		probes   []probe
	)
	stopProbes := make(chan struct{})
	var probing sync.WaitGroup
	for _, id := range []string{"n3", "n2"} {
		probing.Add(1)
		go func() {
			defer probing.Done()
			cl := w.rec.NewClient()
			for {
				select {
				case <-stopProbes:
					return
				case <-time.After(2 * time.Millisecond):
				}
				op := cl.Call(checker.ResultInput("a1"))
				p := probe{start: time.Now(), node: id}
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				rep, err := c.auctions(id).Result(ctx, &api.ResultRequest{Auction: "a1"})
				cancel()
				p.end = time.Now()
				if err != nil {
					cl.Return(op, checker.UnknownOutput())
				} else {
					cl.Return(op, checker.ResultOutput(rep.Info))
					p.servedBy = rep.Node
				}
				probesMu.Lock()
				probes = append(probes, p)
				probesMu.Unlock()
			}
		}()
	}

	time.Sleep(time.Second)
	cut := time.Now()
	c.net.partition("n3")
	t.Logf("partitioned n3 (the tail) from masters and nodes")
	cfg := c.waitConfig("n3 removed", 5*time.Second, func(cfg *api.ChainConfig) bool {
		return !slices.Contains(chainIDs(cfg), "n3")
	})
	removed := time.Now()
	t.Logf("master removed n3 after %v: %s", removed.Sub(cut).Round(time.Millisecond), describeConfig(cfg))
	time.Sleep(time.Second)
	close(stopProbes)
	probing.Wait()

	// The old tail's last read and the new tail's first.
	var lastOld, firstNew probe
	for _, p := range probes {
		switch {
		case p.servedBy == "n3" && p.end.After(lastOld.end):
			lastOld = p
		case p.servedBy == "n2" && p.start.After(cut) && (firstNew.start.IsZero() || p.start.Before(firstNew.start)):
			firstNew = p
		}
	}
	if lastOld.end.IsZero() || firstNew.start.IsZero() {
		t.Fatalf("probes saw no read served by n3 (%v) or none by the new tail n2 (%v)", lastOld.end, firstNew.start)
	}
	t.Logf("n3's last read ended %v after the cut (lease %v); n2's first read as tail started %v after the cut",
		lastOld.end.Sub(cut).Round(time.Millisecond), leaseDuration, firstNew.start.Sub(cut).Round(time.Millisecond))
	if got := lastOld.end.Sub(cut); got > leaseDuration+150*time.Millisecond {
		t.Errorf("partitioned tail n3 served a read %v after the cut, beyond its %v lease", got, leaseDuration)
	}
	if !lastOld.end.Before(firstNew.start) {
		t.Errorf("old tail n3 served a read (ended %v after the cut) after the new tail n2 started serving (%v after the cut)",
			lastOld.end.Sub(cut), firstNew.start.Sub(cut))
	}

	// Healed, n3 comes back as a new member at the tail.
	c.net.heal("n3")
	c.waitConfig("n3 back as tail", 10*time.Second, func(cfg *api.ChainConfig) bool {
		ids := chainIDs(cfg)
		return len(ids) == 3 && ids[2] == "n3" && len(cfg.Joining) == 0
	})
	time.Sleep(300 * time.Millisecond)
	w.finish()
	w.verify(t, "n1", "n2", "n3")
}
