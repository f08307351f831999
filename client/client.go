// Package client is gavel's Go client library.
//
// A Client knows a few node addresses to start with. It learns the chain
// configuration from any of them (Admin.Status), then sends bids and opens
// straight to the head and reads to the tail, falling back to any other node
// (every node forwards) when those cannot be reached.
//
// A bid or an open that was not decided — the node answered Unavailable, the
// connection failed, or one attempt ran past Options.AttemptTimeout — is
// retried with the SAME request id and client session sequence number,
// after a short backoff and a refresh of the client's view of the chain,
// until the caller's context ends. The chain remembers the outcome of each
// request (by client session, as RIFL does, and by the bidder's request
// id), durably and in its snapshots, so a retry returns the original
// outcome, even across a restart of the whole cluster, and a bid is never
// applied twice.
//
// Each Client is one client session: its requests are numbered 1, 2, ...
// and each tells the chain the lowest number whose call has not returned,
// so the chain keeps every outcome a retry could still ask for, however
// fast the client sends, and forgets the others.
//
// A Client is safe for concurrent use by many goroutines; it keeps one gRPC
// connection per node address and reuses it for every call.
package client

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/internal/conns"
)

// Defaults for the zero values of Options.
const (
	// DefaultAttemptTimeout bounds one RPC attempt.
	DefaultAttemptTimeout = time.Second
	// DefaultMinBackoff is the first wait between two attempts.
	DefaultMinBackoff = 10 * time.Millisecond
	// DefaultMaxBackoff is the longest wait between two attempts.
	DefaultMaxBackoff = 200 * time.Millisecond
)

// refreshInterval is the shortest time between two refreshes of the chain
// view: calls that fail together share one refresh.
const refreshInterval = 20 * time.Millisecond

// Errors returned by the client. Calls wrap them with details; test with
// errors.Is.
var (
	// ErrNoAddrs is returned by New when it is given no node address.
	ErrNoAddrs = errors.New("no node address given")
	// ErrBadAddr is returned by New for an address that is not host:port.
	ErrBadAddr = errors.New("invalid node address")
	// ErrUnavailable is returned when the caller's context ended before any
	// node decided the request. A bid or open may still have been applied:
	// retry it with the same request id to learn its outcome exactly once.
	ErrUnavailable = errors.New("chain unavailable")
	// ErrUnknownAuction is returned by Result for an auction id the chain
	// does not know.
	ErrUnknownAuction = errors.New("unknown auction")
	// ErrClosed is returned by calls made after Close.
	ErrClosed = errors.New("client closed")
)

// Options configure a Client. The zero value is usable.
type Options struct {
	// AttemptTimeout bounds one RPC attempt, so that a dead or partitioned
	// node cannot eat the caller's whole budget (default 1s).
	AttemptTimeout time.Duration
	// MinBackoff is the first wait between two attempts (default 10ms); it
	// doubles, with jitter, up to MaxBackoff (default 200ms).
	MinBackoff, MaxBackoff time.Duration
	// Pinned sends every call to the given addresses only, in order, and
	// never to the head or tail learned from the chain: the node forwards.
	// This is the CLI's --node.
	Pinned bool
	// DialOptions are added after the client's own (insecure credentials,
	// a reconnect backoff of at most one second) for every connection.
	DialOptions []grpc.DialOption
	// Logger receives a debug line for each retry and view change; nil
	// discards.
	Logger *slog.Logger
}

// ReconnectQuickly keeps gRPC's reconnect backoff short (grpc-go's default
// grows to two minutes): a node, master or gateway that restarts at its
// address must be reachable again well within a failure timeout. Every
// connection between gavel processes, and to them, dials with it.
var ReconnectQuickly = grpc.WithConnectParams(grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 50 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
})

// Client talks to a gavel chain. Create one with New and Close it when done.
type Client struct {
	opts  Options
	seeds []string // addresses given to New, deduplicated, in order
	log   *slog.Logger

	conns *conns.Cache // one connection per node address

	mu   sync.RWMutex     // guards view
	view *api.ChainConfig // highest-epoch configuration learned; nil before the first refresh

	refreshMu   sync.Mutex // serializes refreshes, so calls failing together share one
	refreshedAt time.Time  // end of the last refresh; guarded by refreshMu

	session *requestSession // numbers bids and opens; safe for concurrent use
}

