package gateway

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/gavel-auction/gavel/auction"
	"github.com/gavel-auction/gavel/auth"
)

// This file is the WebSocket protocol of docs/gateway.md: parsing a line
// (text or JSON) into a command, and the JSON objects sent back. It has no
// I/O; the connection code in conn.go uses it.

// The commands (the text form's first word, the JSON form's "op").
const (
	opHelp     = "help"
	opLogin    = "login"
	opBid      = "bid"
	opResult   = "result"
	opWatch    = "watch"
	opUnwatch  = "unwatch"
	opAuctions = "auctions"
	opOpen     = "open"
	opMetrics  = "metrics"
)

// usages is the text form of every command, as help lists them.
var usages = map[string]string{
	opBid:      "bid <auction> <amount>",
	opResult:   "result <auction>",
	opWatch:    "watch <auction> [from <seq>]",
	opUnwatch:  "unwatch <auction>",
	opAuctions: "auctions",
	opOpen:     "open <auction> <duration> [--min-increment N] [--starting-price N] [--soft-close D] [item text]",
	opMetrics:  "metrics [on|off]",
	opLogin:    "login <name>",
	opHelp:     "help",
}

// helpOrder is the order help lists the commands in.
var helpOrder = []string{opBid, opResult, opWatch, opUnwatch, opAuctions, opOpen, opMetrics, opLogin, opHelp}

// jsonFields are the fields each JSON command may have besides "op" and "id".
var jsonFields = map[string][]string{
	opHelp:     nil,
	opLogin:    {"bidder"},
	opBid:      {"auction", "amount", "bidder"},
	opResult:   {"auction"},
	opWatch:    {"auction", "from"},
	opUnwatch:  {"auction"},
	opAuctions: nil,
	opOpen:     {"auction", "duration", "item", "min_increment", "starting_price", "soft_close"},
	opMetrics:  {"on"},
}

// command is one parsed line.
type command struct {
	op   string
	id   json.RawMessage // JSON form: the "id" to echo; nil otherwise
	line string          // the line as received
	json bool            // the line was a JSON object

	auction string
	// amount is the bid's amount; amountOK is false when it is out of
	// 1..auction.MaxAmount (overflow included), which the gateway answers
	// as an invalid_amount exception without asking the chain.
	amount   int64
	amountOK bool
	bidder   string // login's name; a JSON bid's optional "bidder"
	from     uint64 // watch: resume after this seq
	duration time.Duration
	item     string
	// An open's options, as gavel open's flags: the smallest raise over
	// the highest bid (1 unless given), the smallest first bid, and the
	// soft-close (anti-sniping) window.
	minIncrement  int64
	startingPrice int64
	softClose     time.Duration
	on            bool // metrics on or off
}

// lineError is a line that cannot be understood: the connection answers it
// with an error object and stays open.
type lineError struct {
	msg string
	id  json.RawMessage // the JSON command's id, when it could be read
}

func (e *lineError) Error() string { return e.msg }

func badLine(id json.RawMessage, format string, args ...any) *lineError {
	return &lineError{msg: fmt.Sprintf(format, args...), id: id}
}

// parseLine parses one line, text or JSON (a line starting with '{'). The
// line must not be blank.
func parseLine(line string) (command, *lineError) {
	if strings.HasPrefix(strings.TrimSpace(line), "{") {
		return parseJSON(line)
	}
	return parseText(line)
}

