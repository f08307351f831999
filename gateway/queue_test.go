package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func highestFrame(a string, seq uint64) []byte {
	return encode(highestPush{Type: "highest", Auction: a, Amount: int64(seq) * 10, Seq: seq})
}

// A watcher that takes nothing while 10,000 highest bids arrive on two
// auctions holds, once its queue is full, no more highest pushes: the
// newest pending one of each auction takes the newest value; the closed
// push is kept; replies are kept in order.
func TestQueueConflatesHighest(t *testing.T) {
	q := newOutQueue(4, 8, 0, nil)
	ctx := context.Background()
	if err := q.reply(ctx, []byte(`{"type":"watching","auction":"a1"}`)); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 10_000; seq++ {
		a := "a1"
		if seq%2 == 0 {
			a = "a2"
		}
		q.pushConflating("highest\x00"+a, time.Time{}, highestFrame(a, seq))
		if seq == 5000 {
			if err := q.reply(ctx, []byte(`{"type":"result"}`)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if !q.push([]byte(`{"type":"closed","auction":"a1","seq":10001}`)) {
		t.Fatal("closed push refused")
	}
	if n := q.pending(); n != 6 {
		t.Errorf("pending = %d, want 6 (2 replies, 3 highest, 1 closed)", n)
	}
	var got []string
	for _, f := range q.take() {
		var m struct {
			Type, Auction string
			Seq           uint64
		}
		if err := json.Unmarshal(f, &m); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %s %d", m.Type, m.Auction, m.Seq))
	}
	// The queue had room for the first pushes (limit 4: the reply and
	// seqs 1..3); then seq 4 on went into the newest of each auction.
	want := []string{"watching a1 0", "highest a1 1", "highest a2 10000", "highest a1 9999", "result  0", "closed a1 10001"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("took %q, want %q", got, want)
	}
	if q.take() != nil {
		t.Error("second take not empty")
	}
	// Below the limit nothing is conflated: a reader that keeps up, even
	// a little late, misses no highest bid.
	for seq := uint64(10002); seq < 10005; seq++ {
		q.pushConflating("highest\x00a1", time.Time{}, highestFrame("a1", seq))
	}
	if n := len(q.take()); n != 3 {
		t.Errorf("took %d after 3 pushes below the limit, want 3", n)
	}
}

// Replies are never dropped: past the limit, reply waits until the writer
// takes, and fails only when its context ends or the queue closes.
func TestQueueBoundsReplies(t *testing.T) {
	q := newOutQueue(2, 2, 0, nil)
	ctx := context.Background()
	for i := range 2 {
		if err := q.reply(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := q.reply(short, []byte("2")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("reply past the limit = %v, want to wait until the deadline", err)
	}
	done := make(chan error, 1)
	go func() { done <- q.reply(ctx, []byte("2")) }()
	select {
	case err := <-done:
		t.Fatalf("reply returned %v before anything was taken", err)
	case <-time.After(20 * time.Millisecond):
	}
	if got := len(q.take()); got != 2 {
		t.Fatalf("took %d frames, want 2", got)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := q.take(); len(got) != 1 || string(got[0]) != "2" {
		t.Errorf("took %q, want [2]", got)
	}
	// Unkeyed pushes are bounded too: past the limit, push says so.
	if !q.push([]byte("c1")) || !q.push([]byte("c2")) {
		t.Fatal("push within the limit refused")
	}
	if q.push([]byte("c3")) {
		t.Error("push past the limit accepted")
	}
	// Closing wakes a waiting reply.
	q.reply(ctx, []byte("r1"))
	q.reply(ctx, []byte("r2"))
	go func() { done <- q.reply(ctx, []byte("r3")) }()
	time.Sleep(10 * time.Millisecond)
	q.close()
	if err := <-done; !errors.Is(err, ErrQueueClosed) {
		t.Errorf("reply after close = %v, want ErrQueueClosed", err)
	}
	if q.pushLatest("metrics", []byte("m")) || q.pending() != 4 {
		t.Errorf("a closed queue took a push: pending %d", q.pending())
	}
}

// A writer is started when something is queued and none runs; it ends
// when it finds nothing to do, and the next push starts another. Closing
// starts one to say goodbye, which gets what is left.
func TestQueueStartsWriter(t *testing.T) {
	starts := 0
	q := newOutQueue(4, 4, 0, func() { starts++ })
	q.pushLatest("metrics", []byte("m1"))
	q.pushLatest("metrics", []byte("m2"))
	if starts != 1 {
		t.Fatalf("%d writers started for two pushes, want 1", starts)
	}
	frames, ping, closing, ok := q.next()
	if !ok || closing || ping || len(frames) != 1 || string(frames[0]) != "m2" {
		t.Errorf("next = %q ping %v closing %v ok %v, want the newest metrics only", frames, ping, closing, ok)
	}
	if _, _, _, ok := q.next(); ok {
		t.Fatal("next with nothing queued: the writer should end")
	}
	q.ping()
	if starts != 2 {
		t.Fatalf("a ping into an idle queue started %d writers in all, want 2", starts)
	}
	q.push([]byte("c1"))
	if starts != 2 {
		t.Fatal("a push started a second writer while one runs")
	}
	if frames, ping, _, ok := q.next(); !ok || !ping || len(frames) != 1 {
		t.Errorf("next = %q ping %v, want c1 and a ping", frames, ping)
	}
	q.push([]byte("c2"))
	q.close()
	if frames, _, closing, ok := q.next(); !ok || !closing || len(frames) != 1 || string(frames[0]) != "c2" {
		t.Errorf("next after close = %q closing %v ok %v, want the last frame and closing", frames, closing, ok)
	}
	if starts != 2 {
		t.Errorf("%d writers started, want 2 (the running one says goodbye)", starts)
	}
	idle := newOutQueue(4, 4, 0, func() { starts++ })
	idle.close()
	if starts != 3 {
		t.Error("closing an idle queue started no writer to say goodbye")
	}

	// The reader claims an idle queue to send its reply itself; what is
	// queued meanwhile goes to a writer goroutine when it releases.
	r := newOutQueue(4, 4, 0, func() { starts++ })
	if !r.claim() {
		t.Fatal("claim of an idle queue failed")
	}
	r.reply(context.Background(), []byte("reply"))
	if r.claim() || starts != 3 {
		t.Fatalf("a claimed queue was claimed again or started a writer (%d)", starts)
	}
	if frames, _, _, ok := r.next(); !ok || len(frames) != 1 {
		t.Fatalf("next = %q, want the reply", frames)
	}
	r.push([]byte("push"))
	r.release()
	if starts != 4 {
		t.Fatal("release with a push queued started no writer")
	}
	if frames, _, _, ok := r.next(); !ok || string(frames[0]) != "push" {
		t.Fatalf("the writer got %q, want the push", frames)
	}
	if _, _, _, ok := r.next(); ok {
		t.Fatal("the writer did not end on an empty queue")
	}
	if !r.claim() {
		t.Fatal("claim after the writer ended failed")
	}
	r.release()
	if starts != 4 {
		t.Fatal("release of an empty queue started a writer")
	}
}

// Past keyedIndexAt pending messages the queue indexes its keys; it
// conflates the same way.
func TestQueueConflatesLongQueue(t *testing.T) {
	q := newOutQueue(20, 20, 0, nil)
	for seq := uint64(1); seq <= 1000; seq++ {
		a := fmt.Sprint("a", seq%3)
		q.pushConflating("highest\x00"+a, time.Time{}, highestFrame(a, seq))
		if seq%100 == 0 {
			q.push([]byte(`{"type":"closed"}`))
		}
	}
	if n := q.pending(); n != 20+10 {
		t.Fatalf("pending = %d, want 20 pushes and 10 closed", n)
	}
	newest := map[string]uint64{}
	for _, f := range q.take() {
		var m struct {
			Type, Auction string
			Seq           uint64
		}
		if err := json.Unmarshal(f, &m); err != nil {
			t.Fatal(err)
		}
		if m.Type == "highest" {
			newest[m.Auction] = max(newest[m.Auction], m.Seq)
		}
	}
	if newest["a0"] != 999 || newest["a1"] != 1000 || newest["a2"] != 998 {
		t.Errorf("newest pushed = %v, want the last of each auction", newest)
	}
}

// A highest push that has waited lag or more is replaced by a newer one
// of its auction, however short the queue: the watcher is behind.
func TestQueueConflatesLateHighest(t *testing.T) {
	q := newOutQueue(256, 256, 50*time.Millisecond, nil)
	t0 := time.Now()
	push := func(seq uint64, after time.Duration) bool {
		return q.pushConflating("highest\x00a1", t0.Add(after), highestFrame("a1", seq))
	}
	if push(1, 0) || push(2, 10*time.Millisecond) {
		t.Fatal("a push younger than the lag was replaced")
	}
	if !push(3, 60*time.Millisecond) { // seq 2 waited 50ms: replaced
		t.Fatal("a push older than the lag was not replaced")
	}
	if !push(4, 65*time.Millisecond) { // the replacement keeps seq 2's time
		t.Fatal("the replacement of a late push was not replaced in turn")
	}
	var seqs []uint64
	for _, f := range q.take() {
		var m struct{ Seq uint64 }
		if err := json.Unmarshal(f, &m); err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, m.Seq)
	}
	if fmt.Sprint(seqs) != "[1 4]" {
		t.Errorf("took seqs %v, want [1 4]", seqs)
	}
	// Taken: the next push starts afresh.
	if push(5, 200*time.Millisecond) || push(6, 210*time.Millisecond) {
		t.Error("a push into a drained queue was conflated")
	}
}

// The pushes of one auction leave the queue in seq order whatever its
// length: when a queue holding several pushes of an auction grows long
// enough to be indexed by key, the index points at the newest of them, so
// a later replacement never rewrites an older one (which would send a
// newer seq before an older one).
func TestQueueKeepsSeqOrderAcrossIndexing(t *testing.T) {
	q := newOutQueue(256, 256, 50*time.Millisecond, nil)
	t0 := time.Now()
	key := "highest\x00a1"
	// Young pushes: each is queued, not conflated; the last one crosses
	// keyedIndexAt.
	for seq := uint64(1); seq <= keyedIndexAt+1; seq++ {
		if q.pushConflating(key, t0.Add(time.Duration(seq)*time.Millisecond), highestFrame("a1", seq)) {
			t.Fatalf("push %d was conflated though young", seq)
		}
	}
	// An old one now: it replaces the newest pending push.
	if !q.pushConflating(key, t0.Add(time.Second), highestFrame("a1", 100)) {
		t.Fatal("a push after the lag did not replace the newest pending one")
	}
	var last uint64
	for _, f := range q.take() {
		var m struct{ Seq uint64 }
		if err := json.Unmarshal(f, &m); err != nil {
			t.Fatal(err)
		}
		if m.Seq <= last {
			t.Fatalf("seq %d left the queue after seq %d", m.Seq, last)
		}
		last = m.Seq
	}
	if last != 100 {
		t.Fatalf("last seq taken %d, want 100", last)
	}
}

// While held (a command at the chain), pushes start no writer: the
// reader's claim ends the hold and takes them with its reply, in order.
// Without a reply they go to a writer after maxPushHold; closing does not
// wait for the hold.
func TestQueueHoldsPushesForTheReply(t *testing.T) {
	var mu sync.Mutex
	starts := 0
	started := func() { mu.Lock(); starts++; mu.Unlock() }
	count := func() int { mu.Lock(); defer mu.Unlock(); return starts }

	q := newOutQueue(4, 4, 0, started)
	q.hold()
	q.pushLatest("outbid\x00a1", []byte("outbid"))
	q.ping()
	if n := count(); n != 0 {
		t.Fatalf("%d writers started while held", n)
	}
	if !q.claim() {
		t.Fatal("claim of a held queue failed")
	}
	q.reply(context.Background(), []byte("reply"))
	frames, ping, _, ok := q.next()
	if !ok || !ping || fmt.Sprintf("%s", frames) != "[outbid reply]" {
		t.Fatalf("the reader's round = %q ping %v, want the push, the reply and the ping", frames, ping)
	}
	q.release()
	time.Sleep(2 * maxPushHold)
	if n := count(); n != 0 {
		t.Fatalf("%d writers started after the hold ended with the reply", n)
	}

	// No reply comes: the hold ends by itself.
	q.hold()
	start := time.Now()
	q.pushLatest("outbid\x00a1", []byte("late"))
	for count() == 0 {
		if time.Since(start) > 5*time.Second {
			t.Fatal("the hold never ended")
		}
		time.Sleep(time.Millisecond)
	}
	if waited := time.Since(start); waited < maxPushHold {
		t.Errorf("the push waited %v, want maxPushHold (%v)", waited, maxPushHold)
	}

	c := newOutQueue(4, 4, 0, started)
	c.hold()
	c.close()
	if n := count(); n != 2 {
		t.Errorf("closing a held queue started %d writers in all, want 2: goodbye waits for no reply", n)
	}
}
