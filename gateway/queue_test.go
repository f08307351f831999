package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
	q := newOutQueue(4, 8)
	ctx := context.Background()
	if err := q.reply(ctx, []byte(`{"type":"watching","auction":"a1"}`)); err != nil {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= 10_000; seq++ {
		a := "a1"
		if seq%2 == 0 {
			a = "a2"
		}
		q.pushConflating("highest\x00"+a, highestFrame(a, seq))
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
		q.pushConflating("highest\x00a1", highestFrame("a1", seq))
	}
	if n := len(q.take()); n != 3 {
		t.Errorf("took %d after 3 pushes below the limit, want 3", n)
	}
}

// Replies are never dropped: past the limit, reply waits until the writer
// takes, and fails only when its context ends or the queue closes.
func TestQueueBoundsReplies(t *testing.T) {
	q := newOutQueue(2, 2)
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

// The writer is told when there is something to take.
func TestQueueReady(t *testing.T) {
	q := newOutQueue(4, 4)
	select {
	case <-q.ready:
		t.Fatal("ready before anything was queued")
	default:
	}
	q.pushLatest("metrics", []byte("m1"))
	q.pushLatest("metrics", []byte("m2"))
	select {
	case <-q.ready:
	default:
		t.Fatal("not ready after a push")
	}
	if got := q.take(); len(got) != 1 || string(got[0]) != "m2" {
		t.Errorf("took %q, want the newest metrics only", got)
	}
}