// parseText parses the text form: a command word and its arguments,
// separated by white space.
func parseText(line string) (command, *lineError) {
	words := strings.Fields(line)
	if len(words) == 0 {
		return command{}, badLine(nil, "empty command: try help")
	}
	cmd := command{op: strings.ToLower(words[0]), line: line}
	args := words[1:]
	usage, known := usages[cmd.op]
	if !known {
		return command{}, badLine(nil, "unknown command %q: try help", words[0])
	}
	nargs := func(min, max int) *lineError {
		if len(args) < min || len(args) > max {
			return badLine(nil, "usage: %s", usage)
		}
		return nil
	}
	var err *lineError
	switch cmd.op {
	case opHelp, opAuctions:
		err = nargs(0, 0)
	case opLogin:
		if err = nargs(1, 1); err == nil {
			cmd.bidder = args[0]
			err = nameErr(nil, cmd.bidder)
		}
	case opBid:
		if err = nargs(2, 2); err == nil {
			cmd.auction = args[0]
			if err = auctionErr(nil, cmd.auction); err == nil {
				cmd.amount, cmd.amountOK, err = parseAmount(nil, args[1], false)
			}
		}
	case opResult, opUnwatch:
		if err = nargs(1, 1); err == nil {
			cmd.auction = args[0]
			err = auctionErr(nil, cmd.auction)
		}
	case opWatch:
		if len(args) == 1 || (len(args) == 3 && strings.EqualFold(args[1], "from")) {
			cmd.auction = args[0]
			if err = auctionErr(nil, cmd.auction); err == nil && len(args) == 3 {
				cmd.from, err = parseSeq(nil, args[2], false)
			}
		} else {
			err = badLine(nil, "usage: %s", usage)
		}
	case opOpen:
		err = parseOpenText(&cmd, line, args, usage)
	case opMetrics:
		cmd.on = true
		if err = nargs(0, 1); err == nil && len(args) == 1 {
			switch strings.ToLower(args[0]) {
			case "on":
			case "off":
				cmd.on = false
			default:
				err = badLine(nil, "usage: %s", usage)
			}
		}
	}
	if err != nil {
		return command{}, err
	}
	return cmd, nil
}

// The options of open's text form: gavel open's flags.
const (
	flagMinIncrement  = "--min-increment"
	flagStartingPrice = "--starting-price"
	flagSoftClose     = "--soft-close"
)

// parseOpenText parses open's words (args, after the command word): the
// auction and the duration, with options before, between or after them
// (--name VALUE or --name=VALUE; "--" ends them), then the item: the rest
// of the line as typed, inner spaces kept.
func parseOpenText(cmd *command, line string, args []string, usage string) *lineError {
	cmd.minIncrement = 1
	var pos []string
	i := 0
	for ; i < len(args) && len(pos) < 2 || i < len(args) && strings.HasPrefix(args[i], "--"); i++ {
		w := args[i]
		if w == "--" {
			i++
			break
		}
		if !strings.HasPrefix(w, "--") {
			pos = append(pos, w)
			continue
		}
		name, value, hasValue := strings.Cut(w, "=")
		if name != flagMinIncrement && name != flagStartingPrice && name != flagSoftClose {
			return badLine(nil, "unknown option %q for open (known: %s, %s, %s)", clip(name), flagMinIncrement, flagStartingPrice, flagSoftClose)
		}
		if !hasValue {
			if i+1 >= len(args) {
				return badLine(nil, "option %s needs a value: usage: %s", name, usage)
			}
			i++
			value = args[i]
		}
		var err *lineError
		switch name {
		case flagMinIncrement:
			cmd.minIncrement, err = parsePrice(nil, name, value, false)
		case flagStartingPrice:
			cmd.startingPrice, err = parsePrice(nil, name, value, false)
		case flagSoftClose:
			cmd.softClose, err = parseSoftClose(nil, name, value)
		}
		if err != nil {
			return err
		}
	}
	if len(pos) < 2 {
		return badLine(nil, "usage: %s, e.g. open a1 10m --min-increment 5 a brass lamp", usage)
	}
	cmd.auction = pos[0]
	if err := auctionErr(nil, cmd.auction); err != nil {
		return err
	}
	var err *lineError
	if cmd.duration, err = parseDuration(nil, pos[1], false); err != nil {
		return err
	}
	// The item is the rest of the line as typed, inner spaces kept.
	cmd.item = strings.TrimSpace(afterWords(line, 1+i))
	return nil
}

// afterWords returns what follows the first n white-space separated words
// of s.
func afterWords(s string, n int) string {
	for range n {
		s = strings.TrimLeftFunc(s, unicode.IsSpace)
		i := strings.IndexFunc(s, unicode.IsSpace)
		if i < 0 {
			return ""
		}
		s = s[i:]
	}
	return s
}

