package gateway

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"testing"
)

// The messages that encode themselves give the very bytes encoding/json
// gives (HTML escaping off), for random values, awkward strings included.
func TestFastEncodingMatchesEncodingJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	strs := []string{"", "a1", "alice", `quote " and \ backslash`, "tab\tnew\nline\r", "\x00\x01\x1f\x7f",
		"<html>&amp;", "héllo wörld ✓", "\u2028\u2029", "bad \xff utf8 \xc3", "emoji 🎉"}
	ids := []json.RawMessage{nil, json.RawMessage(`7`), json.RawMessage(`"r-1"`), json.RawMessage(`{ "a" : [1, 2] }`),
		json.RawMessage(` -3.5e2 `)}
	str := func() string { return strs[rng.IntN(len(strs))] }
	num := func() int64 { return rng.Int64() - rng.Int64() }
	for range 2000 {
		msgs := []any{
			bidReply{Type: "bid", Auction: str(), Amount: num(), Bidder: str(), Outcome: str(), Reason: str(),
				Detail: str(), Version: rng.Uint64(), ID: ids[rng.IntN(len(ids))]},
			highestPush{Type: "highest", Auction: str(), Amount: num(), Bidder: str(), ClosesAt: num(), Seq: rng.Uint64(), ServerTime: num()},
			extendedPush{Type: "extended", Auction: str(), ClosesAt: num(), Seq: rng.Uint64(), ServerTime: num()},
			closedPush{Type: "closed", Auction: str(), Winner: str(), Amount: num(), Seq: rng.Uint64(), ServerTime: num()},
			outbidPush{Type: "outbid", Auction: str(), Amount: num(), Bidder: str(), YourBid: num(), Seq: rng.Uint64(), ServerTime: num()},
		}
		for _, m := range msgs {
			var want bytes.Buffer
			enc := json.NewEncoder(&want)
			enc.SetEscapeHTML(false)
			if err := enc.Encode(m); err != nil {
				t.Fatal(err)
			}
			if got := encode(m); !bytes.Equal(got, bytes.TrimSuffix(want.Bytes(), []byte("\n"))) {
				t.Fatalf("%T:\n got %s\nwant %s", m, got, want.Bytes())
			}
		}
	}
}

func BenchmarkEncodeBidReply(b *testing.B) {
	m := bidReply{Type: "bid", Auction: "a1", Amount: 1234, Bidder: "bidder-12", Outcome: "success", Version: 98765,
		ID: json.RawMessage(`42`)}
	b.ReportAllocs()
	for b.Loop() {
		encode(m)
	}
}

// The same message through encoding/json, for comparison.
func BenchmarkEncodeBidReplyEncodingJSON(b *testing.B) {
	m := bidReply{Type: "bid", Auction: "a1", Amount: 1234, Bidder: "bidder-12", Outcome: "success", Version: 98765,
		ID: json.RawMessage(`42`)}
	b.ReportAllocs()
	for b.Loop() {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(m)
	}
}
