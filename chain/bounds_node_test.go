package chain

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
)

// boundedLimits are the limits of the bounded clusters below.
var boundedLimits = auction.Limits{RetentionMs: 150, MaxRequestIDs: 40, MaxBidders: 3}

// startBoundedNode starts node id with a data dir under dir, the limits
// above, frequent snapshots and small snapshot chunks; it joins c.
func startBoundedNode(t *testing.T, c *grpcCluster, dir, id string, l net.Listener, initial *api.ChainConfig) *Node {
	t.Helper()
	node, err := NewNode(NodeOptions{ID: id, Addr: l.Addr().String(), Initial: initial,
		Tick: 5 * time.Millisecond, HelloRetry: 20 * time.Millisecond, DataDir: filepath.Join(dir, id), Cluster: "test",
		Sync: true, SnapshotEvery: 25, Limits: boundedLimits, SnapshotChunkBytes: 700, MaxWatchStreams: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := node.Start(l); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(node.Stop)
	c.nodes[id] = node
	if c.conns[id] == nil {
		conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c.conns[id] = conn
	}
	return node
}

// listen listens on a free loopback port.
func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// waitStatus polls id's status until ok holds, for at most 10s.
func waitStatus(t *testing.T, c *grpcCluster, id, what string, ok func(*api.NodeStatus) bool) *api.NodeStatus {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.admin(id).Status(ctx, &api.StatusRequest{})
		cancel()
		if err == nil && ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s: not within 10s (last status %v, %v)", id, what, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNodeBounds: on nodes with a data dir and limits, closed auctions
// retire into the archive, from which results are still read (after a
// restart too) and bids and opens of their ids are answered; a new bidder
// past the limit is refused; a node that joins afterwards gets the state
// and the archive by a chunked snapshot and serves archived results as
// the tail.
func TestNodeBounds(t *testing.T) {
	dir := t.TempDir()
	c := &grpcCluster{t: t, nodes: map[string]*Node{}, addrs: map[string]string{}, conns: map[string]*grpc.ClientConn{}}
	lis := map[string]net.Listener{"n1": listen(t), "n2": listen(t), "n3": listen(t)}
	member := func(id string) *api.Member { return &api.Member{Id: id, Addr: lis[id].Addr().String()} }
	cfg := &api.ChainConfig{Epoch: 1, Chain: []*api.Member{member("n1"), member("n2")}}
	for _, id := range []string{"n1", "n2"} {
		startBoundedNode(t, c, dir, id, lis[id], cfg)
	}
	t.Cleanup(c.checkConverged)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const n = 30
	for i := range n {
		id := fmt.Sprintf("q%02d", i)
		rep, err := c.client("n1").OpenAuction(ctx, &api.OpenAuctionRequest{Open: &api.OpenAuction{
			Auction: id, DurationMs: 400, MinIncrement: 1, RequestId: "open-" + id}})
		if err != nil || rep.Outcome != api.Outcome_SUCCESS {
			t.Fatalf("open %s: %v %v", id, rep, err)
		}
		bidOK(t, c, "n1", id, fmt.Sprint("b", i%4), int64(10+i))
	}
	for _, id := range []string{"n1", "n2"} {
		waitStatus(t, c, id, "every auction retired", func(st *api.NodeStatus) bool {
			return st.Retired == n && st.Auctions == 0
		})
	}
	res, err := c.client("n1").Result(ctx, &api.ResultRequest{Auction: "q07"})
	if err != nil || !res.Info.Retired || res.Info.State != api.AuctionState_CLOSED_STATE ||
		res.Info.Bidder != "b3" || res.Info.Highest != 17 || res.Node != "n2" {
		t.Fatalf("result of a retired auction: %v %v", res, err)
	}
	rep, err := c.client("n2").Bid(ctx, &api.BidRequest{Auction: "q07", Bidder: "z", Amount: 99, RequestId: "late"})
	if err != nil || rep.Reason != api.Reason_CLOSED {
		t.Fatalf("bid on a retired auction: %v %v", rep, err)
	}
	orep, err := c.client("n1").OpenAuction(ctx, &api.OpenAuctionRequest{Open: &api.OpenAuction{
		Auction: "q07", DurationMs: 50_000, MinIncrement: 1, RequestId: "reopen"}})
	if err != nil || orep.Reason != api.Reason_AUCTION_EXISTS {
		t.Fatalf("open of a retired auction's id: %v %v", orep, err)
	}

	// Bidders per auction.
	c.open(t, "n1", "big")
	for i := range 3 {
		bidOK(t, c, "n1", "big", fmt.Sprint("v", i), int64(1+i))
	}
	rep, err = c.client("n1").Bid(ctx, &api.BidRequest{Auction: "big", Bidder: "v9", Amount: 50, RequestId: "v9"})
	if err != nil || rep.Reason != api.Reason_TOO_MANY_BIDDERS {
		t.Fatalf("fourth bidder: %v %v", rep, err)
	}
	bidOK(t, c, "n1", "big", "v0", 60)

	// Watch streams: two at most; a watch of a closed auction gets its
	// result and ends at once, taking none.
	w1, _ := watchEvents(ctx, c, "n2", "big", 0)
	w2, _ := watchEvents(ctx, c, "n2", "big", 0)
	<-w1
	<-w2
	if _, done := watchEvents(ctx, c, "n2", "big", 0); status.Code(<-done) != codes.ResourceExhausted {
		t.Fatal("a third watch stream was not refused")
	}
	closed, done := watchEvents(ctx, c, "n2", "q03", 0)
	if ev := <-closed; ev.GetInfo().GetState() != api.AuctionState_CLOSED_STATE || !ev.GetInfo().GetRetired() {
		t.Fatalf("watch of a retired auction began with %v", ev)
	}
	if err := <-done; err != io.EOF {
		t.Fatalf("watch of a retired auction ended with %v, want the end of the stream", err)
	}

	// Results survive a restart (the retirements are in the archive).
	c.nodes["n2"].Stop()
	lis["n2"] = listenAt(t, lis["n2"].Addr().String())
	startBoundedNode(t, c, dir, "n2", lis["n2"], cfg)
	res, err = c.client("n2").Result(ctx, &api.ResultRequest{Auction: "q11"})
	for err != nil && status.Code(err) == codes.Unavailable && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
		res, err = c.client("n2").Result(ctx, &api.ResultRequest{Auction: "q11"})
	}
	if err != nil || !res.Info.Retired || res.Info.Highest != 21 {
		t.Fatalf("result after a restart: %v %v", res, err)
	}

	// A node joins: n2's log is compacted, so n3 gets a snapshot, in
	// chunks, with the archive; then it becomes the tail.
	startBoundedNode(t, c, dir, "n3", lis["n3"], nil)
	joining := &api.ChainConfig{Epoch: 2, Chain: cfg.Chain, Joining: []*api.Member{member("n3")}}
	for _, id := range []string{"n1", "n2", "n3"} {
		if _, err := c.admin(id).SetConfig(ctx, joining); err != nil {
			t.Fatalf("set config on %s: %v", id, err)
		}
	}
	tail := waitStatus(t, c, "n2", "applied", func(*api.NodeStatus) bool { return true })
	waitStatus(t, c, "n3", "caught up with the tail", func(st *api.NodeStatus) bool { return st.Applied >= tail.Applied })
	appended := &api.ChainConfig{Epoch: 3, Chain: []*api.Member{member("n1"), member("n2"), member("n3")}}
	for _, id := range []string{"n1", "n2", "n3"} {
		if _, err := c.admin(id).SetConfig(ctx, appended); err != nil {
			t.Fatalf("set config on %s: %v", id, err)
		}
	}
	waitStatus(t, c, "n3", "readable tail", func(st *api.NodeStatus) bool { return st.Readable })
	if snaps := c.nodes["n3"].snapshotStats(); snaps.Installed == 0 || snaps.ChunksReceived < 3 {
		t.Fatalf("n3 joined without a chunked snapshot: %+v", snaps)
	}
	for i := range n {
		id := fmt.Sprintf("q%02d", i)
		res, err := c.client("n3").Result(ctx, &api.ResultRequest{Auction: id})
		if err != nil || !res.Info.Retired || res.Info.Highest != int64(10+i) || res.Node != "n3" {
			t.Fatalf("result of %s at the new tail: %v %v", id, res, err)
		}
	}
}

// snapshotStats reads the replica's snapshot counts on the driver.
func (n *Node) snapshotStats() SnapshotStats {
	var s SnapshotStats
	_ = n.do(context.Background(), func(r *Replica) { s = r.SnapshotStats() })
	return s
}

// listenAt listens on addr again (a restarted node keeps its address).
func listenAt(t *testing.T, addr string) net.Listener {
	t.Helper()
	for range 50 {
		if l, err := net.Listen("tcp", addr); err == nil {
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("cannot listen on %s again", addr)
	return nil
}

// TestStatusDigestCached: Status reports the digest of the state at the
// applied seq, computed once per seq: a second Status at the same seq
// takes it from the cache, and a new update gives a new one.
func TestStatusDigestCached(t *testing.T) {
	c := startGRPCCluster(t, 1)
	n := c.nodes["n1"]
	c.open(t, "n1", "a1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	digestNow := func() (string, uint64) {
		var d [32]byte
		var seq uint64
		_ = n.do(ctx, func(r *Replica) { d, seq = r.State().Digest(), r.Applied() })
		return hex.EncodeToString(d[:8]), seq
	}
	st1, err := c.admin("n1").Status(ctx, &api.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	want, seq := digestNow()
	if st1.StateDigest != want || st1.Applied != seq {
		t.Fatalf("status digest %s at %d, want %s at %d", st1.StateDigest, st1.Applied, want, seq)
	}
	if d, ok := n.digest.get(n.replica.StateGen(), seq); !ok || d != want {
		t.Fatalf("digest of seq %d not cached: %q %v", seq, d, ok)
	}
	n.digest.mu.Lock()
	n.digest.hex = "cached" // a second Status at this seq must not recompute
	n.digest.mu.Unlock()
	if st2, _ := c.admin("n1").Status(ctx, &api.StatusRequest{}); st2.StateDigest != "cached" {
		t.Fatalf("second status at the same seq recomputed the digest: %s", st2.StateDigest)
	}
	bidOK(t, c, "n1", "a1", "alice", 5)
	st3, _ := c.admin("n1").Status(ctx, &api.StatusRequest{})
	if want, seq := digestNow(); st3.StateDigest != want || st3.Applied != seq {
		t.Fatalf("after a bid: status digest %s at %d, want %s at %d", st3.StateDigest, st3.Applied, want, seq)
	}
}
