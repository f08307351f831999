package gateway

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gavel-auction/gavel/auction"
)

// Every command of docs/gateway.md, in its text and its JSON form, parses
// to the same command.
func TestParseValid(t *testing.T) {
	for _, tc := range []struct {
		line string
		want command
	}{
		{"help", command{op: opHelp}},
		{"  HELP  ", command{op: opHelp}},
		{`{"op":"help"}`, command{op: opHelp, json: true}},
		{"login alice", command{op: opLogin, bidder: "alice"}},
		{`{"op":"login","bidder":"alice"}`, command{op: opLogin, bidder: "alice", json: true}},
		{"login Zoë", command{op: opLogin, bidder: "Zoë"}},
		{"bid a1 150", command{op: opBid, auction: "a1", amount: 150, amountOK: true}},
		{"Bid\ta1   150", command{op: opBid, auction: "a1", amount: 150, amountOK: true}},
		{"bid a1 +7", command{op: opBid, auction: "a1", amount: 7, amountOK: true}},
		{`{"op":"bid","auction":"a1","amount":150,"id":"7"}`,
			command{op: opBid, auction: "a1", amount: 150, amountOK: true, id: json.RawMessage(`"7"`), json: true}},
		{`{"op":"bid","auction":"a1","amount":150,"id":7}`,
			command{op: opBid, auction: "a1", amount: 150, amountOK: true, id: json.RawMessage(`7`), json: true}},
		{`{"op":"bid","auction":"a1","amount":5,"bidder":"bob"}`,
			command{op: opBid, auction: "a1", amount: 5, amountOK: true, bidder: "bob", json: true}},
		{`  {"op":"bid", "amount":5, "auction":"a 1"}  `, command{op: opBid, auction: "a 1", amount: 5, amountOK: true, json: true}},
		// Out of 1..MaxAmount: parsed, answered as invalid_amount.
		{"bid a1 0", command{op: opBid, auction: "a1", amount: 0}},
		{"bid a1 -5", command{op: opBid, auction: "a1", amount: -5}},
		{"bid a1 1000000000000001", command{op: opBid, auction: "a1", amount: auction.MaxAmount + 1}},
		{"bid a1 99999999999999999999", command{op: opBid, auction: "a1"}},
		{`{"op":"bid","auction":"a1","amount":-1}`, command{op: opBid, auction: "a1", amount: -1, json: true}},
		{`{"op":"bid","auction":"a1","amount":99999999999999999999}`, command{op: opBid, auction: "a1", json: true}},
		{"result a1", command{op: opResult, auction: "a1"}},
		{`{"op":"result","auction":"a1"}`, command{op: opResult, auction: "a1", json: true}},
		{"watch a1", command{op: opWatch, auction: "a1"}},
		{"watch a1 from 42", command{op: opWatch, auction: "a1", from: 42}},
		{"watch a1 FROM 0", command{op: opWatch, auction: "a1"}},
		{`{"op":"watch","auction":"a1","from":42}`, command{op: opWatch, auction: "a1", from: 42, json: true}},
		{`{"op":"watch","auction":"a1"}`, command{op: opWatch, auction: "a1", json: true}},
		{"unwatch a1", command{op: opUnwatch, auction: "a1"}},
		{`{"op":"unwatch","auction":"a1"}`, command{op: opUnwatch, auction: "a1", json: true}},
		{"auctions", command{op: opAuctions}},
		{`{"op":"auctions","id":"x"}`, command{op: opAuctions, id: json.RawMessage(`"x"`), json: true}},
		{"open a1 10m", command{op: opOpen, auction: "a1", duration: 10 * time.Minute, minIncrement: 1}},
		{"open a1 1h30m a brass  lamp ", command{op: opOpen, auction: "a1", duration: 90 * time.Minute, item: "a brass  lamp", minIncrement: 1}},
		{`{"op":"open","auction":"a1","duration":"10m","item":"a lamp"}`,
			command{op: opOpen, auction: "a1", duration: 10 * time.Minute, item: "a lamp", minIncrement: 1, json: true}},
		// The options of gavel open, anywhere before the item.
		{"open a1 10m --min-increment 5 --starting-price 100 --soft-close 30s a brass  lamp",
			command{op: opOpen, auction: "a1", duration: 10 * time.Minute, item: "a brass  lamp", minIncrement: 5, startingPrice: 100,
				softClose: 30 * time.Second}},
		{"open --soft-close=1m a1 --min-increment=0 10m",
			command{op: opOpen, auction: "a1", duration: 10 * time.Minute, softClose: time.Minute}},
		{"open a1 10m --starting-price 7 -- --vintage-- lamp",
			command{op: opOpen, auction: "a1", duration: 10 * time.Minute, item: "--vintage-- lamp", minIncrement: 1, startingPrice: 7}},
		{"open a1 10m lamp --min-increment 5", // past the item: item text
			command{op: opOpen, auction: "a1", duration: 10 * time.Minute, item: "lamp --min-increment 5", minIncrement: 1}},
		{`{"op":"open","auction":"a1","duration":"10m","min_increment":5,"starting_price":100,"soft_close":"30s"}`,
			command{op: opOpen, auction: "a1", duration: 10 * time.Minute, minIncrement: 5, startingPrice: 100,
				softClose: 30 * time.Second, json: true}},
		{`{"op":"open","auction":"a1","duration":"10m","min_increment":0,"soft_close":"0s"}`,
			command{op: opOpen, auction: "a1", duration: 10 * time.Minute, json: true}},
		{"metrics", command{op: opMetrics, on: true}},
		{"metrics on", command{op: opMetrics, on: true}},
		{"metrics OFF", command{op: opMetrics}},
		{`{"op":"metrics","on":true}`, command{op: opMetrics, on: true, json: true}},
		{`{"op":"metrics","on":false}`, command{op: opMetrics, json: true}},
		{`{"op":"metrics"}`, command{op: opMetrics, on: true, json: true}},
	} {
		got, err := parseLine(tc.line)
		if err != nil {
			t.Errorf("parseLine(%q): %v", tc.line, err)
			continue
		}
		tc.want.line = tc.line
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseLine(%q) = %+v, want %+v", tc.line, got, tc.want)
		}
	}
}

