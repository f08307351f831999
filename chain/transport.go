package chain

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
)

// maxEnvelopeBytes bounds one Envelope on a replication stream; a sender
// splits its queue into envelopes of at most about this size.
const maxEnvelopeBytes = 4 << 20

// maxMsgBytes is the largest gRPC message a node accepts (snapshots).
const maxMsgBytes = 256 << 20

// HTTP/2 flow-control windows of every connection a node serves or makes.
// Setting them also turns off gRPC's dynamic window (BDP estimation),
// which on a stream of small request/reply messages sends a PING after
// nearly every received message and gets a PING ack back: two extra
// writes, reads and wakeups per message. Loopback and LAN links need no
// window tuning; these are large enough that flow control never throttles
// a replication batch or a busy client stream.
const (
	streamWindow = 4 << 20
	connWindow   = 16 << 20
)

// transport carries chain messages to peers over one long-lived gRPC stream
// per peer. Send never blocks: each peer has a queue drained by one sending
// goroutine, which batches everything waiting into one Envelope — a batch
// forms only when the link is busy, never by waiting on a timer.
//
// A stream that fails loses what it carried, exactly like a broken TCP
// connection; the transport reports it through onPeerDown so the replica
// runs the link handshake again, and reconnects on the next send.
type transport struct {
	self       string
	log        *slog.Logger
	onPeerDown func(peer string)
	dialOpts   []grpc.DialOption

	mu    sync.Mutex // guards peers and closed
	peers map[string]*peerLink
	// closed is set by close; Send then drops messages.
	closed bool
	wg     sync.WaitGroup
}

// maxPeerQueue bounds the messages queued for one peer. A peer that stops
// reading (flow control blocks the sender) would otherwise make the queue
// grow without end; past the bound the queue is dropped and the stream is
// cut, so both sides run the handshake again, as after a broken link.
const maxPeerQueue = 1 << 16

// openTimeout bounds opening a stream, so that a frozen peer that accepts
// TCP but never answers cannot hold its sender.
const openTimeout = 2 * time.Second

// peerLink is the sending side of one peer's stream.
type peerLink struct {
	id string
	// ctx lives as long as the link; close cancels it, which also ends a
	// Send blocked by flow control and a stream still being opened.
	ctx    context.Context
	cancel context.CancelFunc

	mu    sync.Mutex // guards addr, queue and cut
	addr  string
	queue []*api.ChainMessage
	cut   context.CancelFunc // ends the current stream (nil when none)

	wake chan struct{} // capacity 1: "the queue is not empty"
	stop chan struct{}
}

func newTransport(self string, log *slog.Logger, onPeerDown func(string), extra ...grpc.DialOption) *transport {
	opts := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(maxMsgBytes), grpc.MaxCallRecvMsgSize(maxMsgBytes)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: true}),
		grpc.WithStaticStreamWindowSize(streamWindow), grpc.WithStaticConnWindowSize(connWindow), client.ReconnectQuickly,
	}, extra...)
	return &transport{self: self, log: log, onPeerDown: onPeerDown, dialOpts: opts, peers: map[string]*peerLink{}}
}

// setAddrs records the address of every member of a configuration, and
// ends the links to nodes it does not name.
func (t *transport) setAddrs(cfg *api.ChainConfig) {
	t.mu.Lock()
	defer t.mu.Unlock()
	members := append(append([]*api.Member{}, cfg.GetChain()...), cfg.GetJoining()...)
	// Links to nodes the configuration left out end: nothing is sent to
	// them any more, and a removed node never comes back under its old
	// incarnation.
	for id, p := range t.peers {
		if !slices.ContainsFunc(members, func(m *api.Member) bool { return m.Id == id }) {
			close(p.stop)
			p.cancel()
			delete(t.peers, id)
		}
	}
	for _, m := range members {
		if m.Id == t.self || m.Addr == "" {
			continue
		}
		p, ok := t.peers[m.Id]
		if !ok {
			p = &peerLink{id: m.Id, addr: m.Addr, wake: make(chan struct{}, 1), stop: make(chan struct{})}
			p.ctx, p.cancel = context.WithCancel(context.Background())
			t.peers[m.Id] = p
			if !t.closed {
				t.wg.Add(1)
				go func() { defer t.wg.Done(); t.run(p) }()
			}
			continue
		}
		p.mu.Lock()
		p.addr = m.Addr
		p.mu.Unlock()
	}
}

