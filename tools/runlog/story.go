package runlog

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// Config is a chain configuration as the master logs it:
// "e6 [n1 n3] +[n4]" is epoch 6, chain n1 (head) to n3 (tail), n4 joining.
type Config struct {
	Epoch   uint64
	Chain   []string // head first
	Joining []string
}

// String formats c the way the master logs it.
func (c Config) String() string {
	s := fmt.Sprintf("e%d [%s]", c.Epoch, strings.Join(c.Chain, " "))
	if len(c.Joining) > 0 {
		s += fmt.Sprintf(" +[%s]", strings.Join(c.Joining, " "))
	}
	return s
}

// ParseConfig reads a configuration in the master's format.
func ParseConfig(s string) (Config, error) {
	var c Config
	bad := func(why string) (Config, error) { return Config{}, fmt.Errorf("configuration %q: %s", s, why) }
	epoch, rest, ok := strings.Cut(strings.TrimSpace(s), " ")
	if !ok || !strings.HasPrefix(epoch, "e") {
		return bad(`want "eN [ids]"`)
	}
	e, err := strconv.ParseUint(epoch[1:], 10, 64)
	if err != nil {
		return bad("bad epoch")
	}
	c.Epoch = e
	list := func(s string) ([]string, string, bool) {
		if !strings.HasPrefix(s, "[") {
			return nil, s, false
		}
		end := strings.IndexByte(s, ']')
		if end < 0 {
			return nil, s, false
		}
		return strings.Fields(s[1:end]), strings.TrimSpace(s[end+1:]), true
	}
	if c.Chain, rest, ok = list(strings.TrimSpace(rest)); !ok {
		return bad("no [chain]")
	}
	if rest != "" {
		if !strings.HasPrefix(rest, "+") {
			return bad("want +[joining] after the chain")
		}
		if c.Joining, rest, ok = list(rest[1:]); !ok || rest != "" {
			return bad("want +[joining] after the chain")
		}
	}
	return c, nil
}

// Epoch is a configuration the master leader committed, and why.
type Epoch struct {
	Config
	At    float64 // seconds from the start of the log
	Cause string  // "chain started", "join started", "node removed", "appended"
	Node  string  // the node the change concerns
}

// Kill is a SIGKILL the demo sent to a node.
type Kill struct {
	Node  string
	Role  string // its role then: head, middle, tail, last
	At    float64
	Epoch uint64 // the epoch in force
}

// Mark is a moment of the story concerning one process.
type Mark struct {
	At   float64
	Node string // or master, for Leaders
	Text string // what happened, in words
}

// Story is what a merged log says about the chain.
type Story struct {
	End         float64  // the time of the last line
	Nodes       []string // every node named by a configuration, in order of appearance
	Epochs      []Epoch  // in epoch order, each once
	Kills       []Kill
	Starts      []Mark // processes the demo started
	Leaders     []Mark // master leader elections
	Lost        []Mark // heartbeats lost, as the master leader logged them
	Unavailable []Mark // answers "unavailable" to the demo's bidders
}

// Causes of a new epoch, by the master's message.
var causes = []struct{ prefix, cause string }{
	{"chain started", "chain started"},
	{"join started", "join started"},
	{"node removed from the chain", "node removed"},
	{"join complete", "appended"},
}

// StoryOf reads the story of the chain out of a merged log's records:
// the master leader's "new epoch committed" lines (only the leader logs
// them at info level), what caused each epoch, the demo's kills and
// starts, heartbeats lost, leader elections and the bidders' unavailable
// answers.
func StoryOf(recs []Record) (Story, error) {
	var s Story
	seen := map[uint64]bool{}
	type why struct{ cause, node string }
	whys := map[uint64]why{}
	for _, r := range recs {
		s.End = max(s.End, r.At)
		switch {
		case r.Source == "demo" && strings.HasPrefix(r.Msg, "demo: SIGKILL"):
			e, _ := strconv.ParseUint(r.Attr("epoch"), 10, 64)
			s.Kills = append(s.Kills, Kill{Node: r.Attr("node"), Role: r.Attr("role"), At: r.At, Epoch: e})
		case r.Source == "demo" && strings.HasPrefix(r.Msg, "demo: start "):
			s.Starts = append(s.Starts, Mark{At: r.At, Node: r.Attr("process"), Text: r.Attr("kind")})
		case r.Source == "demo" && r.Attr("reason") == "unavailable":
			s.Unavailable = append(s.Unavailable, Mark{At: r.At, Node: r.Attr("bidder"), Text: r.Msg})
		case r.Msg == "master leader elected":
			s.Leaders = append(s.Leaders, Mark{At: r.At, Node: r.Attr("master"), Text: "term " + r.Attr("term")})
		case r.Msg == "heartbeat lost" && r.Level != "DEBUG":
			s.Lost = append(s.Lost, Mark{At: r.At, Node: r.Attr("node"), Text: r.Attr("master")})
		case strings.HasPrefix(r.Msg, "new epoch committed"):
			c, err := ParseConfig(r.Attr("config"))
			if err != nil {
				return Story{}, fmt.Errorf("%s at +%.3f: %v", r.Source, r.At, err)
			}
			if seen[c.Epoch] {
				continue
			}
			seen[c.Epoch] = true
			s.Epochs = append(s.Epochs, Epoch{Config: c, At: r.At})
			for _, id := range append(slices.Clone(c.Chain), c.Joining...) {
				if !slices.Contains(s.Nodes, id) {
					s.Nodes = append(s.Nodes, id)
				}
			}
		default:
			for _, c := range causes {
				if strings.HasPrefix(r.Msg, c.prefix) && r.Source != "demo" {
					if e, err := strconv.ParseUint(r.Attr("epoch"), 10, 64); err == nil {
						whys[e] = why{c.cause, r.Attr("node")}
					}
				}
			}
		}
	}
	sort.SliceStable(s.Epochs, func(i, j int) bool { return s.Epochs[i].Epoch < s.Epochs[j].Epoch })
	for i := range s.Epochs {
		w := whys[s.Epochs[i].Epoch]
		s.Epochs[i].Cause, s.Epochs[i].Node = w.cause, w.node
	}
	return s, nil
}

