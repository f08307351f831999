package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/client"
)

// outcomeCode maps a decided outcome to the exit code.
func outcomeCode(o api.Outcome) int {
	switch o {
	case api.Outcome_SUCCESS:
		return exitOK
	case api.Outcome_FAIL:
		return exitFail
	}
	return exitException
}

// outcomeLine is the one human line for a decided outcome, e.g.
// "fail: too low: the next bid must be at least 105". success is the text
// after "success: ".
func outcomeLine(o api.Outcome, r api.Reason, detail, success string) string {
	if o == api.Outcome_SUCCESS {
		return "success: " + success
	}
	out := words(o.String())
	if o == api.Outcome_OUTCOME_UNSPECIFIED {
		out = "exception"
	}
	why := words(r.String())
	switch {
	case r == api.Reason_REASON_NONE:
		why = detail
	case detail != "" && !strings.HasPrefix(detail, why):
		why += ": " + detail
	case detail != "":
		why = detail
	}
	if why == "" {
		return out
	}
	return out + ": " + why
}

// unavailable is the error of a bid or open that got no decision.
func unavailable(err error, requestID, flag string) error {
	if errors.Is(err, client.ErrUnavailable) {
		msg := strings.TrimPrefix(err.Error(), client.ErrUnavailable.Error()+": ")
		if errors.Is(err, context.Canceled) {
			return exception("interrupted: no decision yet for request id %s; it may still be applied: "+
				"run again with %s %s to learn its outcome", requestID, flag, requestID)
		}
		return exception("unavailable: %s\nthe request may still be applied: run again with %s %s to learn its outcome exactly once",
			msg, flag, requestID)
	}
	return exception("%v", err)
}

// bidJSON is the --json form of a bid's outcome.
type bidJSON struct {
	Outcome   string `json:"outcome"` // success, fail or exception
	Reason    string `json:"reason,omitempty"`
	Detail    string `json:"detail,omitempty"`
	Auction   string `json:"auction"`
	Bidder    string `json:"bidder"`
	Amount    int64  `json:"amount"`
	Version   uint64 `json:"version,omitempty"`
	Epoch     uint64 `json:"epoch,omitempty"`
	Node      string `json:"node,omitempty"`
	RequestID string `json:"request_id"`
}

func cmdBid(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "bid", "--auction ID --bidder NAME AMOUNT [flags]", `
Place a bid of AMOUNT (a whole number of minor units) on an auction. The bid
goes to the chain head; when the chain cannot decide it (reconfiguring, a node
down), it is retried with the same request id until --timeout: the chain
remembers each request id's outcome, so a retry never applies a bid twice.

prints:  success: alice leads a1 with 100 (version 17)        exit 0
         fail: too low: the next bid must be at least 105     exit 1
         exception: closed: auction "a1" is closed            exit 2`)
	auctionID := f.String("auction", "", "auction id (required)")
	bidder := f.String("bidder", "", "bidder name (required)")
	intFlag(f, "amount", "", "the amount, if not given as the argument")
	requestID := f.String("request-id", "", "request id, to retry a bid exactly once (default: a fresh random id)")
	com, pos, err := parseCommon(f, args)
	if err != nil {
		return err
	}
	amountText, err := oneArg(f, "amount", "amount", pos)
	if err != nil {
		return err
	}
	if *auctionID == "" {
		return f.usageErr("missing --auction")
	}
	if *bidder == "" {
		return f.usageErr("missing --bidder")
	}
	amount, err := parseAmount(f, "amount", amountText)
	if err != nil {
		return err
	}
	if err := auction.ValidateBid(&api.PlaceBid{Auction: *auctionID, Bidder: *bidder, Amount: amount,
		RequestId: *requestID}); err != nil {
		return exception("invalid bid: %v", err)
	}

	cl, cfg, err := com.client()
	if err != nil {
		return err
	}
	defer cl.Close()
	if *requestID == "" {
		*requestID = client.NewRequestID()
	}
	cctx, cancel := context.WithTimeout(ctx, com.timeout)
	defer cancel()
	if cctx, err = com.authorize(cctx, cfg, *bidder, auth.RoleBidder); err != nil {
		return err
	}
	r, err := cl.Bid(cctx, *auctionID, *bidder, amount, *requestID)
	if err != nil {
		return unavailable(err, *requestID, "--request-id")
	}
	if com.json {
		j := bidJSON{Outcome: snake(r.Outcome.String()), Detail: r.Detail, Auction: *auctionID,
			Bidder: *bidder, Amount: amount, Version: r.Version, Epoch: r.Epoch, Node: r.Node, RequestID: *requestID}
		if r.Reason != api.Reason_REASON_NONE {
			j.Reason = snake(r.Reason.String())
		}
		e.printJSON(j)
	} else {
		success := fmt.Sprintf("%s leads %s with %d (version %d)", *bidder, *auctionID, amount, r.Version)
		if strings.HasPrefix(r.Detail, "duplicate") {
			success = fmt.Sprintf("%s bid %d on %s (version %d; %s)", *bidder, amount, *auctionID, r.Version, r.Detail)
		}
		fmt.Fprintln(e.stdout, outcomeLine(r.Outcome, r.Reason, r.Detail, success))
	}
	return exitWith(outcomeCode(r.Outcome))
}

