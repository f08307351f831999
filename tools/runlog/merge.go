// Package runlog merges the logs of the processes of one gavel run into
// one file in time order, reads such a file back, tells the story of the
// chain in it (epochs, kills, joins, unavailable answers) and draws that
// story as an SVG figure. tools/demofailures writes docs/logs/failover.log
// with it; tools/chainplot draws docs/figures/chain-over-time.svg from it.
//
// A merged line is
//
//	SOURCE  +SECONDS  TAG       | the process's own line
//
// SOURCE is the id of the process that wrote the line (m1, n2, g1, demo),
// +SECONDS counts from the first line of the file, and TAG is an
// upper-case word on the lines that tell the chain's story (KILL, LOST,
// REMOVED, EPOCH, ...; see Tag), blank on the others. Lines starting with
// # are the header.
package runlog

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Line is one line of one process's log.
type Line struct {
	Source string    // id of the process that wrote it
	Time   time.Time // when it was written; a line without a time has the time of the line before it (or after it, at the top); zero in a log without any time
	Text   string    // the line as the process wrote it
}

// Field is one key=value pair of a log/slog text line.
type Field struct{ Key, Value string }

// Fields splits a log/slog text line (key=value pairs, values with spaces
// quoted as Go strings) into its pairs, in order, with quoted values
// unquoted. Words without '=' are skipped.
func Fields(s string) []Field {
	var out []Field
	i := 0
	for i < len(s) {
		for i < len(s) && s[i] == ' ' {
			i++
		}
		j := i
		for j < len(s) && s[j] != '=' && s[j] != ' ' {
			j++
		}
		if j >= len(s) || s[j] == ' ' {
			i = j // a bare word
			continue
		}
		key := s[i:j]
		j++ // past '='
		if j < len(s) && s[j] == '"' {
			k := j + 1
			for k < len(s) && s[k] != '"' {
				if s[k] == '\\' {
					k++
				}
				k++
			}
			end := min(k+1, len(s))
			val, err := strconv.Unquote(s[j:end])
			if err != nil {
				val = s[j:end]
			}
			out = append(out, Field{key, val})
			i = end
			continue
		}
		k := j
		for k < len(s) && s[k] != ' ' {
			k++
		}
		out = append(out, Field{key, s[j:k]})
		i = k
	}
	return out
}

// field returns the value of key in fs, or "".
func field(fs []Field, key string) string {
	for _, f := range fs {
		if f.Key == key {
			return f.Value
		}
	}
	return ""
}

// lineTime returns the time a line was written: the time= of a slog text
// line, or the leading timestamp of a hashicorp/go-hclog line (the Raft
// library's warnings).
func lineTime(text string) (time.Time, bool) {
	word := text
	if i := strings.IndexByte(word, ' '); i >= 0 {
		word = word[:i]
	}
	word = strings.TrimPrefix(word, "time=")
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.000Z0700"} {
		if t, err := time.Parse(layout, word); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// isDebug reports whether a line was logged at debug level (or hclog's
// trace level).
func isDebug(text string) bool {
	if strings.HasPrefix(text, "time=") {
		return field(Fields(text), "level") == "DEBUG"
	}
	return strings.Contains(text, " [DEBUG] ") || strings.Contains(text, " [TRACE] ")
}

// ReadSource reads one process's log: its non-empty lines, without the
// debug-level ones. A line without a time of its own (a panic, a line
// some library printed) gets the time of the line before it; the lines
// before the first one with a time get that line's time. In a log
// without any time (a process that failed before it logged) every line
// has the zero time.
func ReadSource(id string, r io.Reader) ([]Line, error) {
	var out []Line
	var last time.Time
	untimed := 0 // the leading lines without a time
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		text := strings.TrimRight(sc.Text(), " \t\r")
		if text == "" || isDebug(text) {
			continue
		}
		if t, ok := lineTime(text); ok {
			if last.IsZero() {
				for i := range untimed {
					out[i].Time = t
				}
			}
			last = t
		} else if last.IsZero() {
			untimed++
		}
		out = append(out, Line{Source: id, Time: last, Text: text})
	}
	return out, sc.Err()
}

// Merge interleaves the lines of several processes in time order. Each
// source keeps its own order; lines of the same time come in the order
// of the sources, so list them as causes come before effects (the demo
// that kills, the masters that decide, the nodes and gateways that
// follow).
func Merge(sources ...[]Line) []Line {
	n := 0
	for _, s := range sources {
		n += len(s)
	}
	out := make([]Line, 0, n)
	next := make([]int, len(sources))
	for len(out) < n {
		best := -1
		for i, s := range sources {
			if next[i] >= len(s) {
				continue
			}
			if best < 0 || s[next[i]].Time.Before(sources[best][next[best]].Time) {
				best = i
			}
		}
		out = append(out, sources[best][next[best]])
		next[best]++
	}
	return out
}