// conn is one node's service stubs.
type conn struct {
	auctions api.AuctionsClient
	admin    api.AdminClient
}

// New returns a client that starts from the given node addresses
// (host:port). It does not connect yet: connections are made on first use.
func New(addrs []string, opts Options) (*Client, error) {
	if opts.AttemptTimeout <= 0 {
		opts.AttemptTimeout = DefaultAttemptTimeout
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	var seeds []string
	for _, a := range addrs {
		if err := checkAddr(a); err != nil {
			return nil, err
		}
		if !slices.Contains(seeds, a) {
			seeds = append(seeds, a)
		}
	}
	if len(seeds) == 0 {
		return nil, ErrNoAddrs
	}
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		ReconnectQuickly,
		// Fixed flow-control windows: this turns off gRPC's dynamic window
		// (BDP estimation), which pings the node after nearly every reply
		// on a stream of small messages, costing a round of extra writes
		// and wakeups per bid on both sides.
		grpc.WithStaticStreamWindowSize(1 << 20), grpc.WithStaticConnWindowSize(8 << 20),
	}, opts.DialOptions...)
	return &Client{opts: opts, seeds: seeds, log: opts.Logger, conns: conns.New(dial...), session: newRequestSession()}, nil
}

// checkAddr returns an error wrapping ErrBadAddr unless addr is host:port.
func checkAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("%w %q: want host:port, e.g. 127.0.0.1:7101", ErrBadAddr, addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("%w %q: port must be a number in 1..65535", ErrBadAddr, addr)
	}
	return nil
}

// Close closes every connection. Calls in flight fail; later calls return
// ErrClosed.
func (c *Client) Close() error { return c.conns.Close() }

// NewRequestID returns a fresh random request id: 16 hex characters from
// crypto/rand.
func NewRequestID() string {
	var b [8]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand panics rather than return an error)
	return hex.EncodeToString(b[:])
}

// Bid places a bid and returns its decided outcome: SUCCESS, FAIL (too low)
// or EXCEPTION, with the reason, in the reply. An empty requestID is
// replaced by a fresh one (NewRequestID). An undecided attempt is retried
// with the same request id until ctx ends (or, at most, for 30 minutes:
// less than the chain keeps an idle client session); the error then wraps
// ErrUnavailable. Other errors (a node refusing the call outright) are
// returned at once. Nodes that run with auth.secret take the bid only for
// the bidder of the token ctx carries (auth.WithToken), unless the
// client's own certificate is a gateway's or a node's.
func (c *Client) Bid(ctx context.Context, auctionID, bidder string, amount int64, requestID string) (*api.BidReply, error) {
	if requestID == "" {
		requestID = NewRequestID()
	}
	sid, seq, acked := c.session.begin()
	defer c.session.end(seq)
	ctx, cancel := boundRetries(ctx)
	defer cancel()
	req := &api.BidRequest{Auction: auctionID, Bidder: bidder, Amount: amount, RequestId: requestID,
		Client: sid, ClientSeq: seq, AckedBelow: acked}
	var reply *api.BidReply
	err := c.do(ctx, toHead, "bid "+requestID, retryWrite, func(ctx context.Context, cn *conn) error {
		r, err := cn.auctions.Bid(ctx, req)
		if err != nil {
			return err
		}
		if r.GetReason() == api.Reason_UNAVAILABLE {
			return status.Error(codes.Unavailable, "node answered: "+r.GetDetail())
		}
		reply = r
		return nil
	})
	return reply, err
}