// Every malformed line gets a message saying what is wrong; a JSON command
// whose id could be read gets it back.
func TestParseMalformed(t *testing.T) {
	for _, tc := range []struct {
		line, msg, id string
	}{
		// Text.
		{"hello", `unknown command "hello": try help`, ""},
		{"bidd a1 5", `unknown command "bidd"`, ""},
		{"help me", "usage: help", ""},
		{"login", "usage: login <name>", ""},
		{"login a b", "usage: login <name>", ""},
		{"login \x01x", "invalid bidder name", ""},
		{"login " + strings.Repeat("x", 129), "longer than 128 bytes", ""},
		{"login \xff", "not UTF-8", ""},
		{"bid", "usage: bid <auction> <amount>", ""},
		{"bid a1", "usage: bid <auction> <amount>", ""},
		{"bid a1 5 6", "usage: bid <auction> <amount>", ""},
		{"bid a1 abc", `invalid amount "abc": want a whole number`, ""},
		{"bid a1 1.5", `invalid amount "1.5"`, ""},
		{"bid a1 1e3", `invalid amount "1e3"`, ""},
		{"bid a1 0x10", `invalid amount "0x10"`, ""},
		{"bid " + strings.Repeat("a", 129) + " 5", "auction id longer than 128 bytes", ""},
		{"bid \xff 5", "auction id is not UTF-8", ""},
		{"result", "usage: result <auction>", ""},
		{"result a1 a2", "usage: result <auction>", ""},
		{"watch", "usage: watch <auction> [from <seq>]", ""},
		{"watch a1 from", "usage: watch", ""},
		{"watch a1 after 5", "usage: watch", ""},
		{"watch a1 from -1", `invalid sequence number "-1"`, ""},
		{"watch a1 from x", `invalid sequence number "x"`, ""},
		{"watch a1 5", "usage: watch", ""},
		{"unwatch", "usage: unwatch <auction>", ""},
		{"auctions all", "usage: auctions", ""},
		{"open", "usage: open <auction> <duration> [--min-increment N] [--starting-price N] [--soft-close D] [item text]", ""},
		{"open a1", "usage: open", ""},
		{"open a1 --min-increment 5", "usage: open", ""},
		{"open a1 10m --min-increment", "option --min-increment needs a value", ""},
		{"open a1 10m --min-increment -1", `invalid --min-increment "-1": want a whole number of minor units between 0 and 10^15`, ""},
		{"open a1 10m --min-increment 1000000000000001", "invalid --min-increment", ""},
		{"open a1 10m --starting-price 1.5", `invalid --starting-price "1.5"`, ""},
		{"open a1 10m --soft-close soon", `invalid --soft-close "soon": want a duration such as 30s`, ""},
		{"open a1 10m --soft-close 25h", "--soft-close must be between 0 and 24h", ""},
		{"open a1 10m --soft-close=-1s", "--soft-close must be between 0 and 24h", ""},
		{"open a1 10m --reserve 5 lamp", `unknown option "--reserve" for open (known: --min-increment, --starting-price, --soft-close)`, ""},
		{"open a1 soon", `invalid duration "soon": want e.g. 90s, 10m or 1h30m`, ""},
		{"open a1 10", `invalid duration "10"`, ""},
		{"open a1 -5m", "duration must be positive", ""},
		{"open a1 0s", "duration must be positive", ""},
		{"open a1 9000h", "at most a year", ""},
		{"metrics maybe", "usage: metrics [on|off]", ""},
		{"metrics on off", "usage: metrics [on|off]", ""},
		// JSON.
		{`{`, "invalid JSON: unexpected end of JSON input", ""},
		{`{"op":"bid",}`, "invalid JSON", ""},
		{`{"op":"bid"} trailing`, "invalid JSON", ""},
		{`{} {}`, "invalid JSON", ""},
		{`{}`, `missing "op"`, ""},
		{`{"id":"3"}`, `missing "op"`, `"3"`},
		{`{"op":5,"id":"3"}`, `"op" must be a string, got 5`, `"3"`},
		{`{"op":null}`, `"op" must be a string`, ""},
		{`{"op":"fly","id":"3"}`, `unknown op "fly": try help`, `"3"`},
		{`{"op":"bid","id":{"a":1}}`, `"id" must be a string or a number`, ""},
		{`{"op":"bid","id":[1]}`, `"id" must be a string or a number`, ""},
		{`{"op":"bid","id":true}`, `"id" must be a string or a number`, ""},
		{`{"op":"help","x":1,"id":1}`, `unknown field "x": op "help" takes none`, `1`},
		{`{"op":"bid","auction":"a1","amount":5,"amuont":6,"id":"9"}`, `unknown field "amuont" for op "bid" (known: auction, amount, bidder)`, `"9"`},
		{`{"op":"bid","amount":5,"id":"9"}`, `missing "auction"`, `"9"`},
		{`{"op":"bid","auction":"a1","id":"9"}`, `missing "amount"`, `"9"`},
		{`{"op":"bid","auction":7,"amount":5}`, `"auction" must be a string, got 7`, ""},
		{`{"op":"bid","auction":"","amount":5}`, "empty auction id", ""},
		{`{"op":"bid","auction":"a1","amount":"150"}`, `"amount" must be a whole number, got "150"`, ""},
		{`{"op":"bid","auction":"a1","amount":1.5}`, `"amount" must be a whole number, got 1.5`, ""},
		{`{"op":"bid","auction":"a1","amount":1e3}`, `"amount" must be a whole number`, ""},
		{`{"op":"bid","auction":"a1","amount":null}`, `"amount" must be a whole number, got null`, ""},
		{`{"op":"bid","auction":"a1","amount":5,"bidder":""}`, "invalid bidder name: empty", ""},
		{`{"op":"bid","auction":"a1","amount":5,"bidder":"a b"}`, "invalid bidder name", ""},
		{`{"op":"login"}`, `missing "bidder"`, ""},
		{`{"op":"login","bidder":["x"]}`, `"bidder" must be a string`, ""},
		{`{"op":"result"}`, `missing "auction"`, ""},
		{`{"op":"watch","auction":"a1","from":-1}`, `"from" must be a sequence number`, ""},
		{`{"op":"watch","auction":"a1","from":"5"}`, `"from" must be a sequence number`, ""},
		{`{"op":"watch","auction":"a1","from":1.5}`, `"from" must be a sequence number`, ""},
		{`{"op":"unwatch","auction":null}`, `"auction" must be a string`, ""},
		{`{"op":"open","auction":"a1"}`, `missing "duration"`, ""},
		{`{"op":"open","auction":"a1","duration":600}`, `"duration" must be a string such as "10m", got 600`, ""},
		{`{"op":"open","auction":"a1","duration":"10 min"}`, `invalid duration "10 min"`, ""},
		{`{"op":"open","auction":"a1","duration":"10m","item":5}`, `"item" must be a string`, ""},
		{`{"op":"open","auction":"a1","duration":"10m","min_increment":"5"}`, `"min_increment" must be a whole number of minor units`, ""},
		{`{"op":"open","auction":"a1","duration":"10m","min_increment":-1,"id":2}`, `"min_increment" must be a whole number`, "2"},
		{`{"op":"open","auction":"a1","duration":"10m","starting_price":2.5}`, `"starting_price" must be a whole number`, ""},
		{`{"op":"open","auction":"a1","duration":"10m","soft_close":30}`, `"soft_close" must be a string`, ""},
		{`{"op":"open","auction":"a1","duration":"10m","soft_close":"2d"}`, `invalid soft_close "2d"`, ""},
		{`{"op":"open","auction":"a1","duration":"10m","reserve":5}`, `unknown field "reserve" for op "open" (known: auction, duration, item, min_increment, starting_price, soft_close)`, ""},
		{`{"op":"metrics","on":"yes"}`, `"on" must be true or false, got "yes"`, ""},
		{`{"op":"metrics","on":1}`, `"on" must be true or false`, ""},
	} {
		_, err := parseLine(tc.line)
		if err == nil {
			t.Errorf("parseLine(%q) succeeded, want an error containing %q", tc.line, tc.msg)
			continue
		}
		if !strings.Contains(err.msg, tc.msg) {
			t.Errorf("parseLine(%q) error %q, want it to contain %q", tc.line, err.msg, tc.msg)
		}
		if string(err.id) != tc.id {
			t.Errorf("parseLine(%q) error id %s, want %s", tc.line, err.id, tc.id)
		}
	}
}

