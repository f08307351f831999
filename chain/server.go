package chain

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/pki"
)

// forwardedKey marks a call that one node already forwarded, so that a
// stale view of the chain can never bounce a call around in a loop.
const forwardedKey = "gavel-forwarded"

func forwarded(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	return len(md.Get(forwardedKey)) > 0
}

// target finds where to forward a call this node cannot serve: the head
// (bids, opens) or the tail (reads) of its current configuration.
func (n *Node) target(ctx context.Context, head bool) (api.AuctionsClient, context.Context, error) {
	if forwarded(ctx) {
		return nil, nil, status.Error(codes.Unavailable, "chain is reconfiguring: the node a call was forwarded to cannot serve it")
	}
	var cfg *api.ChainConfig
	if err := n.do(ctx, func(r *Replica) { cfg = r.Config() }); err != nil {
		return nil, nil, toStatus(err)
	}
	id, addr := memberAddr(cfg, head)
	if id == "" || id == n.opts.ID {
		return nil, nil, status.Error(codes.Unavailable, "chain is reconfiguring: no other node to forward to")
	}
	cc, err := n.forwards.Get(addr)
	if err != nil {
		return nil, nil, status.Errorf(codes.Unavailable, "cannot reach %s: %v", id, err)
	}
	// The caller's token goes along: without TLS, the node called next
	// checks it again.
	return api.NewAuctionsClient(cc), metadata.AppendToOutgoingContext(auth.ForwardToken(ctx), forwardedKey, n.opts.ID), nil
}

// toStatus maps a chain error to a gRPC status. Unavailable always means
// "not decided: retry with the same request id".
func toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, auction.ErrUnknownAuction):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, ErrStaleEpoch), errors.Is(err, ErrMasterOwned):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, ErrBadConfig):
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// mustForward reports whether a replica error means "ask another node".
func mustForward(err error) bool {
	return errors.Is(err, ErrNotHead) || errors.Is(err, ErrNotTail) ||
		errors.Is(err, ErrRemoved) || errors.Is(err, ErrNoConfig)
}

// auctionsServer is the client API.
type auctionsServer struct {
	api.UnimplementedAuctionsServer
	n *Node
}

// bidCommand is the command of a bid request.
func bidCommand(req *api.BidRequest) *api.Command {
	return &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{Auction: req.Auction, Bidder: req.Bidder,
		Amount: req.Amount, RequestId: req.RequestId, Client: req.Client, ClientSeq: req.ClientSeq,
		AckedBelow: req.AckedBelow}}}
}

// bidReply is the answer to a decided bid.
func (s *auctionsServer) bidReply(bid *api.PlaceBid, rep Reply) *api.BidReply {
	res := rep.Result
	return &api.BidReply{Outcome: res.Outcome, Reason: res.Reason, Detail: res.Detail, Auction: bid.GetAuction(),
		Amount: bid.GetAmount(), Version: res.Seq, Epoch: rep.Epoch, Node: s.n.opts.ID, RequestId: bid.GetRequestId()}
}

// unavailableReply is BidStream's answer to a bid that was not decided:
// the client retries it with the same request id.
func (s *auctionsServer) unavailableReply(bid *api.PlaceBid, err error) *api.BidReply {
	return &api.BidReply{Outcome: api.Outcome_EXCEPTION, Reason: api.Reason_UNAVAILABLE,
		Detail: status.Convert(err).Message(), Auction: bid.GetAuction(), Amount: bid.GetAmount(), Node: s.n.opts.ID,
		RequestId: bid.GetRequestId()}
}

// Bid places one bid; the reply comes once the bid's update is committed.
// A bid for a bidder the caller may not bid for (auth.Guard.Bidders) is
// refused with Unauthenticated or PermissionDenied.
func (s *auctionsServer) Bid(ctx context.Context, req *api.BidRequest) (out *api.BidReply, err error) {
	if !forwarded(ctx) {
		// Measured at the node that answers the client, not again at the
		// head a call was forwarded to.
		start := time.Now()
		defer func() {
			s.n.metrics.observeBid(start, out.GetOutcome(), err)
			s.n.metrics.observeReply(out)
		}()
	}
	bidders, err := s.n.guard.Bidders(ctx)
	if err != nil {
		return nil, err
	}
	if err := bidders.Check(req.GetBidder(), req.GetToken()); err != nil {
		return nil, err
	}
	if !bidders.Anyone() {
		req.Token = bidders.Token(req.GetToken()) // for the head, if the bid goes there
	}
	cmd := bidCommand(req)
	rep, err := s.n.submit(ctx, cmd)
	if err != nil {
		return nil, toStatus(err)
	}
	if rep.Err != nil {
		if !mustForward(rep.Err) {
			return nil, toStatus(rep.Err)
		}
		c, fctx, err := s.n.target(ctx, true)
		if err != nil {
			return nil, err
		}
		return c.Bid(fctx, req)
	}
	return s.bidReply(cmd.GetBid(), rep), nil
}

