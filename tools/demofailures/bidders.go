package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"time"
)

// The auction the bidders fight over.
const auctionID = "a1"

// bidder is alice or bob: connected to the gateway, watching the auction,
// and outbidding the other whenever the gateway says they lead (an
// outbid or highest push naming someone else). A bidder who has led for
// idleResult without hearing anything asks for the result.
type bidder struct {
	name string
	d    *demo
	ws   *wsConn
	wake chan struct{} // a push changed top

	mu  sync.Mutex // guards top
	top lead       // the newest leader the bidder knows of
}

// lead is an auction's highest bid and its chain sequence number.
type lead struct {
	amount int64
	bidder string
	seq    uint64
	at     time.Time
}

// idleResult is how long a leading bidder waits for news before asking.
const idleResult = 1500 * time.Millisecond

func newBidder(ctx context.Context, d *demo, name string) (*bidder, error) {
	b := &bidder{name: name, d: d, wake: make(chan struct{}, 1)}
	ws, err := dial(ctx, d.addrs[d.gateway], name, b.push)
	if err != nil {
		return nil, err
	}
	b.ws = ws
	if m, err := ws.call(ctx, map[string]any{"op": "watch", "auction": auctionID}); err != nil || m.Type != "watching" {
		ws.close()
		return nil, fmt.Errorf("%s: watch %s: %v %+v", name, auctionID, err, m)
	}
	return b, nil
}

// push takes the gateway's pushes: highest and outbid move top.
func (b *bidder) push(m msg) {
	if m.Auction != auctionID || (m.Type != "highest" && m.Type != "outbid") {
		return
	}
	b.learn(lead{amount: m.Amount, bidder: m.Bidder, seq: m.Seq, at: time.Now()})
}

// learn records a leader newer than the one known.
func (b *bidder) learn(l lead) {
	b.mu.Lock()
	if l.seq > b.top.seq {
		b.top = l
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *bidder) leader() lead {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.top
}

// run bids until ctx ends.
func (b *bidder) run(ctx context.Context) {
	for ctx.Err() == nil {
		if b.leader().bidder == b.name {
			select {
			case <-ctx.Done():
				return
			case <-b.wake:
			case <-time.After(idleResult):
				b.checkResult(ctx)
			}
			continue
		}
		// Think a little, as people do, then outbid.
		if sleep(ctx, time.Duration(40+rand.IntN(80))*time.Millisecond) != nil {
			return
		}
		top := b.leader()
		if top.bidder == b.name {
			continue
		}
		amount := max(top.amount, 95) + 1 + rand.Int64N(5)
		b.bid(ctx, amount)
	}
}

// bid places one bid through the gateway and logs its answer.
func (b *bidder) bid(ctx context.Context, amount int64) {
	if !b.d.gate.enter(ctx) {
		return
	}
	defer b.d.gate.leave()
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, b.d.callTimeout+5*time.Second)
	m, err := b.ws.call(cctx, map[string]any{"op": "bid", "auction": auctionID, "amount": amount})
	cancel()
	if err != nil {
		return // the demo is ending, or the gateway did not answer at all
	}
	ms := time.Since(start).Milliseconds()
	b.d.book.add(ack{bidder: b.name, amount: amount, outcome: m.Outcome, reason: m.Reason, version: m.Version, at: time.Now()})
	words := m.Outcome
	if m.Reason != "" {
		words += " (" + m.Reason + ")"
	}
	attrs := []any{"bidder", b.name, "amount", amount, "outcome", m.Outcome}
	if m.Reason != "" {
		attrs = append(attrs, "reason", m.Reason)
	}
	attrs = append(attrs, "version", m.Version, "ms", ms, "epoch", b.d.epoch.Load())
	level := slog.LevelInfo
	if m.Outcome == "exception" {
		level = slog.LevelWarn
		attrs = append(attrs, "detail", m.Detail)
	}
	b.d.log.Log(context.Background(), level, fmt.Sprintf("demo: %s bid %d: %s", b.name, amount, words), attrs...)
	if m.Outcome == "success" {
		b.learn(lead{amount: amount, bidder: b.name, seq: m.Version, at: time.Now()})
	}
}