// RemovedAfter returns the first epoch committed after at whose chain
// and joining list do not name node.
func (s Story) RemovedAfter(node string, at float64) (Epoch, bool) {
	for _, e := range s.Epochs {
		if e.At >= at && !slices.Contains(e.Chain, node) && !slices.Contains(e.Joining, node) {
			return e, true
		}
	}
	return Epoch{}, false
}

// ConfigAt returns the configuration in force at a time (the last epoch
// committed at or before it).
func (s Story) ConfigAt(at float64) (Epoch, bool) {
	var cur Epoch
	found := false
	for _, e := range s.Epochs {
		if e.At <= at {
			cur, found = e, true
		}
	}
	return cur, found
}

// Timeline tells the story in lines, one per event, in time order: the
// processes started, the leader elected, each epoch with its chain and
// cause, each kill with the heartbeat lost and the epoch that removed the
// node, and the first answers "unavailable" after the last kill.
func (s Story) Timeline() []string {
	type ev struct {
		at   float64
		text string
	}
	var evs []ev
	// Consecutive starts of processes of one kind make one line.
	for i := 0; i < len(s.Starts); {
		j := i
		ids := []string{}
		for j < len(s.Starts) && s.Starts[j].Text == s.Starts[i].Text && (j == i || s.Starts[j].At-s.Starts[j-1].At < 0.05) {
			ids = append(ids, s.Starts[j].Node)
			j++
		}
		evs = append(evs, ev{s.Starts[i].At, fmt.Sprintf("start %s %s", s.Starts[i].Text, strings.Join(ids, " "))})
		i = j
	}
	for _, l := range s.Leaders {
		evs = append(evs, ev{l.At, fmt.Sprintf("%s is the master leader (%s)", l.Node, l.Text)})
	}
	for _, l := range s.Lost {
		evs = append(evs, ev{l.At, fmt.Sprintf("  %s: heartbeat of %s lost", l.Text, l.Node)})
	}
	for _, e := range s.Epochs {
		why := e.Cause
		switch e.Cause {
		case "chain started":
			why = e.Node + " starts the chain: head and tail"
		case "join started":
			why = e.Node + " joins: catches up from the tail"
		case "appended":
			why = e.Node + " appended as the tail"
		case "node removed":
			why = e.Node + " removed"
			for _, k := range s.Kills {
				if k.Node == e.Node && k.At <= e.At {
					why = fmt.Sprintf("%s removed, %.3f s after its kill", e.Node, e.At-k.At)
				}
			}
		}
		evs = append(evs, ev{e.At, fmt.Sprintf("%-22s %s", e.Config.String(), why)})
	}
	for i, k := range s.Kills {
		evs = append(evs, ev{k.At, fmt.Sprintf("SIGKILL %s (%s) in e%d", k.Node, k.Role, k.Epoch)})
		if i < len(s.Kills)-1 {
			continue
		}
		shown := 0
		for _, u := range s.Unavailable {
			if u.At >= k.At && shown < 4 {
				evs = append(evs, ev{u.At, fmt.Sprintf("%s, %.3f s after the kill of %s", strings.TrimPrefix(u.Text, "demo: "),
					u.At-k.At, k.Node)})
				shown++
			}
		}
	}
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at < evs[j].at })
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = fmt.Sprintf("%9s  %s", fmt.Sprintf("+%.3f", e.at), e.text)
	}
	return out
}
