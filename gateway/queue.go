package gateway

import (
	"context"
	"sync"
	"time"
)

// outQueue is one connection's outgoing queue of encoded frames, in send
// order. Its producers are the connection's reader goroutine (replies),
// the hub (pushes), the metrics ticker (metrics pushes) and the ping sweep
// (pings); its consumer is the connection's writer goroutine, which runs
// only while there is something to send: the producer that queues into an
// idle queue starts one (start), and the writer ends when it finds the
// queue empty (next). The reader may instead claim an idle queue to send
// its own reply (claim, next, release). At most one writer runs at a time.
//
// It is bounded without ever dropping a reply or a closed push:
//   - Replies are counted: reserve waits while limit replies are pending, so
//     a client that sends commands without reading the answers stops being
//     read (TCP pushes back on it) rather than growing the queue.
//   - Highest pushes queue normally while the connection keeps up. It is
//     behind when limit messages are pending, or when the newest pending
//     push of an auction has waited lag or more: a new highest push then
//     replaces that one, in place, so a slow watcher gets the newest value,
//     never a backlog (and a gateway short of CPU writes fewer pushes
//     rather than ever later ones). Metrics and outbid pushes always
//     replace a pending one of theirs.
//   - Other pushes (closed, errors about a watch) come at most once per
//     watched auction; past pushLimit of them pending, push reports an
//     overflow and the connection is closed as too slow.
//
// While the reader has a command at the chain (hold), pushes start no
// writer: they wait, at most maxPushHold, for the command's reply, and
// the reader sends them together with it, in one write.
type outQueue struct {
	limit     int           // most replies pending
	pushLimit int           // most unkeyed pushes pending
	lag       time.Duration // a highest push waiting this long is replaced by a newer one; 0: only past limit
	// start runs a writer (in a new goroutine: it must not block); the
	// queue calls it, with mu held, when it gets something to send and no
	// writer runs. Nil in tests that take by hand.
	start func()

	mu      sync.Mutex // guards every field below
	items   []outItem
	keyed   map[string]int // key -> index in items of its newest pending push; nil below keyedIndexAt items
	replies int            // replies pending or reserved
	pushes  int            // unkeyed pushes pending
	closed  bool
	pingDue bool // a ping is to be sent
	writing bool // a writer runs (or was started): it takes what is queued
	// held: pushes wait for the reader's next reply (hold), or until
	// holdTimer, armed by the first push that waits, ends the hold.
	held      bool
	holdArmed bool
	holdTimer *time.Timer // nil until a push first waits
	// space is closed (and set to nil) when reply slots free up or the
	// queue closes; nil while no reply waits for one.
	space chan struct{}
}

// outItem is one queued message: one or more frames sent in a row (a
// highest push and the extended push of the same update travel together).
type outItem struct {
	key    string // conflation key; "" for replies and unkeyed pushes
	reply  bool
	frames [][]byte
	at     time.Time // when a keyed push was queued (its replacements keep it)
}

func newOutQueue(limit, pushLimit int, lag time.Duration, start func()) *outQueue {
	return &outQueue{limit: max(1, limit), pushLimit: max(1, pushLimit), lag: max(0, lag), start: start}
}

// maxPushHold is how long a push waits, at most, for the reply to a
// command in flight on its connection (outQueue.hold).
const maxPushHold = 50 * time.Millisecond

// wake makes sure a writer will take what is queued: it starts one unless
// one runs, or, while the queue is held, arms the end of the hold; mu
// held.
func (q *outQueue) wake() {
	switch {
	case q.writing || q.start == nil:
	case q.held && !q.closed:
		if !q.holdArmed {
			q.holdArmed = true
			if q.holdTimer == nil {
				q.holdTimer = time.AfterFunc(maxPushHold, q.endHold)
			} else {
				q.holdTimer.Reset(maxPushHold)
			}
		}
	default:
		q.writing = true
		q.start()
	}
}

// hold makes pushes wait for the reader's next reply (claim ends the
// hold), or at most maxPushHold: the reader is about to wait for the
// chain, and will send what waits with its reply. It never blocks.
func (q *outQueue) hold() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.held = true
}

// endHold ends a hold that has lasted maxPushHold: a writer takes what
// waits.
func (q *outQueue) endHold() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.holdArmed = false
	if q.held {
		q.held = false
		if len(q.items) > 0 || q.pingDue || q.closed {
			q.wake()
		}
	}
}

// unhold ends the hold, if any, before the reader queues a reply; mu held.
func (q *outQueue) unhold() {
	q.held = false
	if q.holdArmed {
		q.holdArmed = false
		q.holdTimer.Stop()
	}
}

// freeSpace wakes the replies waiting for a slot; mu held.
func (q *outQueue) freeSpace() {
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
}

