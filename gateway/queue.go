package gateway

import (
	"context"
	"sync"
)

// outQueue is one connection's outgoing queue of encoded frames, in send
// order. Its producers are the connection's command goroutine (replies),
// the hub (pushes) and the metrics ticker (metrics pushes); its one
// consumer is the connection's writer goroutine (take).
//
// It is bounded without ever dropping a reply or a closed push:
//   - Replies are counted: reserve waits while limit replies are pending, so
//     a client that sends commands without reading the answers stops being
//     read (TCP pushes back on it) rather than growing the queue.
//   - Highest pushes queue normally while fewer than limit messages are
//     pending; past that the connection is behind, and a new highest push
//     replaces the newest pending one of its auction, in place: a slow
//     watcher gets the newest value, never a backlog. Metrics and outbid
//     pushes always replace a pending one of theirs.
//   - Other pushes (closed, errors about a watch) come at most once per
//     watched auction; past pushLimit of them pending, push reports an
//     overflow and the connection is closed as too slow.
type outQueue struct {
	limit     int // most replies pending
	pushLimit int // most unkeyed pushes pending

	mu      sync.Mutex // guards every field below
	items   []outItem
	keyed   map[string]int // key -> index in items of its newest pending push
	replies int            // replies pending or reserved
	pushes  int            // unkeyed pushes pending
	closed  bool
	// space is closed (and replaced) when reply slots free up.
	space chan struct{}
	// ready has capacity 1: a value means take has something.
	ready chan struct{}
}

// outItem is one queued message: one or more frames sent in a row (a
// highest push and the extended push of the same update travel together).
type outItem struct {
	key    string // conflation key; "" for replies and unkeyed pushes
	reply  bool
	frames [][]byte
}

func newOutQueue(limit, pushLimit int) *outQueue {
	return &outQueue{limit: max(1, limit), pushLimit: max(1, pushLimit), keyed: map[string]int{},
		space: make(chan struct{}), ready: make(chan struct{}, 1)}
}

// signal tells the writer there is something to take; mu held.
func (q *outQueue) signal() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// reserve waits until a reply may be queued and reserves its slot; the
// caller must then call putReserved exactly once. It fails with ctx's
// error, or ErrQueueClosed once the queue is closed.
func (q *outQueue) reserve(ctx context.Context) error {
	q.mu.Lock()
	for q.replies >= q.limit && !q.closed {
		space := q.space
		q.mu.Unlock()
		select {
		case <-space:
		case <-ctx.Done():
			return ctx.Err()
		}
		q.mu.Lock()
	}
	defer q.mu.Unlock()
	if q.closed {
		return ErrQueueClosed
	}
	q.replies++
	return nil
}

// putReserved queues a reply in a slot taken by reserve. It never blocks.
func (q *outQueue) putReserved(frame []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.items = append(q.items, outItem{reply: true, frames: [][]byte{frame}})
	q.signal()
}

// reply queues a reply, waiting for a slot (see reserve).
func (q *outQueue) reply(ctx context.Context, frame []byte) error {
	if err := q.reserve(ctx); err != nil {
		return err
	}
	q.putReserved(frame)
	return nil
}

// push queues a push that is never dropped nor conflated. It never blocks;
// it returns false when the connection has more than pushLimit such pushes
// pending: the caller must close it as too slow.
func (q *outQueue) push(frame []byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return true
	}
	if q.pushes >= q.pushLimit {
		return false
	}
	q.pushes++
	q.items = append(q.items, outItem{frames: [][]byte{frame}})
	q.signal()
	return true
}

// pushLatest queues frames under key, replacing the frames of a pending
// push with the same key, which keeps its place in the queue. It never
// blocks and reports whether it replaced (conflated) a pending push.
func (q *outQueue) pushLatest(key string, frames ...[]byte) bool {
	return q.pushKeyed(key, true, frames)
}

// pushConflating queues frames under key; once the queue holds limit
// messages or more, it replaces the newest pending push with the same key
// instead, if there is one. It never blocks and reports whether it
// replaced a pending push.
func (q *outQueue) pushConflating(key string, frames ...[]byte) bool {
	return q.pushKeyed(key, false, frames)
}

func (q *outQueue) pushKeyed(key string, always bool, frames [][]byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	if i, ok := q.keyed[key]; ok && (always || len(q.items) >= q.limit) {
		q.items[i].frames = frames
		return true
	}
	q.keyed[key] = len(q.items)
	q.items = append(q.items, outItem{key: key, frames: frames})
	q.signal()
	return false
}

// take removes and returns every queued frame, in order; nil when there is
// none. Only the writer calls it.
func (q *outQueue) take() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return nil
	}
	var frames [][]byte
	freed := 0
	for i := range q.items {
		it := &q.items[i]
		frames = append(frames, it.frames...)
		switch {
		case it.reply:
			freed++
		case it.key == "":
			q.pushes--
		}
		*it = outItem{}
	}
	q.items = q.items[:0]
	clear(q.keyed)
	if freed > 0 {
		q.replies -= freed
		close(q.space)
		q.space = make(chan struct{})
	}
	return frames
}

// close makes every later call a no-op (reserve fails) and wakes reserve's
// waiters. Frames still queued are left for take.
func (q *outQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		close(q.space)
		q.space = make(chan struct{})
	}
}

// pending returns how many messages are queued (for tests).
func (q *outQueue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
