package runlog

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Record is one line of a merged log, read back.
type Record struct {
	Source string    // process id
	At     float64   // seconds from the first line of the file
	Tag    string    // story tag, or ""
	Text   string    // the process's own line
	Time   time.Time // its time= (zero for lines without one)
	Msg    string    // its msg=
	Level  string    // its level= (INFO, WARN, ...)
	Fields []Field   // every key=value of Text
}

// Attr returns the value of the line's attribute key, or "".
func (r Record) Attr(key string) string { return field(r.Fields, key) }

// ParseLine reads one merged line. Header lines (starting with #) and
// blank lines are not records: ok is false and err nil.
func ParseLine(s string) (r Record, ok bool, err error) {
	if strings.TrimSpace(s) == "" || strings.HasPrefix(s, "#") {
		return Record{}, false, nil
	}
	prefix, text, found := strings.Cut(s, " | ")
	if !found {
		return Record{}, false, fmt.Errorf("no ' | ' after the source and time: %q", s)
	}
	cols := strings.Fields(prefix)
	if len(cols) < 2 || len(cols) > 3 || !strings.HasPrefix(cols[1], "+") {
		return Record{}, false, fmt.Errorf("want SOURCE +SECONDS [TAG] before ' | ', got %q", prefix)
	}
	at, err := strconv.ParseFloat(cols[1][1:], 64)
	if err != nil {
		return Record{}, false, fmt.Errorf("bad time %q: %v", cols[1], err)
	}
	r = Record{Source: cols[0], At: at, Text: text, Fields: Fields(text)}
	if len(cols) == 3 {
		r.Tag = cols[2]
	}
	r.Msg, r.Level = r.Attr("msg"), r.Attr("level")
	if t, ok := lineTime(text); ok {
		r.Time = t
	}
	return r, true, nil
}

// Read reads a merged log.
func Read(rd io.Reader) ([]Record, error) {
	var out []Record
	sc := bufio.NewScanner(rd)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	n := 0
	for sc.Scan() {
		n++
		r, ok, err := ParseLine(sc.Text())
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", n, err)
		}
		if ok {
			out = append(out, r)
		}
	}
	return out, sc.Err()
}