// parseJSON parses the JSON form: {"op":..., "id":..., fields}.
func parseJSON(line string) (command, *lineError) {
	obj, derr := decodeObject([]byte(line))
	if derr != nil {
		return command{}, badLine(nil, "invalid JSON: %s", strings.TrimPrefix(derr.Error(), "json: "))
	}
	cmd := command{line: line, json: true}
	if raw, ok := obj.get("id"); ok {
		if !isJSONString(raw) && !isJSONNumber(raw) {
			return command{}, badLine(nil, `"id" must be a string or a number, got %s`, clip(string(raw)))
		}
		cmd.id = raw
	}
	rawOp, ok := obj.get("op")
	if !ok {
		return command{}, badLine(cmd.id, `missing "op": want e.g. {"op":"bid","auction":"a1","amount":150}`)
	}
	var okOp bool
	if cmd.op, okOp = jsonString(rawOp); !okOp {
		return command{}, badLine(cmd.id, `"op" must be a string, got %s`, clip(string(rawOp)))
	}
	allowed, known := jsonFields[cmd.op]
	if !known {
		return command{}, badLine(cmd.id, "unknown op %q: try help", cmd.op)
	}
	for _, m := range obj {
		if k := m.key; k != "op" && k != "id" && !slices.Contains(allowed, k) {
			if len(allowed) == 0 {
				return command{}, badLine(cmd.id, "unknown field %q: op %q takes none", k, cmd.op)
			}
			return command{}, badLine(cmd.id, "unknown field %q for op %q (known: %s)", k, cmd.op, strings.Join(allowed, ", "))
		}
	}
	j := jsonArgs{obj: obj, id: cmd.id}
	var err *lineError
	switch cmd.op {
	case opLogin:
		if cmd.bidder, err = j.str("bidder", true); err == nil {
			err = nameErr(cmd.id, cmd.bidder)
		}
	case opBid:
		if cmd.auction, err = j.auction(); err != nil {
			break
		}
		raw, ok := obj.get("amount")
		if !ok {
			err = badLine(cmd.id, `missing "amount"`)
			break
		}
		if cmd.amount, cmd.amountOK, err = parseAmount(cmd.id, string(raw), true); err != nil {
			break
		}
		if _, given := obj.get("bidder"); given {
			if cmd.bidder, err = j.str("bidder", true); err == nil {
				err = nameErr(cmd.id, cmd.bidder)
			}
		}
	case opResult, opUnwatch:
		cmd.auction, err = j.auction()
	case opWatch:
		if cmd.auction, err = j.auction(); err == nil {
			if raw, ok := obj.get("from"); ok {
				cmd.from, err = parseSeq(cmd.id, string(raw), true)
			}
		}
	case opOpen:
		if cmd.auction, err = j.auction(); err != nil {
			break
		}
		raw, ok := obj.get("duration")
		switch {
		case !ok:
			err = badLine(cmd.id, `missing "duration": want e.g. "10m"`)
		case !isJSONString(raw):
			err = badLine(cmd.id, `"duration" must be a string such as "10m", got %s`, clip(string(raw)))
		default:
			s, _ := jsonString(raw)
			if cmd.duration, err = parseDuration(cmd.id, s, true); err == nil {
				cmd.item, err = j.str("item", false)
			}
		}
		cmd.minIncrement = 1
		if raw, ok := obj.get("min_increment"); ok && err == nil {
			cmd.minIncrement, err = parsePrice(cmd.id, "min_increment", string(raw), true)
		}
		if raw, ok := obj.get("starting_price"); ok && err == nil {
			cmd.startingPrice, err = parsePrice(cmd.id, "starting_price", string(raw), true)
		}
		if _, ok := obj.get("soft_close"); ok && err == nil {
			var s string
			if s, err = j.str("soft_close", true); err == nil {
				cmd.softClose, err = parseSoftClose(cmd.id, "soft_close", s)
			}
		}
	case opMetrics:
		cmd.on = true
		if raw, ok := obj.get("on"); ok {
			if err2 := json.Unmarshal(raw, &cmd.on); err2 != nil || (string(raw) != "true" && string(raw) != "false") {
				err = badLine(cmd.id, `"on" must be true or false, got %s`, clip(string(raw)))
			}
		}
	}
	if err != nil {
		return command{}, err
	}
	return cmd, nil
}

