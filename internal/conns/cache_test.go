package conns

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// countingListener is a loopback listener that counts the connections it
// accepts and closes them at once.
type countingListener struct {
	net.Listener
	accepted atomic.Int64
}

func listen(t *testing.T) *countingListener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cl := &countingListener{Listener: l}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			cl.accepted.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return cl
}

func newCache() *Cache { return New(grpc.WithTransportCredentials(insecure.NewCredentials())) }

// Get makes a connection without connecting: nothing reaches the address
// until a call is made.
func TestGetDialsLazily(t *testing.T) {
	l := listen(t)
	c := newCache()
	defer c.Close()
	cc, err := c.Get(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := l.accepted.Load(); n != 0 {
		t.Fatalf("Get connected: %d connections accepted, want 0", n)
	}
	if s := cc.GetState(); s != connectivity.Idle {
		t.Fatalf("state after Get: %v, want Idle", s)
	}
	cc.Connect()
	deadline := time.Now().Add(5 * time.Second)
	for l.accepted.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Connect did not reach the listener")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The same address gets the same connection, another address another one,
// also when many goroutines ask at once.
func TestGetSameConnForSameAddr(t *testing.T) {
	c := newCache()
	defer c.Close()
	a, err := c.Get("127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := c.Get("127.0.0.1:1"); again != a {
		t.Fatal("a second Get of the same address made another connection")
	}
	if b, _ := c.Get("127.0.0.1:2"); b == a {
		t.Fatal("two addresses share one connection")
	}
	var wg sync.WaitGroup
	got := make([]*grpc.ClientConn, 16)
	for i := range got {
		wg.Go(func() {
			cc, err := c.Get("127.0.0.1:3")
			if err != nil {
				t.Error(err)
			}
			got[i] = cc
		})
	}
	wg.Wait()
	for _, cc := range got[1:] {
		if cc != got[0] {
			t.Fatal("concurrent Gets of one address made more than one connection")
		}
	}
}

// Close closes every connection; Get then fails with ErrClosed, and a
// second Close does nothing.
func TestCloseClosesAll(t *testing.T) {
	c := newCache()
	var ccs []*grpc.ClientConn
	for _, addr := range []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"} {
		cc, err := c.Get(addr)
		if err != nil {
			t.Fatal(err)
		}
		ccs = append(ccs, cc)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for i, cc := range ccs {
		if s := cc.GetState(); s != connectivity.Shutdown {
			t.Errorf("connection %d after Close: %v, want Shutdown", i, s)
		}
	}
	for _, addr := range []string{"127.0.0.1:1", "127.0.0.1:4"} {
		if cc, err := c.Get(addr); !errors.Is(err, ErrClosed) || cc != nil {
			t.Errorf("Get(%s) after Close: %v, %v; want nil, ErrClosed", addr, cc, err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// A connection grpc.NewClient refuses is an error, and not cached.
func TestGetReturnsDialError(t *testing.T) {
	c := New() // no transport credentials: grpc.NewClient refuses
	defer c.Close()
	if _, err := c.Get("127.0.0.1:1"); err == nil {
		t.Fatal("Get without transport credentials succeeded")
	}
	if n := len(c.conns); n != 0 {
		t.Fatalf("%d connections cached after a failed Get", n)
	}
}

// The cache dials with the options New got, in their order: of two user
// agents, the later one reaches the server.
func TestGetUsesOptionsInOrder(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agents := make(chan []string, 1)
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo,
		h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		agents <- md.Get("user-agent")
		return h(ctx, req)
	}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(l) }()
	defer srv.Stop()

	c := New(grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithUserAgent("first"),
		grpc.WithUserAgent("second"))
	defer c.Close()
	cc, err := c.Get(l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	ua := <-agents
	if len(ua) != 1 || !strings.HasPrefix(ua[0], "second ") {
		t.Fatalf("user-agent %q, want the later option's (second ...)", ua)
	}
}
