package gateway

import (
	"encoding/json"
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
		{"open a1 10m", command{op: opOpen, auction: "a1", duration: 10 * time.Minute}},
		{"open a1 1h30m a brass  lamp ", command{op: opOpen, auction: "a1", duration: 90 * time.Minute, item: "a brass  lamp"}},
		{`{"op":"open","auction":"a1","duration":"10m","item":"a lamp"}`,
			command{op: opOpen, auction: "a1", duration: 10 * time.Minute, item: "a lamp", json: true}},
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
		{"open", "usage: open <auction> <duration> [item text]", ""},
		{"open a1", "usage: open", ""},
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