// checkResult asks for the auction's result, as a leading bidder who has
// heard nothing for a while does, and logs the answer.
func (b *bidder) checkResult(ctx context.Context) {
	if !b.d.gate.enter(ctx) {
		return
	}
	defer b.d.gate.leave()
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, b.d.callTimeout+5*time.Second)
	m, err := b.ws.result(cctx, auctionID)
	cancel()
	ms := time.Since(start).Milliseconds()
	switch {
	case errors.Is(err, errUnavailable):
		b.d.log.Warn(fmt.Sprintf("demo: %s result %s: unavailable", b.name, auctionID), "bidder", b.name,
			"reason", "unavailable", "ms", ms, "epoch", b.d.epoch.Load(), "detail", m.Error)
	case err != nil:
		return
	default:
		b.d.log.Info(fmt.Sprintf("demo: %s result %s: highest %d by %s", b.name, auctionID, m.Highest, m.Bidder),
			"bidder", b.name, "highest", m.Highest, "leader", m.Bidder, "version", m.Version, "ms", ms, "epoch", b.d.epoch.Load())
		b.learn(lead{amount: m.Highest, bidder: m.Bidder, seq: m.Version, at: time.Now()})
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// gate lets the demo pause the bidders and know that none of them waits
// for an answer.
type gate struct {
	mu       sync.Mutex // guards the fields below
	paused   bool
	inflight int
}

// enter waits while the gate is paused, then counts a call in flight; it
// returns false if ctx ended first.
func (g *gate) enter(ctx context.Context) bool {
	for {
		g.mu.Lock()
		if !g.paused {
			g.inflight++
			g.mu.Unlock()
			return true
		}
		g.mu.Unlock()
		if sleep(ctx, 5*time.Millisecond) != nil {
			return false
		}
	}
}

func (g *gate) leave() {
	g.mu.Lock()
	g.inflight--
	g.mu.Unlock()
}

// pause stops new calls and waits until every call in flight has its
// answer.
func (g *gate) pause(ctx context.Context) error {
	g.mu.Lock()
	g.paused = true
	g.mu.Unlock()
	for {
		g.mu.Lock()
		n := g.inflight
		g.mu.Unlock()
		if n == 0 {
			return nil
		}
		if err := sleep(ctx, 5*time.Millisecond); err != nil {
			return err
		}
	}
}

func (g *gate) resume() {
	g.mu.Lock()
	g.paused = false
	g.mu.Unlock()
}

// ack is one answer to a bid.
type ack struct {
	bidder  string
	amount  int64
	outcome string // success, fail, exception
	reason  string
	version uint64 // the auction's version after the bid: its chain sequence number
	at      time.Time
}

// book keeps every answer the bidders got.
type book struct {
	mu   sync.Mutex // guards acks
	acks []ack
}

func (k *book) add(a ack) {
	k.mu.Lock()
	k.acks = append(k.acks, a)
	k.mu.Unlock()
}

// highest returns the highest acknowledged (successful) bid so far.
func (k *book) highest() (ack, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var best ack
	found := false
	for _, a := range k.acks {
		if a.outcome == "success" && (!found || a.amount > best.amount) {
			best, found = a, true
		}
	}
	return best, found
}

// counts returns how many answers had each outcome.
func (k *book) counts() map[string]int {
	k.mu.Lock()
	defer k.mu.Unlock()
	out := map[string]int{}
	for _, a := range k.acks {
		out[a.outcome]++
	}
	return out
}

// unavailableSince reports whether some bid was answered unavailable
// after t.
func (k *book) unavailableSince(t time.Time) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, a := range k.acks {
		if a.reason == "unavailable" && a.at.After(t) {
			return true
		}
	}
	return false
}

// ordered checks that the acknowledged bids, in chain order (version),
// have distinct versions and rising amounts: a lost acknowledged bid would
// let a later bid succeed at or below it, or reuse its sequence number.
func (k *book) ordered() error {
	k.mu.Lock()
	var wins []ack
	for _, a := range k.acks {
		if a.outcome == "success" {
			wins = append(wins, a)
		}
	}
	k.mu.Unlock()
	slices.SortFunc(wins, func(a, b ack) int { return cmp.Compare(a.version, b.version) })
	for i := 1; i < len(wins); i++ {
		p, a := wins[i-1], wins[i]
		if a.version == p.version || a.amount <= p.amount {
			return fmt.Errorf("acknowledged bids out of order: %s %d at version %d, then %s %d at version %d",
				p.bidder, p.amount, p.version, a.bidder, a.amount, a.version)
		}
	}
	return nil
}