// jsonArgs reads the fields of a JSON command.
type jsonArgs struct {
	obj jsonObject
	id  json.RawMessage
}

// str returns field key, which must be a string when present.
func (j jsonArgs) str(key string, required bool) (string, *lineError) {
	raw, ok := j.obj.get(key)
	if !ok {
		if required {
			return "", badLine(j.id, "missing %q", key)
		}
		return "", nil
	}
	s, ok := jsonString(raw)
	if !ok {
		return "", badLine(j.id, "%q must be a string, got %s", key, clip(string(raw)))
	}
	return s, nil
}

// jsonObject is the top level of a JSON object: its members in order,
// keys unescaped, values as they are. Commands are small: a slice beats a
// map, and decodeObject fills it without encoding/json's reflection.
type jsonObject []jsonMember

type jsonMember struct {
	key string
	raw json.RawMessage
}

// get returns the value of key; of its last occurrence, as encoding/json
// decoding into a map keeps.
func (o jsonObject) get(key string) (json.RawMessage, bool) {
	for i := len(o) - 1; i >= 0; i-- {
		if o[i].key == key {
			return o[i].raw, true
		}
	}
	return nil, false
}

// decodeObject reads a JSON object's members as json.Unmarshal into a
// map[string]json.RawMessage would (same keys and values, same errors),
// faster: once json.Valid has checked the whole text, finding where each
// member starts and ends needs no more checks. The values share b.
func decodeObject(b []byte) (jsonObject, error) {
	i := skipSpace(b, 0)
	if !json.Valid(b) || i == len(b) || b[i] != '{' {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			return nil, err
		}
		o := make(jsonObject, 0, len(m)) // a valid JSON null: no member
		for k, v := range m {
			o = append(o, jsonMember{k, v})
		}
		return o, nil
	}
	o := make(jsonObject, 0, 8)
	for i++; ; {
		i = skipSpace(b, i)
		switch b[i] {
		case '}':
			return o, nil
		case ',':
			i++
			continue
		}
		end := valueEnd(b, i) // the key: a string
		key, _ := jsonString(b[i:end])
		i = skipSpace(b, end) + 1 // past ':'
		i = skipSpace(b, i)
		end = valueEnd(b, i)
		o = append(o, jsonMember{key, b[i:end:end]})
		i = end
	}
}

// skipSpace returns the index of the first byte at or after i that is not
// JSON white space.
func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// valueEnd returns the end of the JSON value starting at b[i], in valid
// JSON.
func valueEnd(b []byte, i int) int {
	switch b[i] {
	case '"':
		for i++; b[i] != '"'; i++ {
			if b[i] == '\\' {
				i++
			}
		}
		return i + 1
	case '{', '[':
		depth := 0
		for ; ; i++ {
			switch b[i] {
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			case '"':
				i = valueEnd(b, i) - 1
			}
		}
	}
	for i < len(b) && !strings.ContainsRune(",}] \t\r\n", rune(b[i])) {
		i++
	}
	return i
}

