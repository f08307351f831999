package chain

// Tests and benchmarks of the node's fast path: bids on BidStream, through
// the replica driver and the replication transport.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gavel-auction/gavel/api"
)

// startBenchChain starts n nodes on loopback listeners, stopped when b
// ends, and returns a client of the head.
func startBenchChain(b *testing.B, n int) api.AuctionsClient {
	b.Helper()
	cfg := &api.ChainConfig{Epoch: 1}
	var lis []net.Listener
	for i := 1; i <= n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		lis = append(lis, l)
		cfg.Chain = append(cfg.Chain, &api.Member{Id: fmt.Sprintf("n%d", i), Addr: l.Addr().String()})
	}
	for i, m := range cfg.Chain {
		node, err := NewNode(NodeOptions{ID: m.Id, Addr: m.Addr, Initial: cfg})
		if err != nil {
			b.Fatal(err)
		}
		if err := node.Start(lis[i]); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(node.Stop)
	}
	conn, err := grpc.NewClient(cfg.Chain[0].Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return api.NewAuctionsClient(conn)
}

// bidStreamAll sends every request on one BidStream without waiting, then
// closes its side and collects the replies, keyed by amount.
func bidStreamAll(t *testing.T, c api.AuctionsClient, reqs []*api.BidRequest) map[int64]*api.BidReply {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := c.BidStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sendErr := make(chan error, 1)
	go func() {
		for _, r := range reqs {
			if err := stream.Send(r); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- stream.CloseSend()
	}()
	got := map[int64]*api.BidReply{}
	for {
		rep, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("recv after %d replies: %v", len(got), err)
		}
		if got[rep.Amount] != nil {
			t.Fatalf("two replies for amount %d", rep.Amount)
		}
		got[rep.Amount] = rep
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	return got
}

// BidStream answers every bid of a pipelined stream exactly once, whether
// it reaches the head or a node that forwards to it, and the stream ends
// cleanly once the client has closed its side and every reply went out.
func TestBidStreamPipelined(t *testing.T) {
	c := startGRPCCluster(t, 3)
	c.open(t, "n1", "a1")
	amount := int64(0)
	for _, via := range []string{"n1", "n3"} {
		var reqs []*api.BidRequest
		for range 300 {
			amount++
			reqs = append(reqs, &api.BidRequest{Auction: "a1", Bidder: fmt.Sprint("b", amount%7), Amount: amount,
				RequestId: fmt.Sprint("r", amount)})
		}
		got := bidStreamAll(t, c.client(via), reqs)
		if len(got) != len(reqs) {
			t.Fatalf("via %s: %d replies for %d bids", via, len(got), len(reqs))
		}
		for _, r := range reqs {
			rep := got[r.Amount]
			if rep == nil || rep.Auction != "a1" || rep.Node != "n1" || rep.Version == 0 {
				t.Fatalf("via %s: reply for %d: %v", via, r.Amount, rep)
			}
		}
	}
	// Retries with the same request ids return the original outcomes.
	var again []*api.BidRequest
	for a := int64(1); a <= 20; a++ {
		again = append(again, &api.BidRequest{Auction: "a1", Bidder: fmt.Sprint("b", a%7), Amount: a, RequestId: fmt.Sprint("r", a)})
	}
	for a, rep := range bidStreamAll(t, c.client("n2"), again) {
		if rep.Outcome != api.Outcome_SUCCESS || rep.Version != uint64(a)+1 { // seq 1 opened the auction
			t.Fatalf("retry of %d: %v", a, rep)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := c.client("n3").Result(ctx, &api.ResultRequest{Auction: "a1"})
	if err != nil || res.Info.Highest != amount || res.Info.Bids != uint64(amount) {
		t.Fatalf("result: %v %v, want highest %d after %d bids", res, err, amount, amount)
	}
}

// A BidStream whose node stops answers its bids in flight UNAVAILABLE or
// ends with an error: never with a made-up outcome.
func TestBidStreamNodeStops(t *testing.T) {
	c := startGRPCCluster(t, 1)
	c.open(t, "n1", "a1")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := c.client("n1").BidStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&api.BidRequest{Auction: "a1", Bidder: "b", Amount: 1, RequestId: "r1"}); err != nil {
		t.Fatal(err)
	}
	if rep, err := stream.Recv(); err != nil || rep.Outcome != api.Outcome_SUCCESS {
		t.Fatalf("first bid: %v %v", rep, err)
	}
	c.nodes["n1"].Stop()
	_ = stream.Send(&api.BidRequest{Auction: "a1", Bidder: "b", Amount: 2, RequestId: "r2"})
	if rep, err := stream.Recv(); err == nil && rep.Reason != api.Reason_UNAVAILABLE {
		t.Fatalf("bid after stop: %v", rep)
	}
}

// BenchmarkNodeChain3 runs three nodes in this process on loopback gRPC
// and measures closed-loop bids over BidStream (one stream per client) at
// the head: the whole path of a bid except the process boundaries. Run with
// -cpuprofile to see where a bid's time goes.
func BenchmarkNodeChain3(b *testing.B) {
	for _, clients := range []int{1, 64} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			head := startBenchChain(b, 3)
			ctx := context.Background()
			if _, err := head.OpenAuction(ctx, &api.OpenAuctionRequest{Open: &api.OpenAuction{
				Auction: "a1", Item: "lamp", DurationMs: 3_600_000, MinIncrement: 1, RequestId: "open"}}); err != nil {
				b.Fatal(err)
			}
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for i := range clients {
				wg.Go(func() {
					stream, err := head.BidStream(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					defer stream.CloseSend()
					for {
						a := next.Add(1)
						if a > int64(b.N) {
							return
						}
						if err := stream.Send(&api.BidRequest{Auction: "a1", Bidder: fmt.Sprint("b", i),
							Amount: a, RequestId: fmt.Sprint(a)}); err != nil {
							b.Error(err)
							return
						}
						if _, err := stream.Recv(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}
