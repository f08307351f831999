package chain

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
)

// grpcCluster is n real Nodes on loopback listeners, driven over gRPC.
type grpcCluster struct {
	t     *testing.T
	nodes map[string]*Node
	addrs map[string]string
	conns map[string]*grpc.ClientConn
	cfg   *api.ChainConfig
}

func startGRPCCluster(t *testing.T, n int) *grpcCluster {
	t.Helper()
	c := &grpcCluster{t: t, nodes: map[string]*Node{}, addrs: map[string]string{}, conns: map[string]*grpc.ClientConn{}}
	lis := map[string]net.Listener{}
	cfg := &api.ChainConfig{Epoch: 1}
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lis[id] = l
		c.addrs[id] = l.Addr().String()
		cfg.Chain = append(cfg.Chain, &api.Member{Id: id, Addr: l.Addr().String()})
	}
	c.cfg = cfg
	for _, m := range cfg.Chain {
		c.startNode(m.Id, lis[m.Id], cfg)
	}
	t.Cleanup(c.checkConverged)
	return c
}

// checkConverged is the gRPC cluster's end-of-test invariant check: every
// node still running in the latest configuration reaches the same applied
// sequence number and the same state digest.
func (c *grpcCluster) checkConverged() {
	deadline := time.Now().Add(5 * time.Second)
	for {
		var digests []string
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		for id, node := range c.nodes {
			select {
			case <-node.stop:
				continue // stopped by the test
			default:
			}
			st, err := c.admin(id).Status(ctx, &api.StatusRequest{})
			if err != nil || st.Role == api.Role_REMOVED {
				continue
			}
			digests = append(digests, fmt.Sprintf("%d/%s", st.Applied, st.StateDigest))
		}
		cancel()
		same := true
		for _, d := range digests {
			same = same && d == digests[0]
		}
		if same {
			return
		}
		if time.Now().After(deadline) {
			c.t.Errorf("nodes did not converge on one state: %v", digests)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *grpcCluster) startNode(id string, l net.Listener, initial *api.ChainConfig) {
	node, err := NewNode(NodeOptions{ID: id, Addr: l.Addr().String(), Initial: initial,
		Tick: 5 * time.Millisecond, HelloRetry: 20 * time.Millisecond})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := node.Start(l); err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(node.Stop)
	c.nodes[id] = node
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { conn.Close() })
	c.conns[id] = conn
}

func (c *grpcCluster) client(id string) api.AuctionsClient { return api.NewAuctionsClient(c.conns[id]) }
func (c *grpcCluster) admin(id string) api.AdminClient     { return api.NewAdminClient(c.conns[id]) }

func (c *grpcCluster) open(t *testing.T, via, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rep, err := c.client(via).OpenAuction(ctx, &api.OpenAuctionRequest{Open: &api.OpenAuction{
		Auction: id, Item: "lamp", DurationMs: 60_000, MinIncrement: 1, RequestId: "open-" + id}})
	if err != nil || rep.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("open %s via %s: %v %v", id, via, rep, err)
	}
}

// TestNodeForwardsToHeadAndTail: any node accepts any call; bids reach the
// head and reads the tail, and every node's answer agrees.
func TestNodeForwardsToHeadAndTail(t *testing.T) {
	c := startGRPCCluster(t, 3)
	c.open(t, "n2", "a1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	amount := int64(10)
	for _, via := range []string{"n1", "n2", "n3"} {
		rep, err := c.client(via).Bid(ctx, &api.BidRequest{Auction: "a1", Bidder: "alice-" + via, Amount: amount, RequestId: "r-" + via})
		if err != nil || rep.Outcome != api.Outcome_SUCCESS || rep.Node != "n1" {
			t.Fatalf("bid via %s: %v %v", via, rep, err)
		}
		amount += 10
	}
	// A retry with the same request id returns the original outcome.
	rep, err := c.client("n3").Bid(ctx, &api.BidRequest{Auction: "a1", Bidder: "alice-n1", Amount: 10, RequestId: "r-n1"})
	if err != nil || rep.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("retry: %v %v", rep, err)
	}
	low, err := c.client("n1").Bid(ctx, &api.BidRequest{Auction: "a1", Bidder: "bob", Amount: 5, RequestId: "low"})
	if err != nil || low.Outcome != api.Outcome_FAIL || low.Reason != api.Reason_TOO_LOW {
		t.Fatalf("low bid: %v %v", low, err)
	}
	for _, via := range []string{"n1", "n2", "n3"} {
		res, err := c.client(via).Result(ctx, &api.ResultRequest{Auction: "a1"})
		if err != nil || res.Info.Highest != 30 || res.Info.Bidder != "alice-n3" || res.Node != "n3" {
			t.Fatalf("result via %s: %v %v", via, res, err)
		}
	}
	if _, err := c.client("n1").Result(ctx, &api.ResultRequest{Auction: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown auction: %v", err)
	}
}

// TestNodeReconfigureAfterCrash: stopping the middle node and pushing the
// new configuration to the survivors keeps every acknowledged bid.
func TestNodeReconfigureAfterCrash(t *testing.T) {
	c := startGRPCCluster(t, 3)
	c.open(t, "n1", "a1")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var mu sync.Mutex
	acked := int64(0)
	bid := func(amount int64) {
		rep, err := c.client("n1").Bid(ctx, &api.BidRequest{Auction: "a1", Bidder: "b", Amount: amount, RequestId: fmt.Sprint("r", amount)})
		if err == nil && rep.Outcome == api.Outcome_SUCCESS {
			mu.Lock()
			acked = max(acked, amount)
			mu.Unlock()
		}
	}
	for a := int64(1); a <= 50; a++ {
		bid(a)
	}
	c.nodes["n2"].Stop()
	cfg := &api.ChainConfig{Epoch: 2, Chain: []*api.Member{c.cfg.Chain[0], c.cfg.Chain[2]}}
	for _, id := range []string{"n1", "n3"} {
		if _, err := c.admin(id).SetConfig(ctx, cfg); err != nil {
			t.Fatalf("set config on %s: %v", id, err)
		}
	}
	for a := int64(51); a <= 100; a++ {
		bid(a)
	}
	if acked != 100 {
		t.Fatalf("highest acknowledged bid %d, want 100", acked)
	}
	for _, id := range []string{"n1", "n3"} {
		res, err := c.client(id).Result(ctx, &api.ResultRequest{Auction: "a1"})
		if err != nil || res.Info.Highest != 100 {
			t.Fatalf("result via %s: %v %v", id, res, err)
		}
	}
	if _, err := c.admin("n1").SetConfig(ctx, cfg); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("stale epoch accepted: %v", err)
	}
}