// Garbage never panics the parser: every input parses or errs.
func FuzzParseLine(f *testing.F) {
	for _, s := range []string{"bid a1 5", `{"op":"bid","auction":"a1","amount":5}`, "open a1 10m lamp", `{"op":`, "watch a from 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.TrimSpace(line) == "" {
			return
		}
		cmd, err := parseLine(line)
		if err == nil && cmd.op == "" {
			t.Errorf("parseLine(%q) gave a command without op", line)
		}
		if err != nil && err.msg == "" {
			t.Errorf("parseLine(%q) gave an empty error", line)
		}
	})
}

// A JSON bid's request id is a function of the bid (bidder, auction,
// amount) and the id: the same for the same command, different when any
// part differs (a string id is not the number of the same digits), and
// short enough for the chain.
func TestBidRequestID(t *testing.T) {
	base := bidRequestID("alice", "a1", 100, json.RawMessage(`"7"`))
	if base != bidRequestID("alice", "a1", 100, json.RawMessage(`"7"`)) || base != bidRequestID("alice", "a1", 100, json.RawMessage(`"\u0037"`)) {
		t.Error("the same command got another request id")
	}
	if len(base) > auction.MaxIDLen {
		t.Errorf("request id %q is longer than %d bytes", base, auction.MaxIDLen)
	}
	seen := map[string]string{base: "alice a1 100 \"7\""}
	for _, v := range []struct {
		bidder, auction string
		amount          int64
		id              string
	}{
		{"bob", "a1", 100, `"7"`}, {"alice", "a2", 100, `"7"`}, {"alice", "a1", 101, `"7"`}, {"alice", "a1", 100, `7`},
		{"alice", "a1", 100, `"8"`}, {"alice", "a1\x007", 100, `""`}, {"alice\x00a1", "7", 100, `""`},
		{"alice", "a1\x00sX", 100, `""`}, {"alice", "a1", 100, `"X\u0000s"`},
	} {
		id := bidRequestID(v.bidder, v.auction, v.amount, json.RawMessage(v.id))
		what := fmt.Sprintf("%q %q %d %s", v.bidder, v.auction, v.amount, v.id)
		if other, dup := seen[id]; dup {
			t.Errorf("%s has the request id of %s", what, other)
		}
		seen[id] = what
	}
}