// reserve waits until a reply may be queued and reserves its slot; the
// caller must then call putReserved exactly once. It fails with ctx's
// error, or ErrQueueClosed once the queue is closed.
func (q *outQueue) reserve(ctx context.Context) error {
	q.mu.Lock()
	for q.replies >= q.limit && !q.closed {
		if q.space == nil {
			q.space = make(chan struct{})
		}
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
	q.wake()
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
	q.wake()
	return true
}

// pushLatest queues frames under key, replacing the frames of a pending
// push with the same key, which keeps its place in the queue. It never
// blocks and reports whether it replaced (conflated) a pending push.
func (q *outQueue) pushLatest(key string, frames ...[]byte) bool {
	return q.pushKeyed(key, true, time.Time{}, frames)
}

// pushConflating queues frames under key at time now; when the queue
// holds limit messages or more, or the newest pending push with the same
// key has waited lag or more, it replaces that push's frames instead. It
// never blocks and reports whether it replaced a pending push.
func (q *outQueue) pushConflating(key string, now time.Time, frames ...[]byte) bool {
	return q.pushKeyed(key, false, now, frames)
}

func (q *outQueue) pushKeyed(key string, always bool, now time.Time, frames [][]byte) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return false
	}
	if always || len(q.items) >= q.limit || q.lag > 0 {
		if i, ok := q.newest(key); ok && (always || len(q.items) >= q.limit || now.Sub(q.items[i].at) >= q.lag) {
			q.items[i].frames = frames
			return true
		}
	}
	switch {
	case q.keyed != nil:
		q.keyed[key] = len(q.items)
	case len(q.items) >= keyedIndexAt:
		// A long queue: index the keys rather than scan it on each push.
		// The new push is the newest of its key: it is indexed last.
		q.keyed = make(map[string]int, keyedIndexAt)
		for i, it := range q.items {
			if it.key != "" {
				q.keyed[it.key] = i
			}
		}
		q.keyed[key] = len(q.items)
	}
	q.items = append(q.items, outItem{key: key, frames: frames, at: now})
	q.wake()
	return false
}

// keyedIndexAt is the queue length from which pending pushes are indexed
// by key (outQueue.keyed); shorter queues are scanned.
const keyedIndexAt = 8

// newest returns the index of the newest pending push with key; mu held.
func (q *outQueue) newest(key string) (int, bool) {
	if q.keyed != nil {
		i, ok := q.keyed[key]
		return i, ok
	}
	for i := len(q.items) - 1; i >= 0; i-- {
		if q.items[i].key == key {
			return i, true
		}
	}
	return 0, false
}

// take removes and returns every queued frame, in order; nil when there is
// none. Only a writer (or a test) calls it.
func (q *outQueue) take() [][]byte {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.takeLocked()
}

func (q *outQueue) takeLocked() [][]byte {
	if len(q.items) == 0 {
		return nil
	}
	var frames [][]byte
	if len(q.items) == 1 {
		frames = q.items[0].frames // the common case: no new slice
	} else {
		for i := range q.items {
			frames = append(frames, q.items[i].frames...)
		}
	}
	freed := 0
	for i := range q.items {
		switch it := &q.items[i]; {
		case it.reply:
			freed++
		case it.key == "":
			q.pushes--
		}
	}
	// An idle connection holds no slice or map.
	q.items, q.keyed = nil, nil
	if freed > 0 {
		q.replies -= freed
		q.freeSpace()
	}
	return frames
}

// next is the writer's turn: it returns what to send now — every queued
// frame, in order, and whether to ping — and whether the connection is
// closing, in which case the frames are the last and the writer says
// goodbye. With nothing to do it returns ok false, and the writer must
// end: the next producer starts a new one.
func (q *outQueue) next() (frames [][]byte, ping, closing, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	frames = q.takeLocked()
	ping, q.pingDue = q.pingDue, false
	switch {
	case q.closed:
		return frames, false, true, true
	case frames == nil && !ping:
		q.writing = false
		return nil, false, false, false
	}
	return frames, ping, false, true
}

// claim ends a hold and makes the caller the writer if none runs (and
// the queue is not closed): it then sends a round (next) and calls
// release. It never blocks.
func (q *outQueue) claim() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.unhold()
	if q.writing || q.closed {
		return false
	}
	q.writing = true
	return true
}

// release ends a claimed round: when more has been queued meanwhile, a
// writer goroutine takes over.
func (q *outQueue) release() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.writing = false
	if len(q.items) > 0 || q.pingDue || q.closed {
		q.wake()
	}
}

// ping asks the writer for a ping. It never blocks.
func (q *outQueue) ping() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.pingDue = true
		q.wake()
	}
}

// close makes every later call a no-op (reserve fails), wakes reserve's
// waiters and makes sure a writer comes to say goodbye (next reports
// closing). Frames still queued are left for it.
func (q *outQueue) close() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.closed {
		q.closed = true
		q.freeSpace()
		q.wake()
	}
}

// pending returns how many messages are queued (for tests).
func (q *outQueue) pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}