// Open opens an auction and returns the decided outcome (SUCCESS, or
// EXCEPTION with a reason such as AUCTION_EXISTS) in the reply. The request
// is not modified; when its request id is empty, a fresh one is used. It
// retries like Bid.
func (c *Client) Open(ctx context.Context, open *api.OpenAuction) (*api.OpenAuctionReply, error) {
	open = proto.Clone(open).(*api.OpenAuction)
	if open.RequestId == "" {
		open.RequestId = NewRequestID()
	}
	sid, seq, acked := c.session.begin()
	defer c.session.end(seq)
	ctx, cancel := boundRetries(ctx)
	defer cancel()
	open.Client, open.ClientSeq, open.AckedBelow = sid, seq, acked
	req := &api.OpenAuctionRequest{Open: open}
	var reply *api.OpenAuctionReply
	err := c.do(ctx, toHead, "open "+open.RequestId, retryWrite, func(ctx context.Context, cn *conn) error {
		r, err := cn.auctions.OpenAuction(ctx, req)
		if err != nil {
			return err
		}
		if r.GetReason() == api.Reason_UNAVAILABLE {
			return status.Error(codes.Unavailable, "node answered: "+r.GetDetail())
		}
		reply = r
		return nil
	})
	return reply, err
}

// Result reads one auction from the tail. An unknown auction returns an
// error wrapping ErrUnknownAuction. Unavailable answers and attempts that
// time out are retried until ctx ends.
func (c *Client) Result(ctx context.Context, auctionID string) (*api.ResultReply, error) {
	req := &api.ResultRequest{Auction: auctionID}
	var reply *api.ResultReply
	err := c.do(ctx, toTail, "result", retryRead, func(ctx context.Context, cn *conn) error {
		r, err := cn.auctions.Result(ctx, req)
		reply = r
		return err
	})
	if status.Code(err) == codes.NotFound {
		return nil, fmt.Errorf("%w %q", ErrUnknownAuction, auctionID)
	}
	return reply, err
}

// List returns every auction, as the tail sees it, sorted by id. It retries
// like Result.
func (c *Client) List(ctx context.Context) (*api.ListAuctionsReply, error) {
	var reply *api.ListAuctionsReply
	err := c.do(ctx, toTail, "list", retryRead, func(ctx context.Context, cn *conn) error {
		r, err := cn.auctions.ListAuctions(ctx, &api.ListAuctionsRequest{})
		reply = r
		return err
	})
	return reply, err
}

// Status asks one node for its status, once, without retrying.
func (c *Client) Status(ctx context.Context, addr string) (*api.NodeStatus, error) {
	cn, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	return cn.admin.Status(ctx, &api.StatusRequest{})
}

// NodeResult is one node's answer to StatusAll: Status, or Err when the
// node could not be reached or refused.
type NodeResult struct {
	Addr   string
	Status *api.NodeStatus
	Err    error
}

// StatusAll asks every address the client knows — the ones given to New,
// then chain members learned since — for its status, in parallel, each
// bounded by ctx and the attempt timeout. Results come in that order. It
// also updates the client's view of the chain.
func (c *Client) StatusAll(ctx context.Context) []NodeResult {
	res := c.statusAll(ctx, c.knownAddrs())
	c.learn(res)
	return res
}

// SetConfig installs a chain configuration on one node, once, without
// retrying. A node refuses a stale epoch with codes.FailedPrecondition.
func (c *Client) SetConfig(ctx context.Context, addr string, cfg *api.ChainConfig) (*api.SetConfigReply, error) {
	cn, err := c.conn(addr)
	if err != nil {
		return nil, err
	}
	return cn.admin.SetConfig(ctx, cfg)
}

// Chain asks the known nodes for their configuration, adopts the one with
// the highest epoch among the answers and returns it. When no node answers,
// it returns the configuration learned earlier or, if there is none, keeps
// asking until ctx ends (an error wrapping ErrUnavailable). The caller must
// not modify the result.
func (c *Client) Chain(ctx context.Context) (*api.ChainConfig, error) {
	for {
		c.refresh(ctx, true)
		if v := c.currentView(); v != nil {
			return v, nil
		}
		if err := sleep(ctx, c.opts.MinBackoff); err != nil {
			return nil, fmt.Errorf("%w: no node reported a chain configuration: %w", ErrUnavailable, err)
		}
	}
}

// ---------------------------------------------------------------------------
// Retries and routing.

// target says which chain member a call prefers.
type target int

const (
	toHead target = iota // bids and opens
	toTail               // reads
)

// retryWrite reports whether a bid or open attempt that failed with err was
// left undecided, so that the same request may be sent again.
func retryWrite(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Aborted, codes.Canceled:
		return true
	}
	return false
}

// retryRead reports whether a read that failed with err is worth repeating.
func retryRead(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return false
}