// jsonString returns the string a JSON string value holds, and false for
// any other value. Without escapes or bad UTF-8 (the usual case) it is the
// text between the quotes; otherwise encoding/json unquotes it.
func jsonString(raw json.RawMessage) (string, bool) {
	if !isJSONString(raw) || len(raw) < 2 || raw[len(raw)-1] != '"' {
		return "", false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return string(inner), true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// auction returns the required "auction" field.
func (j jsonArgs) auction() (string, *lineError) {
	a, err := j.str("auction", true)
	if err != nil {
		return "", err
	}
	return a, auctionErr(j.id, a)
}

func isJSONString(raw json.RawMessage) bool { return len(raw) > 0 && raw[0] == '"' }

func isJSONNumber(raw json.RawMessage) bool {
	return len(raw) > 0 && (raw[0] == '-' || (raw[0] >= '0' && raw[0] <= '9'))
}

// parseAmount reads a bid amount: a whole number. A number out of
// 1..auction.MaxAmount (overflow included) is returned with ok false: the
// bid is answered as an invalid_amount exception, as the chain would.
func parseAmount(id json.RawMessage, s string, isJSON bool) (n int64, ok bool, err *lineError) {
	if isJSON && !isJSONNumber(json.RawMessage(s)) {
		return 0, false, badLine(id, `"amount" must be a whole number, got %s`, clip(s))
	}
	n, perr := strconv.ParseInt(s, 10, 64)
	if ne, isNum := perr.(*strconv.NumError); isNum && ne.Err == strconv.ErrRange {
		return 0, false, nil
	}
	if perr != nil {
		if isJSON {
			return 0, false, badLine(id, `"amount" must be a whole number, got %s`, clip(s))
		}
		return 0, false, badLine(id, "invalid amount %q: want a whole number of minor units, e.g. 150", clip(s))
	}
	return n, n > 0 && n <= auction.MaxAmount, nil
}

// parsePrice reads an open's minimum increment or starting price: a whole
// number of minor units between 0 and auction.MaxAmount. name is the
// option (--min-increment) or the JSON field (min_increment).
func parsePrice(id json.RawMessage, name, s string, isJSON bool) (int64, *lineError) {
	n, err := strconv.ParseInt(s, 10, 64)
	if (isJSON && !isJSONNumber(json.RawMessage(s))) || err != nil || n < 0 || n > auction.MaxAmount {
		if isJSON {
			return 0, badLine(id, "%q must be a whole number of minor units between 0 and 10^15, got %s", name, clip(s))
		}
		return 0, badLine(id, "invalid %s %q: want a whole number of minor units between 0 and 10^15, e.g. 5", name, clip(s))
	}
	return n, nil
}

// maxSoftClose is the longest soft-close window the chain accepts.
const maxSoftClose = 24 * time.Hour

// parseSoftClose reads an open's soft-close window, such as 30s: 0 (none)
// up to a day.
func parseSoftClose(id json.RawMessage, name, s string) (time.Duration, *lineError) {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, badLine(id, "invalid %s %q: want a duration such as 30s or 2m (0 for none)", name, clip(s))
	case d < 0 || d > maxSoftClose:
		return 0, badLine(id, "%s must be between 0 and 24h, got %s", name, clip(s))
	}
	return d, nil
}

// parseSeq reads a sequence number (watch's from).
func parseSeq(id json.RawMessage, s string, isJSON bool) (uint64, *lineError) {
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		if isJSON {
			return 0, badLine(id, `"from" must be a sequence number (a whole number >= 0), got %s`, clip(s))
		}
		return 0, badLine(id, "invalid sequence number %q: want a whole number >= 0", clip(s))
	}
	return n, nil
}

// maxDuration is the longest auction the chain accepts.
const maxDuration = 366 * 24 * time.Hour

// parseDuration reads an auction's duration, such as 10m or 1h30m.
func parseDuration(id json.RawMessage, s string, isJSON bool) (time.Duration, *lineError) {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return 0, badLine(id, "invalid duration %q: want e.g. 90s, 10m or 1h30m", clip(s))
	case d < time.Millisecond:
		return 0, badLine(id, "duration must be positive, got %s", s)
	case d > maxDuration:
		return 0, badLine(id, "duration must be at most a year, got %s", s)
	}
	return d, nil
}

func nameErr(id json.RawMessage, s string) *lineError {
	if err := auth.CheckName(s); err != nil {
		return badLine(id, "%v", err)
	}
	return nil
}

// auctionErr checks an auction id the way the chain does.
func auctionErr(id json.RawMessage, s string) *lineError {
	switch {
	case s == "":
		return badLine(id, "empty auction id")
	case len(s) > auction.MaxIDLen:
		return badLine(id, "auction id longer than %d bytes", auction.MaxIDLen)
	case !utf8.ValidString(s):
		return badLine(id, "auction id is not UTF-8")
	}
	return nil
}

