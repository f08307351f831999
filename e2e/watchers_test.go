package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
)

// TestWatchersFollowTailFailover has 2,000 WebSocket watchers
// (GAVEL_TAIL_WATCHERS) follow one
// auction through a gateway while bidders bid through the gateway and
// through the chain's gRPC API, SIGKILLs the chain's tail mid-stream and
// lets the master splice it out, so that the gateway must resume its
// upstream watch at the new tail. The auction closes a few seconds after
// the failover. Every watcher must end with the chain's final result (the
// same highest bid, and the closed push with its winner and amount), and
// the seq values each watcher received must strictly increase: nothing
// duplicated, nothing regressing, across the failover.
func TestWatchersFollowTailFailover(t *testing.T) {
	watchers := envInt(t, "GAVEL_TAIL_WATCHERS", 2000)
	// Each bidder pauses between bids so that the pushes (bids x watchers)
	// stay within what this test process, race detector on, can read.
	bidPause := time.Duration(max(25, watchers/10)) * time.Millisecond
	const (
		wsBidders  = 3
		duration   = 10 * time.Second
		killAfter  = 4 * time.Second // after the open
		auctionID  = "f1"
		replyLimit = 10 * time.Second
	)
	c := newGatewayCluster(t, 3)
	victim := c.ids[len(c.ids)-1]
	if role := chainRole(c.config(), victim); role != "tail" {
		t.Fatalf("%s is %q, not the tail", victim, role)
	}

	// Connect the watchers first, so that the auction's clock is not spent
	// on connection set-up.
	ws := make([]*wsClient, watchers)
	var dialWG sync.WaitGroup
	dialErrs := make(chan error, watchers)
	for i := range ws {
		dialWG.Add(1)
		go func() {
			defer dialWG.Done()
			w, err := dialWS(t, c.wsURL("g1", fmt.Sprintf("watcher%03d", i)), nil)
			if err != nil {
				dialErrs <- err
				return
			}
			ws[i] = w
		}()
	}
	dialWG.Wait()
	close(dialErrs)
	for err := range dialErrs {
		t.Fatal(err)
	}

	// Open the auction through the gateway (retrying while the gateway
	// learns the chain).
	auctioneer, err := dialWS(t, c.wsURL("g1", "auctioneer"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var open wsMsg
	openedAt := time.Now()
	for deadline := time.Now().Add(replyLimit); ; {
		open, err = auctioneer.call(fmt.Sprintf("open %s %v watched through a failover", auctionID, duration), "open", replyLimit)
		if err != nil {
			t.Fatal(err)
		}
		if open.Outcome == "success" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if open.Outcome != "success" {
		t.Fatalf("open %s: %s", auctionID, open.Raw)
	}
	closesAt := time.UnixMilli(open.ClosesAt)

	// Every watcher watches; half of them with the JSON form.
	watchErrs := make(chan error, watchers)
	var watchWG sync.WaitGroup
	for i, w := range ws {
		watchWG.Add(1)
		go func() {
			defer watchWG.Done()
			line := "watch " + auctionID
			if i%2 == 1 {
				line = fmt.Sprintf(`{"op":"watch","auction":%q,"id":"w%d"}`, auctionID, i)
			}
			m, err := w.call(line, "watching", replyLimit)
			if err == nil && m.Auction != auctionID {
				err = fmt.Errorf("watcher %d: watch reply %s", i, m.Raw)
			}
			if err != nil {
				watchErrs <- err
			}
		}()
	}
	watchWG.Wait()
	close(watchErrs)
	for err := range watchErrs {
		t.Fatal(err)
	}
	t.Logf("%d watchers watching %s %v after the open; it closes at +%v", watchers, auctionID,
		time.Since(openedAt).Round(time.Millisecond), closesAt.Sub(openedAt).Round(time.Millisecond))

	// Bidders: some through the gateway, one through the gRPC client
	// (which retries across the reconfiguration with the same request id).
	stop := make(chan struct{})
	var bidWG sync.WaitGroup
	var next atomic.Int64
	type bid struct {
		at     time.Time
		amount int64
	}
	var bidMu sync.Mutex
	var successes []bid
	outcomes := map[string]int{}
	record := func(outcome, reason string, amount int64) {
		bidMu.Lock()
		defer bidMu.Unlock()
		outcomes[outcome+"/"+reason]++
		if outcome == "success" {
			successes = append(successes, bid{time.Now(), amount})
		}
	}
	stopBidders := sync.OnceFunc(func() { close(stop); bidWG.Wait() })
	t.Cleanup(stopBidders)
	pause := func() bool {
		select {
		case <-stop:
			return false
		case <-time.After(bidPause + time.Duration(rand.IntN(10))*time.Millisecond):
			return time.Now().Before(closesAt.Add(500 * time.Millisecond))
		}
	}
	for b := 0; b < wsBidders; b++ {
		bw, err := dialWS(t, c.wsURL("g1", fmt.Sprintf("bidder%d", b)), nil)
		if err != nil {
			t.Fatal(err)
		}
		bidWG.Add(1)
		go func() {
			defer bidWG.Done()
			for pause() {
				amount := next.Add(int64(1 + rand.IntN(5)))
				m, err := bw.call(fmt.Sprintf("bid %s %d", auctionID, amount), "bid", replyLimit)
				if err != nil {
					t.Errorf("ws bidder%d: %v", b, err)
					return
				}
				record(m.Outcome, m.Reason, amount)
			}
		}()
	}
	grpcBidder, err := client.New([]string{c.addrs["n1"], c.addrs["n2"], c.addrs["n3"]}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer grpcBidder.Close()
	bidWG.Add(1)
	go func() {
		defer bidWG.Done()
		for pause() {
			amount := next.Add(int64(1 + rand.IntN(5)))
			ctx, cancel := context.WithTimeout(context.Background(), replyLimit)
			rep, err := grpcBidder.Bid(ctx, auctionID, "grpc-bidder", amount, client.NewRequestID())
			cancel()
			if err != nil {
				record("error", err.Error(), amount)
				continue
			}
			reason := strings.ToLower(rep.Reason.String())
			if rep.Reason == api.Reason_REASON_NONE {
				reason = ""
			}
			record(strings.ToLower(rep.Outcome.String()), reason, amount)
		}
	}()

	// SIGKILL the tail mid-stream.
	time.Sleep(time.Until(openedAt.Add(killAfter)))
	if left := time.Until(closesAt); left < 3*time.Second {
		t.Fatalf("set-up took too long: only %v left before the auction closes, too little to see the failover", left)
	}
	st, err := c.nodeStatus(victim)
	for deadline := time.Now().Add(3 * time.Second); err != nil && time.Now().Before(deadline); {
		st, err = c.nodeStatus(victim) // the first call dials; 2,000 connections keep the machine busy
	}
	if err != nil {
		t.Fatalf("status of the tail %s before the kill: %v", victim, err)
	}
	killSeq := st.Applied
	killedAt := time.Now()
	c.kill(victim)
	cfg := c.waitConfig(victim+" removed", 5*time.Second, func(cfg *api.ChainConfig) bool {
		return !slices.Contains(chainIDs(cfg), victim)
	})
	splicedAt := time.Now()
	t.Logf("SIGKILLed tail %s at applied seq %d, +%v after the open; %s after %v", victim, killSeq,
		killedAt.Sub(openedAt).Round(time.Millisecond), describeConfig(cfg), splicedAt.Sub(killedAt).Round(time.Millisecond))

	// Every watcher waits for the closed push.
	closedBy := closesAt.Add(20 * time.Second)
	waitErrs := make(chan error, watchers)
	var waitWG sync.WaitGroup
	for i, w := range ws {
		waitWG.Add(1)
		go func() {
			defer waitWG.Done()
			if _, err := w.expect(time.Until(closedBy), "closed push", func(m wsMsg) bool { return m.Type == "closed" }); err != nil {
				waitErrs <- fmt.Errorf("watcher %d: %w", i, err)
			}
		}()
	}
	waitWG.Wait()
	close(waitErrs)
	stopBidders()
	nErrs := 0
	for err := range waitErrs {
		if nErrs++; nErrs <= 5 {
			t.Error(err)
		}
	}
	if nErrs > 0 {
		t.Errorf("%d of %d watchers got no closed push; gateway log:\n%s", nErrs, watchers, c.gatewayLog("g1", 60))
	}

	// The chain's verdict.
	reader, err := client.New([]string{c.addrs["n1"], c.addrs["n2"]}, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	ctx, cancel := context.WithTimeout(context.Background(), replyLimit)
	res, err := reader.Result(ctx, auctionID)
	cancel()
	if err != nil {
		t.Fatalf("gRPC Result %s: %v", auctionID, err)
	}
	final := res.Info
	if final.State != api.AuctionState_CLOSED_STATE {
		t.Fatalf("the chain says %s is %v after its closing time", auctionID, final.State)
	}
	bidMu.Lock()
	var afterSplice int
	for _, b := range successes {
		if b.at.After(splicedAt) {
			afterSplice++
		}
	}
	t.Logf("bids: %v; %d successful, %d of them acknowledged after the splice; final: %s %d by %q at version %d",
		outcomes, len(successes), afterSplice, final.State, final.Highest, final.Bidder, final.Version)
	bidMu.Unlock()
	if afterSplice < 5 {
		t.Errorf("only %d bids succeeded after the splice: the stream did not go on through the failover", afterSplice)
	}

	// Every watcher's view. The chain commits nothing between the kill and
	// the splice (it has no tail), so every push received within half a
	// failure timeout of the kill was committed by the dead tail: lastOld
	// is the highest seq among them. A watcher's first push above it came
	// through the gateway's upstream resumed at the new tail.
	var lastOld uint64
	for _, w := range ws {
		for _, m := range w.messages() {
			if m.isPush() && m.At.Before(killedAt.Add(failureTimeout/2)) {
				lastOld = max(lastOld, m.Seq)
			}
		}
	}
	var silences, firstAfter, closeDelays []time.Duration
	var counts []int
	bad := 0
	for i, w := range ws {
		var pushes []wsMsg
		for _, m := range w.messages() {
			if m.isPush() {
				pushes = append(pushes, m)
			}
		}
		counts = append(counts, len(pushes))
		var errs []string
		var lastHighest, resumed *wsMsg
		var closed []wsMsg
		for j, p := range pushes {
			if p.Auction != auctionID {
				errs = append(errs, "push for another auction: "+p.Raw)
			}
			if j > 0 && p.Seq <= pushes[j-1].Seq {
				errs = append(errs, fmt.Sprintf("seq %d after %d: %s", p.Seq, pushes[j-1].Seq, p.Raw))
			}
			switch p.Type {
			case "highest":
				lastHighest = &pushes[j]
			case "closed":
				closed = append(closed, p)
				closeDelays = append(closeDelays, p.At.Sub(closesAt))
			}
			if resumed == nil && p.Seq > lastOld {
				resumed = &pushes[j]
				if j > 0 {
					silences = append(silences, p.At.Sub(pushes[j-1].At))
				}
			}
		}
		switch {
		case lastHighest == nil:
			errs = append(errs, "no highest push at all")
		case lastHighest.Amount != final.Highest || lastHighest.Bidder != final.Bidder:
			errs = append(errs, fmt.Sprintf("last highest %d by %q, the chain's final is %d by %q",
				lastHighest.Amount, lastHighest.Bidder, final.Highest, final.Bidder))
		}
		if len(closed) != 1 {
			errs = append(errs, fmt.Sprintf("%d closed pushes", len(closed)))
		} else if cl := closed[0]; cl.Winner != final.Bidder || cl.Amount != final.Highest || cl.Seq > final.Version {
			// The auction's version also counts the bids refused after the
			// close, so the close's seq is at most the final version.
			errs = append(errs, fmt.Sprintf("closed push %s; the chain says winner %q amount %d version %d",
				cl.Raw, final.Bidder, final.Highest, final.Version))
		}
		switch {
		case resumed == nil:
			errs = append(errs, fmt.Sprintf("no push above seq %d, the last the dead tail sent", lastOld))
		case resumed.Type != "highest":
			errs = append(errs, "no highest push after the failover: the first push then was "+resumed.Raw)
		default:
			firstAfter = append(firstAfter, resumed.At.Sub(killedAt))
		}
		if len(errs) > 0 {
			if bad++; bad <= 5 {
				t.Errorf("watcher %d (%d pushes): %v", i, len(pushes), errs)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d watchers saw something wrong; gateway log:\n%s", bad, watchers, c.gatewayLog("g1", 60))
	}
	// Successful bids that no watcher saw as a highest push. A slow
	// connection may have one conflated away, but a bid that reached no
	// watcher at all went missing upstream: the resumed watch at the new
	// tail must replay every change after the gateway's last seq.
	seen := map[int64]bool{}
	for _, w := range ws {
		for _, m := range w.messages() {
			if m.Type == "highest" {
				seen[m.Amount] = true
			}
		}
	}
	var unseen []string
	bidMu.Lock()
	for _, b := range successes {
		if !seen[b.amount] {
			unseen = append(unseen, fmt.Sprintf("%d@%+dms", b.amount, b.at.Sub(killedAt).Milliseconds()))
		}
	}
	bidMu.Unlock()
	t.Logf("%d successful bids never pushed to any watcher (amount@ack time from the kill): %v", len(unseen), unseen)
	if len(unseen) > 0 {
		t.Errorf("%d successful bids reached no watcher across the failover: %v", len(unseen), unseen)
	}

	slices.Sort(counts)
	slices.Sort(firstAfter)
	slices.Sort(silences)
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	t.Logf("pushes per watcher: min %d, median %d, max %d (%d successful bids)", counts[0], counts[len(counts)/2],
		counts[len(counts)-1], len(successes))
	if len(firstAfter) > 0 {
		t.Logf("kill -> first push above seq %d (the dead tail's last): min %v, median %v, max %v (the master spliced %s out after %v)",
			lastOld, ms(firstAfter[0]), ms(firstAfter[len(firstAfter)/2]), ms(firstAfter[len(firstAfter)-1]), victim,
			ms(splicedAt.Sub(killedAt)))
	}
	if len(silences) > 0 {
		t.Logf("silence before that push, per watcher: min %v, median %v, max %v",
			ms(silences[0]), ms(silences[len(silences)/2]), ms(silences[len(silences)-1]))
	}
	if len(closeDelays) > 0 {
		slices.Sort(closeDelays)
		t.Logf("closed push after closes_at: min %v, median %v, max %v", ms(closeDelays[0]),
			ms(closeDelays[len(closeDelays)/2]), ms(closeDelays[len(closeDelays)-1]))
	}
	var upstream []string
	for _, line := range strings.Split(c.gatewayLog("g1", 100000), "\n") {
		if strings.Contains(line, "upstream") || strings.Contains(line, "tail changed") {
			upstream = append(upstream, line)
		}
	}
	t.Logf("the gateway's upstream, from its log:\n%s", strings.Join(upstream[max(0, len(upstream)-12):], "\n"))
}
