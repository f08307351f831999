package floor

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gavel-auction/gavel/api"
)

// serveEnv, set in the environment of this test binary, makes it an echo
// server instead: it prints its address and serves until its stdin closes.
const serveEnv = "GAVEL_FLOOR_SERVE"

func TestMain(m *testing.M) {
	if os.Getenv(serveEnv) != "" {
		if err := serveEcho(); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// echoServer answers each BidStream request at once, with its request id.
type echoServer struct {
	api.UnimplementedAuctionsServer
}

func (echoServer) BidStream(stream grpc.BidiStreamingServer[api.BidRequest, api.BidReply]) error {
	for {
		req, err := stream.Recv()
		if err != nil {
			return nil
		}
		if err := stream.Send(&api.BidReply{Outcome: api.Outcome_SUCCESS, RequestId: req.RequestId}); err != nil {
			return err
		}
	}
}

func serveEcho() error {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := grpc.NewServer()
	api.RegisterAuctionsServer(srv, echoServer{})
	fmt.Println(lis.Addr())
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // until the benchmark closes it
		srv.Stop()
	}()
	return srv.Serve(lis)
}

// startEchoProcess runs this test binary as an echo server and returns
// its address; the process ends with the benchmark.
func startEchoProcess(b *testing.B) string {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), serveEnv+"=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("echo server: %v", err)
	}
	return line[:len(line)-1]
}

// BenchmarkProcessRoundTrip measures one bid-sized request and its reply
// on a BidStream to an echo server in another process: two of the six
// process crossings of a bid on a chain of three, with no work at
// either end. It reports the median beside the mean.
func BenchmarkProcessRoundTrip(b *testing.B) {
	addr := startEchoProcess(b)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := api.NewAuctionsClient(conn).BidStream(ctx)
	if err != nil {
		b.Fatal(err)
	}
	req := &api.BidRequest{Auction: "bench-1", Bidder: "bidder-7", Amount: 1234, RequestId: "0123456789abcdef"}
	took := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if err := stream.Send(req); err != nil {
			b.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(start))
	}
	b.StopTimer()
	reportMedian(b, took)
}

// BenchmarkFsyncAppend measures an append of 200 bytes to a preallocated
// file and its fsync, by one writer, and by three writers at once on
// files of their own in one directory (the three members of a chain on
// one machine). ns/op is the time of one append by one writer.
func BenchmarkFsyncAppend(b *testing.B) {
	for _, writers := range []int{1, 3} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			dir := b.TempDir()
			files := make([]*os.File, writers)
			zeros := make([]byte, 1<<20)
			for i := range files {
				f, err := os.Create(filepath.Join(dir, fmt.Sprint("wal-", i)))
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				for range 16 {
					if _, err := f.Write(zeros); err != nil {
						b.Fatal(err)
					}
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				files[i] = f
			}
			record := make([]byte, 200)
			took := make([][]time.Duration, writers)
			var wg sync.WaitGroup
			b.ResetTimer()
			for i, f := range files {
				wg.Go(func() {
					for n := range b.N {
						start := time.Now()
						off := int64(n*len(record)) % (16<<20 - int64(len(record)))
						if _, err := f.WriteAt(record, off); err != nil {
							b.Error(err)
							return
						}
						if err := f.Sync(); err != nil {
							b.Error(err)
							return
						}
						took[i] = append(took[i], time.Since(start))
					}
				})
			}
			wg.Wait()
			b.StopTimer()
			reportMedian(b, slices.Concat(took...))
		})
	}
}

// reportMedian adds the median and the 99th percentile of took, in µs.
func reportMedian(b *testing.B, took []time.Duration) {
	if len(took) == 0 {
		return
	}
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Nanoseconds())/1e3, "p50-µs")
	b.ReportMetric(float64(took[len(took)*99/100].Nanoseconds())/1e3, "p99-µs")
}