// bidRequestID is the chain request id of a JSON bid that carries an
// "id": a hash of the whole bid — bidder, auction, amount — and the id (a
// string's value, a number's text). The same command sent again by the
// same bidder — after a reconnection, to any gateway — is thus the same
// request to the chain, which answers it with the first one's outcome;
// two different bids never share a request id, whatever ids the client
// gives them, so the chain never refuses one as a reused id
// (REQUEST_MISMATCH), and clients that number their commands afresh on
// each connection lose nothing (docs/gateway.md, "Exactly-once bids").
// The parts are hashed as netstrings (length:text,), so that no two
// different bids hash the same text.
func bidRequestID(bidder, auctionID string, amount int64, id json.RawMessage) string {
	key := "n" + string(id)
	var s string
	if isJSONString(id) && json.Unmarshal(id, &s) == nil {
		key = "s" + s
	}
	b := []byte("gavel ws bid ")
	for _, part := range []string{bidder, auctionID, strconv.FormatInt(amount, 10), key} {
		b = strconv.AppendInt(b, int64(len(part)), 10)
		b = append(append(append(b, ':'), part...), ',')
	}
	sum := sha256.Sum256(b)
	return "ws-" + hex.EncodeToString(sum[:16])
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 40 {
		return s[:37] + "..."
	}
	return s
}

// ---------------------------------------------------------------------------
// What the gateway sends: one JSON object per text frame. Replies to a JSON
// command carry its "id"; pushes carry server_time (Unix ms).

type errorMsg struct {
	Type    string          `json:"type"` // "error"
	Error   string          `json:"error"`
	Line    string          `json:"line,omitempty"`
	Auction string          `json:"auction,omitempty"`
	ID      json.RawMessage `json:"id,omitempty"`
}

type helpReply struct {
	Type     string          `json:"type"` // "help"
	Commands []string        `json:"commands"`
	ID       json.RawMessage `json:"id,omitempty"`
}

type loginReply struct {
	Type   string          `json:"type"` // "login"
	Bidder string          `json:"bidder"`
	ID     json.RawMessage `json:"id,omitempty"`
}

type bidReply struct {
	Type    string          `json:"type"` // "bid"
	Auction string          `json:"auction"`
	Amount  int64           `json:"amount"`
	Bidder  string          `json:"bidder"`
	Outcome string          `json:"outcome"`
	Reason  string          `json:"reason"`
	Detail  string          `json:"detail"`
	Version uint64          `json:"version"`
	ID      json.RawMessage `json:"id,omitempty"`
}

type resultReply struct {
	Type     string `json:"type"` // "result"
	Auction  string `json:"auction"`
	Item     string `json:"item"`
	State    string `json:"state"`
	Highest  int64  `json:"highest"`
	Bidder   string `json:"bidder"`
	ClosesAt int64  `json:"closes_at"`
	Winner   string `json:"winner"`
	Version  uint64 `json:"version"`
	// The auction's terms, as opened.
	MinIncrement  int64           `json:"min_increment"`
	StartingPrice int64           `json:"starting_price"`
	SoftCloseMs   int64           `json:"soft_close_ms"`
	ServerTime    int64           `json:"server_time"`
	ID            json.RawMessage `json:"id,omitempty"`
}

type watchingReply struct {
	Type    string          `json:"type"` // "watching"
	Auction string          `json:"auction"`
	From    uint64          `json:"from"`
	ID      json.RawMessage `json:"id,omitempty"`
}

type unwatchedReply struct {
	Type    string          `json:"type"` // "unwatched"
	Auction string          `json:"auction"`
	ID      json.RawMessage `json:"id,omitempty"`
}