// auctionJSON is the --json form of an auction.
type auctionJSON struct {
	Auction       string `json:"auction"`
	Item          string `json:"item"`
	State         string `json:"state"` // open or closed
	Highest       int64  `json:"highest"`
	Bidder        string `json:"bidder,omitempty"`
	Winner        string `json:"winner,omitempty"` // once closed
	ClosesAt      string `json:"closes_at,omitempty"`
	ClosesAtMs    int64  `json:"closes_at_ms"`
	MinIncrement  int64  `json:"min_increment"`
	StartingPrice int64  `json:"starting_price"`
	SoftCloseMs   int64  `json:"soft_close_ms"`
	Version       uint64 `json:"version"`
	Bids          uint64 `json:"bids"`
	Bidders       uint64 `json:"bidders"`
	Epoch         uint64 `json:"epoch,omitempty"`
	Node          string `json:"node,omitempty"`
}

func toAuctionJSON(in *api.AuctionInfo, epoch uint64, node string) auctionJSON {
	j := auctionJSON{Auction: in.Auction, Item: in.Item, State: "open", Highest: in.Highest, Bidder: in.Bidder,
		ClosesAtMs: in.ClosesAtMs, MinIncrement: in.MinIncrement, StartingPrice: in.StartingPrice,
		SoftCloseMs: in.SoftCloseMs, Version: in.Version, Bids: in.Bids, Bidders: in.Bidders, Epoch: epoch, Node: node}
	if in.ClosesAtMs > 0 {
		j.ClosesAt = time.UnixMilli(in.ClosesAtMs).UTC().Format(time.RFC3339Nano)
	}
	if in.State == api.AuctionState_CLOSED_STATE {
		j.State, j.Winner = "closed", in.Bidder
	}
	return j
}

// resultLine is the one human line for an auction's result.
func resultLine(in *api.AuctionInfo, nowMs int64) string {
	name := in.Auction
	if in.Item != "" {
		name += fmt.Sprintf(" %q", in.Item)
	}
	if in.State == api.AuctionState_CLOSED_STATE {
		if in.Bidder == "" {
			return fmt.Sprintf("closed: %s: no bids (version %d)", name, in.Version)
		}
		return fmt.Sprintf("closed: %s: won by %s with %d (version %d)", name, in.Bidder, in.Highest, in.Version)
	}
	closes := fmt.Sprintf("closes %s at %s", fmtIn(in.ClosesAtMs, nowMs), fmtTime(in.ClosesAtMs))
	if in.Bidder == "" {
		return fmt.Sprintf("open: %s: no bids yet (starting price %d), %s (version %d)",
			name, in.StartingPrice, closes, in.Version)
	}
	return fmt.Sprintf("open: %s: %s leads with %d (next bid at least %d), %s (version %d)",
		name, in.Bidder, in.Highest, in.Highest+max(in.MinIncrement, 1), closes, in.Version)
}

func cmdResult(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "result", "[--auction] ID [flags]", `
Show an auction as the chain tail has committed it: while open, the highest
bid and bidder; once closed, the winner and the winning amount.`)
	f.String("auction", "", "auction id (or give it as the argument)")
	com, pos, err := parseCommon(f, args)
	if err != nil {
		return err
	}
	id, err := oneArg(f, "auction", "auction id", pos)
	if err != nil {
		return err
	}
	cl, _, cctx, done, err := com.call(ctx)
	if err != nil {
		return err
	}
	defer done()
	r, err := cl.Result(cctx, id)
	if errors.Is(err, client.ErrUnknownAuction) {
		return exception("unknown auction %q", id)
	}
	if err != nil {
		return readErr(err)
	}
	if com.json {
		e.printJSON(toAuctionJSON(r.Info, r.Epoch, r.Node))
		return nil
	}
	now := r.ServerTimeMs
	if now == 0 {
		now = time.Now().UnixMilli()
	}
	fmt.Fprintln(e.stdout, resultLine(r.Info, now))
	return nil
}

// readErr is the error of a read that got no answer.
func readErr(err error) error {
	if errors.Is(err, client.ErrUnavailable) {
		return exception("unavailable: %s", strings.TrimPrefix(err.Error(), client.ErrUnavailable.Error()+": "))
	}
	return exception("%v", err)
}

// openJSON is the --json form of an open's outcome.
type openJSON struct {
	Outcome   string       `json:"outcome"`
	Reason    string       `json:"reason,omitempty"`
	Detail    string       `json:"detail,omitempty"`
	Auction   string       `json:"auction"`
	Version   uint64       `json:"version,omitempty"`
	Epoch     uint64       `json:"epoch,omitempty"`
	Node      string       `json:"node,omitempty"`
	RequestID string       `json:"request_id"`
	Info      *auctionJSON `json:"info,omitempty"`
}