// Write writes a merged log: the header lines, each prefixed "# ", then
// every line with its source, its time in seconds from the first line
// that has a time (+0.000 for a line without one), and its tag.
func Write(w io.Writer, header []string, lines []Line) error {
	bw := bufio.NewWriter(w)
	for _, h := range header {
		if h == "" {
			fmt.Fprintln(bw, "#")
			continue
		}
		fmt.Fprintln(bw, "# "+h)
	}
	width := 4
	for _, l := range lines {
		width = max(width, len(l.Source))
	}
	var start time.Time
	for _, l := range lines {
		if !l.Time.IsZero() {
			start = l.Time
			break
		}
	}
	for _, l := range lines {
		var rel string
		if l.Time.IsZero() {
			rel = "+0.000"
		} else {
			rel = fmt.Sprintf("+%.3f", l.Time.Sub(start).Seconds())
		}
		fmt.Fprintf(bw, "%-*s %9s  %-*s | %s\n", width, l.Source, rel, tagWidth, Tag(l.Source, l.Text), l.Text)
	}
	return bw.Flush()
}

// tagWidth is the width of the tag column.
const tagWidth = 8

// Tags of the story lines, by the beginning of the line's msg. The demo's
// own lines are tagged by the demo's words.
var tags = []struct{ prefix, tag string }{
	{"demo: SIGKILL", "KILL"},
	{"demo: start ", "START"},
	{"demo: check", "CHECK"},
	{"master leader elected", "LEADER"},
	{"heartbeat lost", "LOST"},
	{"node removed from the chain", "REMOVED"},
	{"removed from the chain", "REMOVED"},
	{"new epoch committed", "EPOCH"},
	{"configuration installed", "INSTALL"},
	{"tail changed", "INSTALL"},
	{"chain configuration", "INSTALL"},
	{"chain started", "JOIN"},
	{"join started", "JOIN"},
	{"snapshot sent", "SNAPSHOT"},
	{"snapshot installed", "SNAPSHOT"},
	{"join caught up", "CAUGHTUP"},
	{"caught up", "CAUGHTUP"},
	{"join complete", "APPENDED"},
	{"master leader unreachable", "LEASE"},
}

// Legend says what each tag marks, in the order a run meets them.
var Legend = []struct{ Tag, Meaning string }{
	{"START", "demo: a process started"},
	{"LEADER", "a master became the leader (it waits one failure timeout before removing anyone)"},
	{"JOIN", "master leader: a node starts the chain, or is added as joining (it catches up from the tail)"},
	{"SNAPSHOT", "the tail sends a joining node its state; the joiner installs it"},
	{"CAUGHTUP", "a node holds every committed update (a joiner: linked to the tail, ready to append)"},
	{"APPENDED", "master leader: the caught-up joiner becomes the tail"},
	{"EPOCH", "master leader: new epoch committed in Raft, pushed to nodes and gateways (config=)"},
	{"INSTALL", "a node installs an epoch (its new role) or the gateway follows it (tail changed)"},
	{"KILL", "demo: SIGKILL of a node, with its role then (middle, head, last)"},
	{"LOST", "master leader: no heartbeat from a member for half the failure timeout"},
	{"REMOVED", "master leader: the silent member is taken out of the chain"},
	{"LEASE", "node: master leader unreachable, lease not renewed: it stops serving"},
	{"UNAVAIL", "demo: a bid or a read answered unavailable: no live chain member can serve it"},
	{"CHECK", "demo: a check that no acknowledged bid was lost"},
}

// Tag returns the story tag of a line ("" for most lines): KILL, START
// and CHECK for the demo's kills, starts and checks, UNAVAIL for an
// answer "unavailable" to a bidder, and for the processes' lines LEADER,
// LOST, REMOVED, EPOCH, INSTALL, JOIN, SNAPSHOT, CAUGHTUP, APPENDED and
// LEASE.
func Tag(source, text string) string {
	fs := Fields(text)
	msg := field(fs, "msg")
	if source == "demo" && field(fs, "reason") == "unavailable" {
		return "UNAVAIL"
	}
	for _, t := range tags {
		if strings.HasPrefix(msg, t.prefix) {
			return t.tag
		}
	}
	return ""
}