// maxStreamInflight bounds the bids of one BidStream that are proposed but
// not answered yet. At the bound the handler stops reading the stream
// until replies go out, so a client that sends without reading its replies
// cannot make the node queue without end.
const maxStreamInflight = 1024

// BidStream serves many bids on one stream. The handler goroutine receives
// bids and proposes them without waiting for their outcome; the replica's
// driver delivers each reply into the stream's queue as its update
// commits; one sender goroutine sends the queued replies. A client may keep
// many bids in flight; replies are not necessarily in request order. A
// bid for a bidder the caller may not bid for is answered EXCEPTION,
// NOT_AUTHORIZED, and the stream goes on.
func (s *auctionsServer) BidStream(stream grpc.BidiStreamingServer[api.BidRequest, api.BidReply]) error {
	bidders, err := s.n.guard.Bidders(stream.Context())
	if err != nil {
		return err
	}
	b := &bidStream{s: s, stream: stream, ctx: stream.Context(), bidders: bidders,
		wake: make(chan struct{}, 1), slots: make(chan struct{}, maxStreamInflight)}
	sent := make(chan error, 1)
	go func() { sent <- b.sendLoop() }()
	recvErr := b.recvLoop()
	b.push(streamReply{}, true)
	if err := <-sent; err != nil {
		return err
	}
	return recvErr
}

// bidStream is one BidStream call.
type bidStream struct {
	s      *auctionsServer
	stream grpc.BidiStreamingServer[api.BidRequest, api.BidReply]
	ctx    context.Context
	// bidders checks each bid's bidder; the receiving goroutine owns it.
	bidders *auth.BidderCheck

	wake  chan struct{} // capacity 1: "queue is not empty, or the receiver is done"
	slots chan struct{} // one token per bid in flight (maxStreamInflight)

	mu       sync.Mutex // guards queue, proposed and recvDone
	queue    []streamReply
	proposed int  // bids received and proposed (or answered at once)
	recvDone bool // the handler will receive no more bids
}

// streamReply is one queued answer: the reply to a proposed bid, or a
// reply ready to send (out).
type streamReply struct {
	bid   *api.PlaceBid
	rep   Reply
	out   *api.BidReply
	start time.Time // when the bid arrived
	token string    // the bid's token, for the head if it goes there
}

// recvLoop receives bids and proposes them, until the client ends its
// side of the stream (nil) or the stream fails.
func (b *bidStream) recvLoop() error {
	for {
		req, err := b.stream.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		select {
		case b.slots <- struct{}{}:
		case <-b.ctx.Done():
			return b.ctx.Err()
		}
		b.mu.Lock()
		b.proposed++
		b.mu.Unlock()
		if err := b.bidders.Check(req.GetBidder(), req.GetToken()); err != nil {
			b.push(streamReply{out: b.s.refusedReply(req, err), start: time.Now()}, false)
			continue
		}
		sb := &streamBid{b: b, start: time.Now()}
		if !b.bidders.Anyone() {
			sb.token = b.bidders.Token(req.GetToken())
		}
		b.s.n.propose(bidCommand(req), sb)
	}
}

// refusedReply is BidStream's answer to a bid its caller may not place.
func (s *auctionsServer) refusedReply(req *api.BidRequest, err error) *api.BidReply {
	return &api.BidReply{Outcome: api.Outcome_EXCEPTION, Reason: api.Reason_NOT_AUTHORIZED,
		Detail: status.Convert(err).Message(), Auction: req.GetAuction(), Amount: req.GetAmount(), Node: s.n.opts.ID,
		RequestId: req.GetRequestId()}
}

// streamBid is one bid of a stream, waiting for its reply.
type streamBid struct {
	b     *bidStream
	start time.Time
	token string // the bid's token, when the caller needs one
}

// deliver queues the reply to one of the stream's bids; it runs on the
// goroutine driving the replica and never blocks.
func (sb *streamBid) deliver(cmd *api.Command, rep Reply) {
	sb.b.push(streamReply{bid: cmd.GetBid(), rep: rep, start: sb.start, token: sb.token}, false)
}

