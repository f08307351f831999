package main

import (
	"context"
	"strings"
	"testing"
	"time"
)

// A lost acknowledged bid shows in chain order: a later bid succeeds at
// or below it, or takes its sequence number again.
func TestBookOrdered(t *testing.T) {
	now := time.Now()
	var k book
	for _, a := range []ack{
		{bidder: "alice", amount: 100, outcome: "success", version: 2, at: now},
		{bidder: "bob", amount: 104, outcome: "success", version: 4, at: now},
		{bidder: "alice", amount: 103, outcome: "fail", reason: "too_low", version: 3, at: now},
		{bidder: "alice", amount: 109, outcome: "success", version: 5, at: now},
		{bidder: "bob", amount: 110, outcome: "exception", reason: "unavailable", at: now.Add(time.Second)},
	} {
		k.add(a)
	}
	if err := k.ordered(); err != nil {
		t.Fatal(err)
	}
	if best, ok := k.highest(); !ok || best.amount != 109 || best.bidder != "alice" {
		t.Fatalf("highest %+v %v", best, ok)
	}
	if c := k.counts(); c["success"] != 3 || c["fail"] != 1 || c["exception"] != 1 {
		t.Fatalf("counts %v", c)
	}
	if !k.unavailableSince(now) || k.unavailableSince(now.Add(2*time.Second)) {
		t.Fatal("unavailableSince")
	}

	lost := &book{acks: append([]ack(nil), k.acks...)}
	lost.add(ack{bidder: "bob", amount: 105, outcome: "success", version: 6}) // 109 was forgotten
	if err := lost.ordered(); err == nil || !strings.Contains(err.Error(), "109") {
		t.Fatalf("a bid below an acknowledged one: %v", err)
	}
	reused := &book{acks: append([]ack(nil), k.acks...)}
	reused.add(ack{bidder: "bob", amount: 120, outcome: "success", version: 5})
	if err := reused.ordered(); err == nil {
		t.Fatal("a version acknowledged twice: no error")
	}
}

// pause waits for the calls in flight and holds new ones until resume.
func TestGate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var g gate
	if !g.enter(ctx) {
		t.Fatal("enter")
	}
	paused := make(chan struct{})
	go func() { _ = g.pause(ctx); close(paused) }()
	select {
	case <-paused:
		t.Fatal("pause returned with a call in flight")
	case <-time.After(50 * time.Millisecond):
	}
	g.leave()
	<-paused
	entered := make(chan struct{})
	go func() { g.enter(ctx); close(entered) }()
	select {
	case <-entered:
		t.Fatal("entered while paused")
	case <-time.After(50 * time.Millisecond):
	}
	g.resume()
	<-entered
	g.leave()

	short, stop := context.WithCancel(ctx)
	_ = g.pause(ctx)
	stop()
	if g.enter(short) {
		t.Fatal("entered a paused gate after its context ended")
	}
}