// help lists every command, login only in open mode; every message
// type encodes with its "type" and the id echoed.
func TestHelpAndEncode(t *testing.T) {
	open := helpReplyFor(json.RawMessage(`"1"`), true)
	if len(open.Commands) != len(helpOrder) || open.Commands[0] != "bid <auction> <amount>" {
		t.Errorf("open help = %q", open.Commands)
	}
	auth := helpReplyFor(nil, false)
	for _, c := range auth.Commands {
		if strings.HasPrefix(c, "login") {
			t.Errorf("auth-mode help lists %q", c)
		}
	}
	if got, want := string(encode(open)), `"type":"help"`; !strings.Contains(got, want) || !strings.Contains(got, `"id":"1"`) {
		t.Errorf("encode(help) = %s", got)
	}
	if got := string(encode(errorMsg{Type: "error", Error: "x", Line: "<l>&"})); got != `{"type":"error","error":"x","line":"<l>&"}` {
		t.Errorf("encode(error) = %s", got)
	}
}

// decodeObject reads the same members as json.Unmarshal into a map (the
// last of a repeated key), fails on the same inputs, and unquotes
// strings as encoding/json does.
func FuzzDecodeObject(f *testing.F) {
	for _, s := range []string{`{"op":"bid","auction":"a1","amount":5,"id":"x"}`, `{"a":{"b":[1,"}",{"c":"\""}]},"a":2}`,
		` { "o\u0070" : "b\"id" , "x" : -1.5e3, "y":[ ], "z":null,"t":true} `, `{"k":"\xff\x00"}`, `{"k":1} x`, `{`, `{}`,
		`{"a":"\u00e9\ud83d\ude00"}`, `{"\xffk":"v"}`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		var want map[string]json.RawMessage
		werr := json.Unmarshal([]byte(s), &want)
		got, gerr := decodeObject([]byte(s))
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("decodeObject(%q): err %v, json.Unmarshal: %v", s, gerr, werr)
		}
		if werr != nil {
			if werr.Error() != gerr.Error() {
				t.Fatalf("decodeObject(%q): err %v, json.Unmarshal: %v", s, gerr, werr)
			}
			return
		}
		m := map[string]json.RawMessage{}
		for _, mb := range got {
			m[mb.key] = mb.raw
		}
		if len(m) != len(want) {
			t.Fatalf("decodeObject(%q) = %q, want %q", s, m, want)
		}
		for k, v := range want {
			if g, ok := got.get(k); !ok || string(g) != string(v) {
				t.Fatalf("decodeObject(%q)[%q] = %q, want %q", s, k, g, v)
			}
			var ws string
			gs, ok := jsonString(v)
			if !isJSONString(v) {
				if ok {
					t.Fatalf("jsonString(%q) = %q, true for a value that is no string", v, gs)
				}
				continue
			}
			if werr := json.Unmarshal(v, &ws); (werr == nil) != ok || gs != ws {
				t.Fatalf("jsonString(%q) = %q %v, json.Unmarshal: %q %v", v, gs, ok, ws, werr)
			}
		}
	})
}
