package runlog

import (
	"bytes"
	"encoding/xml"
	"io"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestFields(t *testing.T) {
	got := Fields(`time=2026-01-02T10:00:00.123Z level=INFO msg="node removed from the chain" master=m1 node=n2 reason="heartbeat lost" epoch=6 config="e6 [n1 n3]" empty="" q="a \"b\" c"`)
	want := []Field{{"time", "2026-01-02T10:00:00.123Z"}, {"level", "INFO"}, {"msg", "node removed from the chain"},
		{"master", "m1"}, {"node", "n2"}, {"reason", "heartbeat lost"}, {"epoch", "6"}, {"config", "e6 [n1 n3]"},
		{"empty", ""}, {"q", `a "b" c`}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Fields:\n got %q\nwant %q", got, want)
	}
	if got := Fields(`2026-01-02T10:00:00.123Z [WARN]  raft: heartbeat timeout reached, starting election: last-leader-addr= last-leader-id=`); field(got, "last-leader-id") != "" || len(got) != 2 {
		t.Fatalf("an hclog line: %q", got)
	}
}

// source builds one process's log from its lines.
func source(t *testing.T, id string, lines ...string) []Line {
	t.Helper()
	out, err := ReadSource(id, strings.NewReader(strings.Join(lines, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The merge puts lines in time order, keeps each source's own order (a
// line without a time stays after the line before it), breaks ties in
// the order of the sources, and drops debug lines and blank ones.
func TestMergeOrder(t *testing.T) {
	demo := source(t, "demo",
		`time=2026-01-02T10:00:01.000Z level=WARN msg="demo: SIGKILL n2 (middle)" node=n2 role=middle epoch=5`,
		`time=2026-01-02T10:00:01.600Z level=INFO msg="demo: alice bid 120: success" bidder=alice amount=120 outcome=success version=9`,
	)
	m1 := source(t, "m1",
		`time=2026-01-02T10:00:00.500Z level=INFO msg="master leader elected" master=m1 term=2 epoch=5`,
		`time=2026-01-02T10:00:01.250Z level=WARN msg="heartbeat lost" master=m1 node=n2 epoch=5`,
		`time=2026-01-02T10:00:01.300Z level=DEBUG msg="a follower's copy" master=m1`,
		``,
		`2026-01-02T10:00:01.400Z [DEBUG] raft: chatter`,
		`time=2026-01-02T10:00:01.500Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m1 epoch=6 config="e6 [n1 n3]"`,
		`goroutine 1 [running]: (a line without a time)`,
	)
	n1 := source(t, "n1",
		`time=2026-01-02T10:00:01.500Z level=INFO msg="configuration installed" node=n1 epoch=6 role=HEAD`,
		`time=2026-01-02T10:00:01.499Z level=INFO msg="clock stepped back: stays after the line before"`,
	)
	got := Merge(demo, m1, n1)
	var order []string
	for _, l := range got {
		order = append(order, l.Source+": "+field(Fields(l.Text), "msg"))
	}
	want := []string{
		"m1: master leader elected",
		"demo: demo: SIGKILL n2 (middle)",
		"m1: heartbeat lost",
		"m1: new epoch committed; configuration pushed to watchers", // tie at .500: m1 is listed before n1
		"m1: ",                        // the line without a time keeps its place in m1
		"n1: configuration installed", // .500
		"n1: clock stepped back: stays after the line before",
		"demo: demo: alice bid 120: success",
	}
	if !slices.Equal(order, want) {
		t.Fatalf("merged order:\n got %q\nwant %q", order, want)
	}

	// Written and read back: tags, sources and times survive.
	var b bytes.Buffer
	if err := Write(&b, []string{"a header", "", "its last line"}, got); err != nil {
		t.Fatal(err)
	}
	text := b.String()
	if !strings.HasPrefix(text, "# a header\n#\n# its last line\n") {
		t.Fatalf("header:\n%s", text)
	}
	recs, err := Read(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(got) {
		t.Fatalf("read %d records, wrote %d lines", len(recs), len(got))
	}
	wantTags := []string{"LEADER", "KILL", "LOST", "EPOCH", "", "INSTALL", "", ""}
	for i, r := range recs {
		if r.Source != got[i].Source || r.Text != got[i].Text || r.Tag != wantTags[i] {
			t.Errorf("record %d: %s %q %q, want %s %q %q", i, r.Source, r.Tag, r.Text, got[i].Source, wantTags[i], got[i].Text)
		}
	}
	if recs[0].At != 0 || recs[2].At != 0.75 || recs[0].Msg != "master leader elected" || recs[2].Attr("node") != "n2" {
		t.Errorf("times or fields: %+v / %+v", recs[0], recs[2])
	}
}

func TestParseLineErrors(t *testing.T) {
	for _, s := range []string{"no separator", "m1 12.0 | not a +time", "m1 +x | bad time", "m1 +1 A B | too many columns"} {
		if _, _, err := ParseLine(s); err == nil {
			t.Errorf("ParseLine(%q): no error", s)
		}
	}
	for _, s := range []string{"# header", "", "   "} {
		if _, ok, err := ParseLine(s); ok || err != nil {
			t.Errorf("ParseLine(%q) = %v, %v; want not a record", s, ok, err)
		}
	}
}

func TestParseConfig(t *testing.T) {
	for s, want := range map[string]Config{
		"e0 []":               {Epoch: 0, Chain: nil},
		"e1 [n1]":             {Epoch: 1, Chain: []string{"n1"}},
		"e7 [n1 n3] +[n4]":    {Epoch: 7, Chain: []string{"n1", "n3"}, Joining: []string{"n4"}},
		"e12 [a b c] +[d e]":  {Epoch: 12, Chain: []string{"a", "b", "c"}, Joining: []string{"d", "e"}},
		"  e2 [n1] +[n2]    ": {Epoch: 2, Chain: []string{"n1"}, Joining: []string{"n2"}},
	} {
		got, err := ParseConfig(s)
		if err != nil || got.Epoch != want.Epoch || !slices.Equal(got.Chain, want.Chain) || !slices.Equal(got.Joining, want.Joining) {
			t.Errorf("ParseConfig(%q) = %+v, %v; want %+v", s, got, err, want)
		}
		if err == nil && got.String() != strings.TrimSpace(s) {
			t.Errorf("%q prints as %q", s, got.String())
		}
	}
	for _, s := range []string{"", "6 [n1]", "ex [n1]", "e6 n1", "e6 [n1", "e6 [n1] [n2]", "e6 [n1] +[n2] x"} {
		if _, err := ParseConfig(s); err == nil {
			t.Errorf("ParseConfig(%q): no error", s)
		}
	}
}

// storyLog is a small merged log: a chain of three, a middle kill, a
// join, a head kill and the last kill with an unavailable answer after
// it. The followers' debug copies of epochs would not be in a real log;
// a second leader's info copy of an epoch is, and counts once.
const storyLog = `# a header line
demo      +0.000  START    | time=2026-01-02T10:00:00.000Z level=INFO msg="demo: start master m1" process=m1 kind=master
demo      +0.001  START    | time=2026-01-02T10:00:00.001Z level=INFO msg="demo: start master m2" process=m2 kind=master
m1        +0.900  LEADER   | time=2026-01-02T10:00:00.900Z level=INFO msg="master leader elected" master=m1 term=2 epoch=0 config="e0 []"
m1        +1.000  JOIN     | time=2026-01-02T10:00:01.000Z level=INFO msg="chain started: first node is head and tail" master=m1 node=n1 epoch=1 config="e1 [n1]"
m1        +1.000  EPOCH    | time=2026-01-02T10:00:01.000Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m1 epoch=1 config="e1 [n1]"
m1        +1.100  EPOCH    | time=2026-01-02T10:00:01.100Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m1 epoch=2 config="e2 [n1 n2 n3]"
demo      +2.000  KILL     | time=2026-01-02T10:00:02.000Z level=WARN msg="demo: SIGKILL n2 (middle)" node=n2 role=middle epoch=2
m1        +2.250  LOST     | time=2026-01-02T10:00:02.250Z level=WARN msg="heartbeat lost" master=m1 node=n2 epoch=2
m1        +2.500  REMOVED  | time=2026-01-02T10:00:02.500Z level=INFO msg="node removed from the chain" master=m1 node=n2 epoch=3 config="e3 [n1 n3]"
m1        +2.500  EPOCH    | time=2026-01-02T10:00:02.500Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m1 epoch=3 config="e3 [n1 n3]"
m2        +2.501  EPOCH    | time=2026-01-02T10:00:02.501Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m2 epoch=3 config="e3 [n1 n3]"
m1        +3.000  JOIN     | time=2026-01-02T10:00:03.000Z level=INFO msg="join started: node added as joining" master=m1 node=n4 epoch=4 config="e4 [n1 n3] +[n4]"
m1        +3.000  EPOCH    | time=2026-01-02T10:00:03.000Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m1 epoch=4 config="e4 [n1 n3] +[n4]"
m1        +3.200  APPENDED | time=2026-01-02T10:00:03.200Z level=INFO msg="join complete: node appended as tail" master=m1 node=n4 epoch=5 config="e5 [n1 n3 n4]"
m1        +3.200  EPOCH    | time=2026-01-02T10:00:03.200Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m1 epoch=5 config="e5 [n1 n3 n4]"
demo      +4.000  KILL     | time=2026-01-02T10:00:04.000Z level=WARN msg="demo: SIGKILL n1 (head)" node=n1 role=head epoch=5
m1        +4.500  REMOVED  | time=2026-01-02T10:00:04.500Z level=INFO msg="node removed from the chain" master=m1 node=n1 epoch=6 config="e6 [n3 n4]"
m1        +4.500  EPOCH    | time=2026-01-02T10:00:04.500Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m1 epoch=6 config="e6 [n3 n4]"
demo      +5.000  KILL     | time=2026-01-02T10:00:05.000Z level=WARN msg="demo: SIGKILL n3 (head)" node=n3 role=head epoch=6
m1        +5.500  EPOCH    | time=2026-01-02T10:00:05.500Z level=INFO msg="new epoch committed; configuration pushed to watchers" master=m1 epoch=7 config="e7 [n4]"
demo      +6.000  KILL     | time=2026-01-02T10:00:06.000Z level=WARN msg="demo: SIGKILL n4 (last)" node=n4 role=last epoch=7
demo      +8.000  UNAVAIL  | time=2026-01-02T10:00:08.000Z level=WARN msg="demo: alice bid 300: exception (unavailable)" bidder=alice amount=300 outcome=exception reason=unavailable
demo      +8.100           | time=2026-01-02T10:00:08.100Z level=INFO msg="demo: stop"
`

func TestStoryOf(t *testing.T) {
	recs, err := Read(strings.NewReader(storyLog))
	if err != nil {
		t.Fatal(err)
	}
	s, err := StoryOf(recs)
	if err != nil {
		t.Fatal(err)
	}
	if s.End != 8.1 || !slices.Equal(s.Nodes, []string{"n1", "n2", "n3", "n4"}) {
		t.Fatalf("end %v nodes %v", s.End, s.Nodes)
	}
	var epochs []string
	for _, e := range s.Epochs {
		epochs = append(epochs, e.Config.String()+" "+e.Cause+" "+e.Node)
	}
	wantEpochs := []string{"e1 [n1] chain started n1", "e2 [n1 n2 n3]  ", "e3 [n1 n3] node removed n2",
		"e4 [n1 n3] +[n4] join started n4", "e5 [n1 n3 n4] appended n4", "e6 [n3 n4] node removed n1", "e7 [n4]  "}
	if !slices.Equal(epochs, wantEpochs) {
		t.Fatalf("epochs:\n got %q\nwant %q", epochs, wantEpochs)
	}
	if len(s.Kills) != 4 || s.Kills[0] != (Kill{Node: "n2", Role: "middle", At: 2, Epoch: 2}) || s.Kills[3].Role != "last" {
		t.Fatalf("kills %+v", s.Kills)
	}
	if e, ok := s.RemovedAfter("n2", 2); !ok || e.Epoch != 3 {
		t.Fatalf("RemovedAfter n2: %+v %v", e, ok)
	}
	if _, ok := s.RemovedAfter("n4", 6); ok {
		t.Fatal("RemovedAfter n4: the last member is never removed")
	}
	if e, ok := s.ConfigAt(3.1); !ok || e.Epoch != 4 {
		t.Fatalf("ConfigAt 3.1: %+v", e)
	}
	if len(s.Unavailable) != 1 || s.Unavailable[0].Node != "alice" || len(s.Lost) != 1 || len(s.Leaders) != 1 || len(s.Starts) != 2 {
		t.Fatalf("marks: unavailable %+v lost %+v leaders %+v starts %+v", s.Unavailable, s.Lost, s.Leaders, s.Starts)
	}
	tl := strings.Join(s.Timeline(), "\n")
	for _, want := range []string{"start master m1 m2", "m1 is the master leader (term 2)", "e3 [n1 n3]",
		"n2 removed, 0.500 s after its kill", "n4 joins", "n4 appended as the tail", "SIGKILL n4 (last) in e7",
		"alice bid 300: exception (unavailable), 2.000 s after the kill of n4"} {
		if !strings.Contains(tl, want) {
			t.Errorf("timeline lacks %q:\n%s", want, tl)
		}
	}

	// The bars: n2 is middle, then crashed until e3; n4 joins, is tail,
	// then alone, then crashed to the end.
	segs := s.segments()
	kinds := func(id string) []string {
		var out []string
		for _, sg := range segs[id] {
			out = append(out, sg.kind)
		}
		return out
	}
	for id, want := range map[string][]string{
		"n1": {"single", "head", "crashed"},
		"n2": {"middle", "crashed"},
		"n3": {"tail", "middle", "head", "crashed"},
		"n4": {"joining", "tail", "single", "crashed"},
	} {
		if got := kinds(id); !slices.Equal(got, want) {
			t.Errorf("%s: %v, want %v", id, got, want)
		}
	}
	if n2 := segs["n2"]; n2[0].from != 1.1 || n2[0].to != 2 || n2[1].to != 2.5 {
		t.Errorf("n2's bars: %+v", n2)
	}
	if n4 := segs["n4"]; n4[len(n4)-1].to != 8.1 {
		t.Errorf("n4's last bar ends at %v, want the end of the log", n4[len(n4)-1].to)
	}
}

// The figure is well-formed XML, 16 cm wide, names every node, labels
// the epochs and kills, and uses no font smaller than 9 pt at 16 cm.
func TestSVG(t *testing.T) {
	recs, err := Read(strings.NewReader(storyLog))
	if err != nil {
		t.Fatal(err)
	}
	s, err := StoryOf(recs)
	if err != nil {
		t.Fatal(err)
	}
	svg := SVG(s, "a <title> & more")
	texts, attrs := parseSVG(t, svg)
	if attrs["width"] != "16cm" || !strings.HasPrefix(attrs["viewBox"], "0 0 800 ") {
		t.Errorf("size: width %q viewBox %q", attrs["width"], attrs["viewBox"])
	}
	all := strings.Join(texts, "|")
	for _, want := range []string{"n1", "n2", "n3", "n4", "kill n2", "kill n4", "unavailable", "e3", "e6", "e7",
		"head", "middle", "tail", "a <title> & more", "seconds from the start of the run"} {
		if !slices.Contains(texts, want) {
			t.Errorf("no text %q in %s", want, all)
		}
	}
	if fontSize*svgWidthCM/svgWidth*72/2.54 < 9 {
		t.Errorf("font size %g units is below 9 pt at %g cm", fontSize, svgWidthCM)
	}
}

// parseSVG checks that svg is well-formed and returns its texts and the
// root's attributes.
func parseSVG(t *testing.T, svg []byte) ([]string, map[string]string) {
	t.Helper()
	dec := xml.NewDecoder(bytes.NewReader(svg))
	var texts []string
	attrs := map[string]string{}
	inText := false
	root := true
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("SVG not well-formed: %v\n%s", err, svg)
		}
		switch el := tok.(type) {
		case xml.StartElement:
			if root {
				if el.Name.Local != "svg" {
					t.Fatalf("root element %s", el.Name.Local)
				}
				for _, a := range el.Attr {
					attrs[a.Name.Local] = a.Value
				}
				root = false
			}
			if fs := attrOf(el, "font-size"); fs != "" {
				if v, err := strconv.ParseFloat(fs, 64); err != nil || v < fontSize {
					t.Errorf("font-size %q: below the figure's %g", fs, fontSize)
				}
			}
			inText = el.Name.Local == "text" || el.Name.Local == "title"
		case xml.CharData:
			if inText && strings.TrimSpace(string(el)) != "" {
				texts = append(texts, string(el))
			}
		case xml.EndElement:
			inText = false
		}
	}
	return texts, attrs
}

func attrOf(el xml.StartElement, name string) string {
	for _, a := range el.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// A process that printed before its first timed line (a banner, a panic)
// or never logged a time at all (it failed before its logger started)
// leaves the other lines' times counted from the first real time.
func TestMergeUntimedLines(t *testing.T) {
	demo := source(t, "demo",
		`time=2026-01-02T10:00:00.000Z level=INFO msg="demo: start node n2" process=n2 kind=node`,
		`time=2026-01-02T10:00:01.500Z level=INFO msg="demo: stopped"`,
	)
	n1 := source(t, "n1",
		`panic: before the logger`,
		`time=2026-01-02T10:00:00.700Z level=INFO msg="configuration installed" node=n1`,
	)
	if n1[0].Time != n1[1].Time {
		t.Errorf("a leading line without a time: %v, want the first line's time %v", n1[0].Time, n1[1].Time)
	}
	n2 := source(t, "n2", `gavel: listen tcp 127.0.0.1:1: bind: address already in use`)
	var b bytes.Buffer
	if err := Write(&b, nil, Merge(demo, n1, n2)); err != nil {
		t.Fatal(err)
	}
	recs, err := Read(&b)
	if err != nil {
		t.Fatal(err)
	}
	at := map[string]float64{}
	for _, r := range recs {
		if _, ok := at[r.Source+" "+r.Msg]; !ok {
			at[r.Source+" "+r.Msg] = r.At
		}
	}
	want := map[string]float64{
		"n2 ": 0, "demo demo: start node n2": 0, "n1 ": 0.7, "n1 configuration installed": 0.7, "demo demo: stopped": 1.5,
	}
	if !reflect.DeepEqual(at, want) {
		t.Errorf("times:\n got %v\nwant %v\n%s", at, want, b.String())
	}
}