// do runs call against the preferred node for tgt, retrying as retryable
// says until ctx ends. Each attempt gets its own AttemptTimeout. A node that
// failed is avoided for the rest of this call unless every node has.
func (c *Client) do(ctx context.Context, tgt target, op string, retryable func(error) bool, call func(context.Context, *conn) error) error {
	rs := c.newRetries(tgt)
	for {
		addr := rs.next(ctx)
		cn, err := c.conn(addr)
		if errors.Is(err, ErrClosed) {
			return err
		}
		if err == nil {
			actx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
			err = call(actx, cn)
			cancel()
			if err == nil {
				return nil
			}
		}
		if err := rs.failed(ctx, op, addr, err, retryable); err != nil {
			return err
		}
	}
}

// retries is the bookkeeping of one call's attempts, shared by do and
// BidSession.Bid: which node to try next, which ones failed, the backoff,
// and the words of the final error. It is a value owned by the caller, so
// a call that succeeds at once costs no allocation.
type retries struct {
	c       *Client
	tgt     target
	start   time.Time
	wait    time.Duration // backoff before the next attempt
	avoid   []string      // nodes that failed during this call
	last    string        // the last failure, for the final error
	attempt int           // attempts started
}

func (c *Client) newRetries(tgt target) retries {
	return retries{c: c, tgt: tgt, start: time.Now(), wait: c.opts.MinBackoff, last: "none"}
}

// next starts an attempt and returns the node to send it to. The first
// attempt of a client with no view of the chain yet learns it first.
func (r *retries) next(ctx context.Context) string {
	c := r.c
	r.attempt++
	if r.attempt == 1 && !c.opts.Pinned && c.currentView() == nil {
		c.refresh(ctx, false)
	}
	addr, all := c.pick(r.tgt, r.avoid)
	if all {
		r.avoid = r.avoid[:0]
	}
	return addr
}

// failed records that the attempt at addr failed with err. It returns the
// call's final error when the call must end — ctx ended (the error wraps
// ErrUnavailable), or err is not retryable — and otherwise sleeps the
// backoff, refreshes the view of the chain and returns nil.
func (r *retries) failed(ctx context.Context, op, addr string, err error, retryable func(error) bool) error {
	c := r.c
	none := "no decision" // a read gets no answer, a write no decision
	if r.tgt == toTail {
		none = "no answer"
	}
	if ctx.Err() != nil {
		if r.attempt == 1 || !isContextErr(err) {
			r.last = addr + ": " + errText(err)
		}
		return fmt.Errorf("%w: %s: %s after %d attempts in %v (last: %s): %w",
			ErrUnavailable, op, none, r.attempt, time.Since(r.start).Round(time.Millisecond), r.last, ctx.Err())
	}
	if !retryable(err) {
		return fmt.Errorf("%s at %s: %w", op, addr, err)
	}
	r.last = addr + ": " + errText(err)
	if status.Code(err) == codes.DeadlineExceeded {
		r.last = fmt.Sprintf("%s: no answer within %v", addr, c.opts.AttemptTimeout)
	}
	r.avoid = append(r.avoid, addr)
	c.log.Debug("retrying", "op", op, "addr", addr, "attempt", r.attempt, "err", errText(err))
	if err := sleep(ctx, jitter(r.wait)); err != nil {
		return fmt.Errorf("%w: %s: %s after %d attempts in %v (last: %s): %w",
			ErrUnavailable, op, none, r.attempt, time.Since(r.start).Round(time.Millisecond), r.last, err)
	}
	r.wait = min(2*r.wait, c.opts.MaxBackoff)
	if !c.opts.Pinned {
		c.refresh(ctx, false)
	}
	return nil
}

// isContextErr reports whether err is a deadline or cancellation, as a
// status or a context error.
func isContextErr(err error) bool {
	switch status.Code(err) {
	case codes.DeadlineExceeded, codes.Canceled:
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}

// errText is a short description of an RPC error: the status message with
// its code, or the error itself.
func errText(err error) string {
	if s, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", s.Code(), s.Message())
	}
	return err.Error()
}

// jitter returns d scaled by a random factor in [0.5, 1.5).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)+1))
}