// send queues messages for their destinations.
func (t *transport) send(msgs []*api.ChainMessage) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	for _, m := range msgs {
		p, ok := t.peers[m.To]
		if !ok {
			t.log.Warn("no address for peer; message dropped", "peer", m.To)
			continue
		}
		p.mu.Lock()
		if len(p.queue) >= maxPeerQueue {
			t.log.Warn("peer not reading: queue dropped and stream cut", "node", t.self, "peer", p.id,
				"queued", len(p.queue))
			p.queue = p.queue[:0]
			if p.cut != nil {
				p.cut()
			}
		}
		p.queue = append(p.queue, m)
		p.mu.Unlock()
		select {
		case p.wake <- struct{}{}:
		default:
		}
	}
}

// close stops every sender and waits for them.
func (t *transport) close() {
	t.mu.Lock()
	t.closed = true
	for _, p := range t.peers {
		close(p.stop)
		p.cancel()
	}
	t.mu.Unlock()
	t.wg.Wait()
}

// run is the one goroutine that sends to p.
func (t *transport) run(p *peerLink) {
	var (
		conn   *grpc.ClientConn
		stream grpc.ClientStreamingClient[api.Envelope, api.StreamClosed]
		cancel context.CancelFunc = func() {}
		batch  []*api.ChainMessage
	)
	defer func() {
		cancel()
		if conn != nil {
			conn.Close()
		}
	}()
	up := false // the last stream to p worked; log only the changes
	broken := func(err error) {
		if up {
			t.log.Warn("replication link down", "node", t.self, "peer", p.id, "err", err)
		} else {
			t.log.Debug("replication link still down", "node", t.self, "peer", p.id, "err", err)
		}
		up = false
		cancel()
		if stream == nil {
			// No stream was open; with one, its watcher tells the replica.
			t.onPeerDown(p.id)
		}
		stream = nil
	}
	for {
		select {
		case <-p.stop:
			return
		case <-p.wake:
		}
		p.mu.Lock()
		batch, p.queue = p.queue, batch[:0]
		addr := p.addr
		p.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		if stream == nil {
			if conn == nil || conn.Target() != addr {
				if conn != nil {
					conn.Close()
				}
				c, err := grpc.NewClient(addr, t.dialOpts...)
				if err != nil {
					t.log.Error("cannot dial peer", "peer", p.id, "addr", addr, "err", err)
					broken(err)
					t.backoff(p)
					continue
				}
				conn = c
			}
			s, c, err := openStream(p.ctx, conn)
			if err != nil {
				broken(err)
				t.backoff(p)
				continue
			}
			stream, cancel = s, c
			p.mu.Lock()
			p.cut = c
			p.mu.Unlock()
			// The watcher tells the replica when this stream ends, whoever
			// ends it: a sender with nothing to send would not notice, and
			// acks lost with the stream would never be repeated.
			t.wg.Add(1)
			go func() {
				defer t.wg.Done()
				// The peer never answers a stream it keeps reading, so
				// RecvMsg returns only once the stream has ended. (gRPC
				// allows one goroutine in RecvMsg beside one in SendMsg.)
				_ = s.RecvMsg(&api.StreamClosed{})
				if p.ctx.Err() == nil {
					t.onPeerDown(p.id)
				}
			}()
		}
		if err := t.sendBatch(stream, batch); err != nil {
			broken(err)
			t.backoff(p)
		} else if !up {
			up = true
			t.log.Info("replication link up", "node", t.self, "peer", p.id, "addr", addr)
		}
		clear(batch)
	}
}

// sendBatch sends msgs as envelopes of at most maxEnvelopeBytes.
func (t *transport) sendBatch(stream grpc.ClientStreamingClient[api.Envelope, api.StreamClosed], msgs []*api.ChainMessage) error {
	env := &api.Envelope{}
	size := 0
	for _, m := range msgs {
		sz := proto.Size(m)
		if size > 0 && size+sz > maxEnvelopeBytes {
			if err := stream.Send(env); err != nil {
				return err
			}
			env, size = &api.Envelope{}, 0
		}
		env.Messages = append(env.Messages, m)
		size += sz
	}
	return stream.Send(env)
}

// backoff pauses a failing link briefly, dropping what queued meanwhile
// (the peer will ask again with a Hello).
func (t *transport) backoff(p *peerLink) {
	select {
	case <-p.stop:
	case <-time.After(50 * time.Millisecond):
	}
	p.mu.Lock()
	p.queue = p.queue[:0]
	p.mu.Unlock()
}

// openStream opens a replication stream on conn within openTimeout; the
// stream lives until parent ends or cancel is called.
func openStream(parent context.Context, conn *grpc.ClientConn) (grpc.ClientStreamingClient[api.Envelope, api.StreamClosed], context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(parent)
	timer := time.AfterFunc(openTimeout, cancel)
	s, err := api.NewChainClient(conn).Stream(ctx)
	if !timer.Stop() && err == nil {
		err = context.DeadlineExceeded
	}
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return s, cancel, nil
}