// push queues r (unless last) and wakes the sender; last says the
// receiver is done.
func (b *bidStream) push(r streamReply, last bool) {
	b.mu.Lock()
	if last {
		b.recvDone = true
	} else {
		b.queue = append(b.queue, r)
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// sendLoop sends queued replies until every proposed bid is answered and
// the receiver is done, or the stream ends. A reply saying "ask the head"
// (this node is not the head) is forwarded on its own goroutine, which
// queues the head's answer.
func (b *bidStream) sendLoop() error {
	var batch []streamReply
	answered := 0
	for {
		b.mu.Lock()
		batch, b.queue = b.queue, batch[:0]
		done := b.recvDone && len(batch) == 0 && answered == b.proposed
		b.mu.Unlock()
		if done {
			return nil
		}
		for _, r := range batch {
			out := r.out
			switch {
			case out != nil:
			case r.rep.Err == nil:
				out = b.s.bidReply(r.bid, r.rep)
			case mustForward(r.rep.Err):
				go b.forward(r.bid, r.token, r.start)
				continue
			default:
				out = b.s.unavailableReply(r.bid, r.rep.Err)
			}
			if err := b.stream.Send(out); err != nil {
				return err
			}
			b.s.n.metrics.observeBid(r.start, out.Outcome, nil)
			b.s.n.metrics.observeReply(out)
			answered++
			<-b.slots
		}
		clear(batch)
		if len(batch) > 0 {
			continue // more may have come while sending
		}
		select {
		case <-b.wake:
		case <-b.ctx.Done():
			return b.ctx.Err()
		}
	}
}

// forward places a bid this node cannot sequence at the head, with its
// token, and queues the head's answer (or an UNAVAILABLE one).
func (b *bidStream) forward(bid *api.PlaceBid, token string, start time.Time) {
	req := &api.BidRequest{Auction: bid.Auction, Bidder: bid.Bidder, Amount: bid.Amount, RequestId: bid.RequestId,
		Client: bid.Client, ClientSeq: bid.ClientSeq, AckedBelow: bid.AckedBelow, Token: token}
	c, fctx, err := b.s.n.target(b.ctx, true)
	var out *api.BidReply
	if err == nil {
		out, err = c.Bid(fctx, req)
	}
	if err != nil {
		out = b.s.unavailableReply(bid, err)
	}
	b.push(streamReply{out: out, start: start}, false)
}

// OpenAuction opens an auction at the head. With auth.secret only admins
// open (an admin certificate or token; a gateway checks its bidders'
// roles itself, and a node relays); in open mode, anyone.
func (s *auctionsServer) OpenAuction(ctx context.Context, req *api.OpenAuctionRequest) (*api.OpenAuctionReply, error) {
	if s.n.guard.Open() {
		if _, err := s.n.guard.RequireRole(ctx, pki.RoleClient, pki.RoleAdmin, pki.RoleGateway, pki.RoleNode); err != nil {
			return nil, err
		}
	} else if err := s.n.guard.Admin(ctx, "opening an auction", pki.RoleGateway, pki.RoleNode); err != nil {
		return nil, err
	}
	if req.GetOpen() == nil {
		return nil, status.Error(codes.InvalidArgument, "open: missing auction parameters")
	}
	rep, err := s.n.submit(ctx, &api.Command{Op: &api.Command_Open{Open: req.Open}})
	if err != nil {
		return nil, toStatus(err)
	}
	if rep.Err != nil {
		if !mustForward(rep.Err) {
			return nil, toStatus(rep.Err)
		}
		c, fctx, err := s.n.target(ctx, true)
		if err != nil {
			return nil, err
		}
		return c.OpenAuction(fctx, req)
	}
	res := rep.Result
	out := &api.OpenAuctionReply{Outcome: res.Outcome, Reason: res.Reason, Detail: res.Detail,
		Version: res.Seq, Epoch: rep.Epoch, Node: s.n.opts.ID}
	if res.Outcome == api.Outcome_SUCCESS {
		// The head's state holds the auction as opened (closing time
		// stamped). The function may still run after do gave up, so it
		// fills a variable of its own, used only once do has returned nil.
		var info *api.AuctionInfo
		if s.n.do(ctx, func(r *Replica) {
			if a, ok := r.State().Get(req.Open.Auction); ok {
				info = a.Info()
			}
		}) == nil {
			out.Info = info
		}
	}
	return out, nil
}

// Result reads an auction at the tail.
func (s *auctionsServer) Result(ctx context.Context, req *api.ResultRequest) (*api.ResultReply, error) {
	if _, err := s.n.guard.Peer(ctx); err != nil {
		return nil, err
	}
	var (
		info  *api.AuctionInfo
		rerr  error
		epoch uint64
	)
	if err := s.n.do(ctx, func(r *Replica) { info, rerr = s.n.read(r, req.Auction); epoch = r.Epoch() }); err != nil {
		return nil, toStatus(err)
	}
	if rerr != nil {
		if !mustForward(rerr) {
			return nil, toStatus(rerr)
		}
		c, fctx, err := s.n.target(ctx, false)
		if err != nil {
			return nil, err
		}
		return c.Result(fctx, req)
	}
	return &api.ResultReply{Info: info, Epoch: epoch, Node: s.n.opts.ID,
		ServerTimeMs: s.n.opts.Now().UnixMilli()}, nil
}

// ListAuctions lists every auction at the tail.
func (s *auctionsServer) ListAuctions(ctx context.Context, req *api.ListAuctionsRequest) (*api.ListAuctionsReply, error) {
	if _, err := s.n.guard.Peer(ctx); err != nil {
		return nil, err
	}
	var (
		list  []*api.AuctionInfo
		rerr  error
		epoch uint64
		seq   uint64
	)
	if err := s.n.do(ctx, func(r *Replica) { list, rerr = s.n.list(r); epoch, seq = r.Epoch(), r.Applied() }); err != nil {
		return nil, toStatus(err)
	}
	if rerr != nil {
		if !mustForward(rerr) {
			return nil, toStatus(rerr)
		}
		c, fctx, err := s.n.target(ctx, false)
		if err != nil {
			return nil, err
		}
		return c.ListAuctions(fctx, req)
	}
	return &api.ListAuctionsReply{Auctions: list, Epoch: epoch, Node: s.n.opts.ID, Seq: seq}, nil
}

// adminServer is the control API.
type adminServer struct {
	api.UnimplementedAdminServer
	n *Node
}

// Status reports the node's role, configuration and progress. Where its
// data lives (data_dir, data_bytes) only admins see (auth.Guard.IsAdmin).
func (s *adminServer) Status(ctx context.Context, _ *api.StatusRequest) (*api.NodeStatus, error) {
	if _, err := s.n.guard.Peer(ctx); err != nil {
		return nil, err
	}
	st, err := s.n.status(ctx)
	if err == nil && !s.n.guard.IsAdmin(ctx) {
		st.DataDir, st.DataBytes = "", 0
	}
	return st, toStatus(err)
}

// SetConfig installs a configuration with a higher epoch. Only admins
// call it: an admin or master certificate, or an admin token.
func (s *adminServer) SetConfig(ctx context.Context, cfg *api.ChainConfig) (*api.SetConfigReply, error) {
	if err := s.n.guard.Admin(ctx, "changing the chain configuration"); err != nil {
		return nil, err
	}
	if s.n.membership != nil {
		return nil, toStatus(ErrMasterOwned)
	}
	epoch, err := s.n.setConfig(ctx, cfg)
	if err != nil && !errors.Is(err, ErrRemoved) {
		return nil, toStatus(err)
	}
	return &api.SetConfigReply{Epoch: epoch}, nil
}

// chainServer receives replication streams from peers.
type chainServer struct {
	api.UnimplementedChainServer
	n *Node
}

// Stream hands every received batch to the replica, in order (driving it
// when nobody else is). When the stream breaks, the replica is told, so it
// can run the handshake again.
//
// A stream speaks for one node: with TLS, the node its certificate names
// (role node), without, the sender of its first message. A batch with a
// message from anyone else is refused whole, before the replica sees any
// of it, and ends the stream (PermissionDenied, logged).
func (s *chainServer) Stream(stream grpc.ClientStreamingServer[api.Envelope, api.StreamClosed]) error {
	cert, err := s.n.guard.RequireRole(stream.Context(), pki.RoleNode)
	if err != nil {
		return err
	}
	var peer string
	for {
		env, err := stream.Recv()
		if err != nil {
			if peer != "" {
				s.n.log.Warn("replication stream from peer ended", "node", s.n.opts.ID, "peer", peer,
					"err", status.Convert(err).Message())
				s.n.peerDown(peer)
			}
			if errors.Is(err, io.EOF) {
				return stream.SendAndClose(&api.StreamClosed{})
			}
			return err
		}
		if len(env.Messages) == 0 {
			continue
		}
		speaker := cert.ID
		if !s.n.guard.TLS() {
			speaker = env.Messages[0].GetFrom()
			if peer != "" {
				speaker = peer
			}
		}
		for _, m := range env.Messages {
			if m.GetFrom() != speaker {
				if peer != "" {
					s.n.peerDown(peer) // the link is gone: the replica runs the handshake again
				}
				return s.n.guard.Refuse(stream.Context(), codes.PermissionDenied, cert,
					fmt.Sprintf("a message from %q on a replication stream of node %q: a node speaks only for itself", m.GetFrom(), speaker),
					"epoch", m.GetEpoch(), "kind", messageKind(m))
			}
		}
		peer = speaker
		select {
		case <-s.n.stop:
			return status.Error(codes.Unavailable, "node stopping")
		default:
		}
		s.n.enqueue(input{msgs: env.Messages})
	}
}

// messageKind names a chain message's body for logs: forward, ack, hello.
func messageKind(m *api.ChainMessage) string {
	switch m.GetBody().(type) {
	case *api.ChainMessage_Forward:
		return "forward"
	case *api.ChainMessage_Ack:
		return "ack"
	case *api.ChainMessage_Hello:
		return "hello"
	}
	return "empty"
}