// sleep waits for d or until ctx ends, whichever comes first.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// pick returns the address to try next for tgt: the head (or tail) of the
// current view, else the other chain members, else the seed addresses,
// skipping those in avoid. When every candidate is avoided it returns the
// first and all=true.
func (c *Client) pick(tgt target, avoid []string) (addr string, all bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.opts.Pinned && c.view != nil && len(c.view.Chain) > 0 {
		chain := c.view.Chain
		first := chain[0].Addr
		if tgt == toTail {
			first = chain[len(chain)-1].Addr
		}
		if len(avoid) == 0 {
			return first, false // the fast path: no allocation
		}
		if !slices.Contains(avoid, first) {
			return first, false
		}
		for i := range chain {
			m := chain[i]
			if tgt == toTail {
				m = chain[len(chain)-1-i]
			}
			if !slices.Contains(avoid, m.Addr) {
				return m.Addr, false
			}
		}
	}
	for _, a := range c.seeds {
		if !slices.Contains(avoid, a) {
			return a, false
		}
	}
	if !c.opts.Pinned && c.view != nil && len(c.view.Chain) > 0 {
		if tgt == toTail {
			return c.view.Chain[len(c.view.Chain)-1].Addr, true
		}
		return c.view.Chain[0].Addr, true
	}
	return c.seeds[0], true
}

// conn returns the stubs of the connection to addr, creating the
// connection on first use.
func (c *Client) conn(addr string) (*conn, error) {
	cc, err := c.conns.Get(addr)
	switch {
	case errors.Is(err, conns.ErrClosed):
		return nil, ErrClosed
	case err != nil:
		return nil, fmt.Errorf("connect to %s: %w", addr, err)
	}
	return &conn{auctions: api.NewAuctionsClient(cc), admin: api.NewAdminClient(cc)}, nil
}

// ---------------------------------------------------------------------------
// The view of the chain.

// currentView returns the configuration learned last (nil if none).
func (c *Client) currentView() *api.ChainConfig {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.view
}

// knownAddrs returns the seed addresses, then the chain members and joining
// nodes of the current view that are not seeds.
func (c *Client) knownAddrs() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	addrs := append([]string(nil), c.seeds...)
	if c.opts.Pinned || c.view == nil {
		return addrs
	}
	for _, m := range append(append([]*api.Member(nil), c.view.Chain...), c.view.Joining...) {
		if m.GetAddr() != "" && !slices.Contains(addrs, m.Addr) {
			addrs = append(addrs, m.Addr)
		}
	}
	return addrs
}

// refresh asks every known node for its status and adopts the highest-epoch
// configuration among the answers. Unless force is set, it does nothing
// when another refresh ended less than refreshInterval ago.
func (c *Client) refresh(ctx context.Context, force bool) {
	c.refreshMu.Lock()
	defer c.refreshMu.Unlock()
	if !force && time.Since(c.refreshedAt) < refreshInterval {
		return
	}
	c.learn(c.statusAll(ctx, c.knownAddrs()))
	c.refreshedAt = time.Now()
}

// statusAll asks each address for its status in parallel, each call bounded
// by the attempt timeout.
func (c *Client) statusAll(ctx context.Context, addrs []string) []NodeResult {
	res := make([]NodeResult, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		res[i].Addr = a
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, c.opts.AttemptTimeout)
			defer cancel()
			res[i].Status, res[i].Err = c.Status(actx, a)
		})
	}
	wg.Wait()
	return res
}

// learn adopts the highest-epoch configuration reported in res, if any.
// It takes the freshest answers as the truth even when their epoch is lower
// than the view's (a cluster restarted from scratch starts again at 1).
func (c *Client) learn(res []NodeResult) {
	var best *api.ChainConfig
	for _, r := range res {
		cfg := r.Status.GetConfig()
		if r.Err != nil || len(cfg.GetChain()) == 0 {
			continue
		}
		if best == nil || cfg.Epoch > best.Epoch {
			best = cfg
		}
	}
	if best == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.view == nil || c.view.Epoch != best.Epoch {
		c.log.Debug("chain view", "epoch", best.Epoch, "head", best.Chain[0].GetId(),
			"tail", best.Chain[len(best.Chain)-1].GetId())
	}
	c.view = best
}
