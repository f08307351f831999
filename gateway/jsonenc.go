package gateway

import (
	"bytes"
	"encoding/json"
	"strconv"
	"unicode/utf8"
)

// The messages of a bid's path — the reply and the pushes it causes —
// encode themselves (appendJSON) into the exact bytes encoding/json would
// give, without reflection and with one allocation; encode uses that when
// a message has it. TestFastEncodingMatchesEncodingJSON holds them equal.

// jsonAppender is a message that encodes itself.
type jsonAppender interface {
	appendJSON(b []byte) ([]byte, bool)
}

// objectWriter appends one JSON object, field by field.
type objectWriter struct {
	b     []byte
	first bool
}

func newObject(b []byte) objectWriter { return objectWriter{b: append(b, '{'), first: true} }

func (w *objectWriter) key(k string) {
	if !w.first {
		w.b = append(w.b, ',')
	}
	w.first = false
	w.b = append(w.b, '"')
	w.b = append(w.b, k...)
	w.b = append(w.b, '"', ':')
}

func (w *objectWriter) str(k, v string) { w.key(k); w.b = appendJSONString(w.b, v) }
func (w *objectWriter) int(k string, v int64) {
	w.key(k)
	w.b = strconv.AppendInt(w.b, v, 10)
}
func (w *objectWriter) uint(k string, v uint64) {
	w.key(k)
	w.b = strconv.AppendUint(w.b, v, 10)
}

// id appends the "id" field as encoding/json does a json.RawMessage with
// omitempty: left out when empty, compacted otherwise; false if it is not
// valid JSON.
func (w *objectWriter) id(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return true
	}
	w.key("id")
	if !bytes.ContainsAny(raw, " \t\r\n") {
		w.b = append(w.b, raw...) // compact already: a number or a string, usually
		return json.Valid(raw)
	}
	var buf bytes.Buffer
	if json.Compact(&buf, raw) != nil {
		return false
	}
	w.b = append(w.b, buf.Bytes()...)
	return true
}

func (w *objectWriter) end() []byte { return append(w.b, '}') }

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted as encoding/json does with HTML
// escaping off: ", \ and control characters escaped, invalid UTF-8 as
// U+FFFD, U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func (m bidReply) appendJSON(b []byte) ([]byte, bool) {
	w := newObject(b)
	w.str("type", m.Type)
	w.str("auction", m.Auction)
	w.int("amount", m.Amount)
	w.str("bidder", m.Bidder)
	w.str("outcome", m.Outcome)
	w.str("reason", m.Reason)
	w.str("detail", m.Detail)
	w.uint("version", m.Version)
	ok := w.id(m.ID)
	return w.end(), ok
}

func (m highestPush) appendJSON(b []byte) ([]byte, bool) {
	w := newObject(b)
	w.str("type", m.Type)
	w.str("auction", m.Auction)
	w.int("amount", m.Amount)
	w.str("bidder", m.Bidder)
	w.int("closes_at", m.ClosesAt)
	w.uint("seq", m.Seq)
	w.int("server_time", m.ServerTime)
	return w.end(), true
}

func (m extendedPush) appendJSON(b []byte) ([]byte, bool) {
	w := newObject(b)
	w.str("type", m.Type)
	w.str("auction", m.Auction)
	w.int("closes_at", m.ClosesAt)
	w.uint("seq", m.Seq)
	w.int("server_time", m.ServerTime)
	return w.end(), true
}

func (m closedPush) appendJSON(b []byte) ([]byte, bool) {
	w := newObject(b)
	w.str("type", m.Type)
	w.str("auction", m.Auction)
	w.str("winner", m.Winner)
	w.int("amount", m.Amount)
	w.uint("seq", m.Seq)
	w.int("server_time", m.ServerTime)
	return w.end(), true
}

func (m outbidPush) appendJSON(b []byte) ([]byte, bool) {
	w := newObject(b)
	w.str("type", m.Type)
	w.str("auction", m.Auction)
	w.int("amount", m.Amount)
	w.str("bidder", m.Bidder)
	w.int("your_bid", m.YourBid)
	w.uint("seq", m.Seq)
	w.int("server_time", m.ServerTime)
	return w.end(), true
}