// TestNodeMalformedInput: malformed client, admin and replication input
// gets a clear answer and changes nothing.
func TestNodeMalformedInput(t *testing.T) {
	c := startGRPCCluster(t, 3)
	c.open(t, "n1", "a1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	before, err := c.admin("n1").Status(ctx, &api.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range []*api.BidRequest{
		{},
		{Auction: "a1", Bidder: "x", Amount: 0},
		{Auction: "a1", Bidder: "x", Amount: -1},
		{Auction: "a1", Bidder: "x", Amount: 1 << 62},
		{Auction: "a1", Bidder: "", Amount: 5},
		{Auction: "nope", Bidder: "x", Amount: 5},
		{Auction: "a1", Bidder: strings.Repeat("x", 500), Amount: 5},
	} {
		rep, err := c.client("n2").Bid(ctx, req)
		if err != nil || rep.Outcome != api.Outcome_EXCEPTION || rep.Detail == "" {
			t.Errorf("bid %v: %v %v, want an exception with a reason", req, rep, err)
		}
	}
	if _, err := c.client("n1").OpenAuction(ctx, &api.OpenAuctionRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("open without parameters: %v", err)
	}
	for _, cfg := range []*api.ChainConfig{{}, {Epoch: 9}, {Epoch: 9, Chain: []*api.Member{{Id: "n1"}, {Id: "n1"}}}} {
		if _, err := c.admin("n1").SetConfig(ctx, cfg); status.Code(err) != codes.InvalidArgument {
			t.Errorf("SetConfig(%v): %v, want InvalidArgument", cfg, err)
		}
	}
	// Replication messages from a stranger, or of another epoch, or
	// malformed, are dropped (each on a stream of its own: a stream speaks
	// for one node).
	forged := &api.Update{Seq: before.Applied + 1, Command: &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{
		Auction: "a1", Bidder: "mallory", Amount: 1000, RequestId: "forged"}}}}
	for _, m := range []*api.ChainMessage{
		{Epoch: 1, From: "zz", To: "n2", Body: &api.ChainMessage_Forward{Forward: &api.Forward{Updates: []*api.Update{forged}}}},
		{Epoch: 7, From: "n1", To: "n2", Body: &api.ChainMessage_Forward{Forward: &api.Forward{Updates: []*api.Update{forged}}}},
		{Epoch: 1, From: "n1", To: "n2"},
		{Epoch: 1, From: "n1", To: "n2", Body: &api.ChainMessage_Forward{Forward: &api.Forward{Updates: []*api.Update{forged}}}},
	} {
		stream, err := api.NewChainClient(c.conns["n2"]).Stream(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&api.Envelope{Messages: []*api.ChainMessage{m}}); err != nil {
			t.Fatal(err)
		}
		stream.CloseAndRecv()
	}
	time.Sleep(100 * time.Millisecond)
	for _, id := range []string{"n1", "n2", "n3"} {
		st, err := c.admin(id).Status(ctx, &api.StatusRequest{})
		if err != nil || st.Applied != before.Applied || st.StateDigest != before.StateDigest || st.Config.Epoch != 1 {
			t.Errorf("%s changed: %v %v (before: applied %d digest %s)", id, st, err, before.Applied, before.StateDigest)
		}
	}
}