func cmdOpen(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "open", "[--auction] ID --duration D [--item TEXT] [flags]", `
Open an auction that closes D after the head sequences it (e.g. 10m, 1h30m).
Bids must beat the highest by --min-increment; the first must reach
--starting-price. With --soft-close S, a successful bid in the last S pushes
the closing time back to S after the bid (anti-sniping).`)
	f.String("auction", "", "auction id (or give it as the argument)")
	duration := f.Duration("duration", 0, "how long the auction stays open (required)")
	item := f.String("item", "", "what is sold (free text)")
	minInc := intFlag(f, "min-increment", "1", "smallest raise over the highest bid, in minor units")
	start := intFlag(f, "starting-price", "0", "smallest first bid, in minor units")
	soft := f.Duration("soft-close", 0, "anti-sniping window (0: none)")
	requestID := f.String("request-id", "", "request id, to retry an open exactly once (default: a fresh random id)")
	com, pos, err := parseCommon(f, args)
	if err != nil {
		return err
	}
	id, err := oneArg(f, "auction", "auction id", pos)
	if err != nil {
		return err
	}
	if !f.Changed("duration") {
		return f.usageErr("missing --duration (e.g. --duration 10m)")
	}
	inc, err := parseNonNegative(f, "min-increment", minInc.String())
	if err != nil {
		return err
	}
	price, err := parseNonNegative(f, "starting-price", start.String())
	if err != nil {
		return err
	}
	open := &api.OpenAuction{Auction: id, Item: *item, DurationMs: duration.Milliseconds(),
		MinIncrement: inc, StartingPrice: price, SoftCloseMs: soft.Milliseconds(), RequestId: *requestID}
	if err := auction.ValidateOpen(open); err != nil {
		return exception("%v", err)
	}

	cl, cfg, err := com.asAdmin().client()
	if err != nil {
		return err
	}
	defer cl.Close()
	if open.RequestId == "" {
		open.RequestId = client.NewRequestID()
	}
	cctx, cancel := context.WithTimeout(ctx, com.timeout)
	defer cancel()
	if cctx, err = com.authorize(cctx, cfg, adminID, auth.RoleAdmin); err != nil {
		return err
	}
	r, err := cl.Open(cctx, open)
	if err != nil {
		return unavailable(err, open.RequestId, "--request-id")
	}
	if com.json {
		j := openJSON{Outcome: snake(r.Outcome.String()), Detail: r.Detail, Auction: id, Version: r.Version,
			Epoch: r.Epoch, Node: r.Node, RequestID: open.RequestId}
		if r.Reason != api.Reason_REASON_NONE {
			j.Reason = snake(r.Reason.String())
		}
		if r.Info != nil {
			info := toAuctionJSON(r.Info, 0, "")
			j.Info = &info
		}
		e.printJSON(j)
	} else {
		success := fmt.Sprintf("opened %s (version %d)", id, r.Version)
		if in := r.Info; in != nil {
			success = fmt.Sprintf("opened %s, closes at %s (version %d)", id, fmtTime(in.ClosesAtMs), r.Version)
		}
		fmt.Fprintln(e.stdout, outcomeLine(r.Outcome, r.Reason, r.Detail, success))
	}
	return exitWith(outcomeCode(r.Outcome))
}

// parseNonNegative reads a price or increment: a usage error if it is not a
// whole number, an exception (exit 2) if it is outside 0..10^15.
func parseNonNegative(f *flags, name, s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, f.usageErr("invalid --%s %q: want a whole number of minor units, e.g. 5", name, s)
	}
	if err != nil || n < 0 || n > auction.MaxAmount {
		return 0, exception("invalid --%s %s: must be a whole number between 0 and 10^15", name, s)
	}
	return n, nil
}

func cmdAuctions(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "auctions", "[flags]", `
List every auction as the chain tail has committed it, sorted by id.`)
	com, err := parseCommonNoArgs(f, args)
	if err != nil {
		return err
	}
	cl, _, cctx, done, err := com.call(ctx)
	if err != nil {
		return err
	}
	defer done()
	r, err := cl.List(cctx)
	if err != nil {
		return readErr(err)
	}
	if com.json {
		for _, in := range r.Auctions {
			e.printJSON(toAuctionJSON(in, r.Epoch, r.Node))
		}
		return nil
	}
	if len(r.Auctions) == 0 {
		fmt.Fprintln(e.stdout, "no auctions")
		return nil
	}
	now := time.Now().UnixMilli()
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AUCTION\tSTATE\tHIGHEST\tBIDDER\tCLOSES\tBIDS\tVERSION\tITEM")
	for _, in := range r.Auctions {
		state, closes, bidder := "open", fmtIn(in.ClosesAtMs, now), in.Bidder
		if in.State == api.AuctionState_CLOSED_STATE {
			state, closes = "closed", fmtTime(in.ClosesAtMs)
		}
		if bidder == "" {
			bidder = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\n", in.Auction, state, in.Highest, bidder, closes,
			in.Bids, in.Version, in.Item)
	}
	return tw.Flush()
}