type auctionEntry struct {
	Auction  string `json:"auction"`
	Item     string `json:"item"`
	State    string `json:"state"`
	Highest  int64  `json:"highest"`
	Bidder   string `json:"bidder"`
	ClosesAt int64  `json:"closes_at"`
	Version  uint64 `json:"version"`
	// The auction's terms, as opened.
	MinIncrement  int64 `json:"min_increment"`
	StartingPrice int64 `json:"starting_price"`
	SoftCloseMs   int64 `json:"soft_close_ms"`
}

type auctionsReply struct {
	Type       string          `json:"type"` // "auctions"
	Auctions   []auctionEntry  `json:"auctions"`
	ServerTime int64           `json:"server_time"`
	ID         json.RawMessage `json:"id,omitempty"`
}

type openReply struct {
	Type     string `json:"type"` // "open"
	Auction  string `json:"auction"`
	Outcome  string `json:"outcome"`
	Reason   string `json:"reason"`
	Detail   string `json:"detail"`
	ClosesAt int64  `json:"closes_at"`
	Version  uint64 `json:"version"`
	// The auction's terms, as the chain opened it (on success).
	MinIncrement  int64           `json:"min_increment"`
	StartingPrice int64           `json:"starting_price"`
	SoftCloseMs   int64           `json:"soft_close_ms"`
	ID            json.RawMessage `json:"id,omitempty"`
}

type metricsReply struct {
	Type string          `json:"type"` // "metrics"
	On   bool            `json:"on"`
	ID   json.RawMessage `json:"id,omitempty"`
}

type highestPush struct {
	Type       string `json:"type"` // "highest"
	Auction    string `json:"auction"`
	Amount     int64  `json:"amount"`
	Bidder     string `json:"bidder"`
	ClosesAt   int64  `json:"closes_at"`
	Seq        uint64 `json:"seq"`
	ServerTime int64  `json:"server_time"`
}

type extendedPush struct {
	Type       string `json:"type"` // "extended"
	Auction    string `json:"auction"`
	ClosesAt   int64  `json:"closes_at"`
	Seq        uint64 `json:"seq"`
	ServerTime int64  `json:"server_time"`
}

type closedPush struct {
	Type       string `json:"type"` // "closed"
	Auction    string `json:"auction"`
	Winner     string `json:"winner"`
	Amount     int64  `json:"amount"`
	Seq        uint64 `json:"seq"`
	ServerTime int64  `json:"server_time"`
}

type outbidPush struct {
	Type       string `json:"type"` // "outbid"
	Auction    string `json:"auction"`
	Amount     int64  `json:"amount"`
	Bidder     string `json:"bidder"`
	YourBid    int64  `json:"your_bid"`
	Seq        uint64 `json:"seq"`
	ServerTime int64  `json:"server_time"`
}

// latencyMs are the quantiles of the metrics push.
type latencyMs struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
}

type metricsPush struct {
	Type        string    `json:"type"` // "metrics"
	Gateway     string    `json:"gateway"`
	BidsPerS    float64   `json:"bids_per_s"`
	LatencyMs   latencyMs `json:"latency_ms"`
	Epoch       uint64    `json:"epoch"`
	Chain       []string  `json:"chain"`
	Head        string    `json:"head"`
	Tail        string    `json:"tail"`
	Watchers    int       `json:"watchers"`
	Upstreams   int       `json:"upstreams"`
	Connections int       `json:"connections"`
	ServerTime  int64     `json:"server_time"`
}

// encode returns the JSON of a message, without HTML escaping (the help's
// "<auction>" reads as such in wscat). Every message type above encodes
// without error.
func encode(v any) []byte {
	if a, ok := v.(jsonAppender); ok {
		if out, ok := a.appendJSON(make([]byte, 0, 192)); ok {
			return out
		}
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		b.Reset()
		_ = enc.Encode(errorMsg{Type: "error", Error: "internal error: " + err.Error()})
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

// helpReplyFor lists the commands; login only in open mode.
func helpReplyFor(id json.RawMessage, open bool) helpReply {
	r := helpReply{Type: "help", ID: id}
	for _, op := range helpOrder {
		if op == opLogin && !open {
			continue
		}
		r.Commands = append(r.Commands, usages[op])
	}
	return r
}
