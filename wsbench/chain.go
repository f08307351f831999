package wsbench

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
)

// Chain is what the bench needs of the chain's client API: opening its
// auctions, and, with Via "grpc", bidding straight at the head. It must
// be safe for concurrent use.
type Chain interface {
	// Open opens auction for d with a minimum increment of 1; an auction
	// that cannot be opened (it exists, the chain is unavailable) is an
	// error.
	Open(ctx context.Context, auction string, d time.Duration) error
	// Bid places one bid and returns its decided outcome; err is set when
	// no outcome came (the chain unavailable, ctx ended).
	Bid(ctx context.Context, auction, bidder string, amount int64) (BidResult, error)
}

// BidResult is the outcome of one bid, in the gateway protocol's words.
type BidResult struct {
	// Outcome is "success", "fail" (too low) or "exception".
	Outcome string
	// Reason is the lower-case reason ("too_low", "closed", ...), "" on
	// success.
	Reason string
	// Version is the chain sequence number of the bid's update: the seq of
	// the highest push a successful bid causes.
	Version uint64
}

// ClientChain adapts a Go client of the chain (package client) to Chain:
// bids go to the head as client.Client.Bid places them, with a fresh
// request id each.
func ClientChain(cl *client.Client) Chain { return clientChain{cl} }

// clientChain is ClientChain's Chain.
type clientChain struct{ cl *client.Client }

// Open implements Chain.
func (c clientChain) Open(ctx context.Context, auction string, d time.Duration) error {
	r, err := c.cl.Open(ctx, &api.OpenAuction{Auction: auction, Item: "gavel bench ws",
		DurationMs: d.Milliseconds(), MinIncrement: 1})
	if err != nil {
		return err
	}
	if r.Outcome != api.Outcome_SUCCESS {
		return fmt.Errorf("%s: %s", strings.ToLower(r.Reason.String()), r.Detail)
	}
	return nil
}

// Bid implements Chain.
func (c clientChain) Bid(ctx context.Context, auction, bidder string, amount int64) (BidResult, error) {
	r, err := c.cl.Bid(ctx, auction, bidder, amount, "")
	if err != nil {
		return BidResult{}, err
	}
	res := BidResult{Outcome: "exception", Version: r.Version}
	switch r.Outcome {
	case api.Outcome_SUCCESS:
		res.Outcome = "success"
	case api.Outcome_FAIL:
		res.Outcome = "fail"
	}
	if r.Reason != api.Reason_REASON_NONE {
		res.Reason = strings.ToLower(r.Reason.String())
	}
	return res, nil
}
