package master

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// mem is a member whose address is derived from its id.
func mem(id string, inc uint64) Member {
	return Member{ID: id, Addr: id + ".test:7000", Incarnation: inc}
}

// conf builds a Config. Its slices get spare capacity filled with a
// sentinel member, so that a write past their length (an append into the
// input's backing array) shows up in checkUnchanged.
func conf(epoch uint64, chain, joining []Member) Config {
	pad := func(ms []Member) []Member {
		if ms == nil {
			return nil
		}
		s := make([]Member, len(ms), len(ms)+2)
		copy(s, ms)
		full := s[:cap(s)]
		for i := len(ms); i < len(full); i++ {
			full[i] = sentinel
		}
		return s
	}
	return Config{Epoch: epoch, Chain: pad(chain), Joining: pad(joining)}
}

var sentinel = Member{ID: "sentinel", Addr: "nowhere", Incarnation: 999}

// ms is shorthand for a member list.
func ms(m ...Member) []Member { return m }

// sameConfig compares configurations, treating nil and empty lists alike.
func sameConfig(a, b Config) bool {
	norm := func(c Config) Config {
		if len(c.Chain) == 0 {
			c.Chain = nil
		}
		if len(c.Joining) == 0 {
			c.Joining = nil
		}
		return c
	}
	return reflect.DeepEqual(norm(a), norm(b))
}

// spare returns copies of the spare capacity of c's slices: the memory an
// append to them would write.
func spare(c Config) [][]Member {
	var out [][]Member
	for _, s := range [][]Member{c.Chain, c.Joining} {
		out = append(out, slices.Clone(s[len(s):cap(s)]))
	}
	return out
}

// checkUnchanged fails unless in still equals before (a Clone taken before
// the call) and the spare capacity of its slices still holds spareBefore.
func checkUnchanged(t *testing.T, what string, in, before Config, spareBefore [][]Member) {
	t.Helper()
	if !reflect.DeepEqual(in, before) {
		t.Errorf("%s mutated its input: %+v, was %+v", what, in, before)
	}
	if !reflect.DeepEqual(spare(in), spareBefore) {
		t.Errorf("%s wrote past the end of an input slice: %+v, was %+v", what, spare(in), spareBefore)
	}
}

// applyChecked applies cmd to in and checks the rules every Apply must
// keep: the input is not mutated, the result does not share memory with
// it, a change raises the epoch by exactly one, and a refusal returns the
// input unchanged.
func applyChecked(t *testing.T, in Config, cmd Command) (Config, error) {
	t.Helper()
	before, spareBefore := in.Clone(), spare(in)
	got, err := Apply(in, cmd)
	checkUnchanged(t, "Apply", in, before, spareBefore)
	if err != nil {
		if !sameConfig(got, before) {
			t.Errorf("Apply(%v, %+v) refused (%v) but returned %v", before, cmd, err, got)
		}
		return got, err
	}
	if got.Epoch != before.Epoch+1 {
		t.Errorf("Apply(%v, %+v): epoch %d, want %d", before, cmd, got.Epoch, before.Epoch+1)
	}
	// The result is the caller's own: scribbling on it leaves the input alone.
	for i := range got.Chain {
		got.Chain[i].Addr = "scribbled"
	}
	for i := range got.Joining {
		got.Joining[i].Addr = "scribbled"
	}
	checkUnchanged(t, "Apply's result", in, before, spareBefore)
	got, _ = Apply(before.Clone(), cmd)
	return got, err
}

// TestApply checks each rule of the configuration's state transition.
func TestApply(t *testing.T) {
	a1, b1, c1, d1 := mem("a", 1), mem("b", 1), mem("c", 1), mem("d", 1)
	a2, b2, c2 := mem("a", 2), mem("b", 2), mem("c", 2)
	tests := []struct {
		name    string
		in      Config
		cmd     Command
		want    Config // ignored when wantErr is set: the input comes back
		wantErr error
	}{
		// Join.
		{name: "first join starts the chain with the node as head and tail",
			in: Config{}, cmd: Command{Op: OpJoin, Member: a1},
			want: conf(1, ms(a1), nil)},
		{name: "later join goes to the joining list",
			in: conf(1, ms(a1), nil), cmd: Command{Op: OpJoin, Member: b1},
			want: conf(2, ms(a1), ms(b1))},
		{name: "join appends after earlier joiners",
			in: conf(2, ms(a1), ms(b1)), cmd: Command{Op: OpJoin, Member: c1},
			want: conf(3, ms(a1), ms(b1, c1))},
		{name: "join ignores the command's epoch",
			in: conf(5, ms(a1), nil), cmd: Command{Op: OpJoin, Member: b1, Epoch: 2},
			want: conf(6, ms(a1), ms(b1))},
		{name: "restarted head is replaced: out of the chain, into joining",
			in: conf(3, ms(a1, b1, c1), nil), cmd: Command{Op: OpJoin, Member: a2},
			want: conf(4, ms(b1, c1), ms(a2))},
		{name: "restarted middle is replaced",
			in: conf(3, ms(a1, b1, c1), nil), cmd: Command{Op: OpJoin, Member: b2},
			want: conf(4, ms(a1, c1), ms(b2))},
		{name: "restarted tail is replaced and queues behind earlier joiners",
			in: conf(3, ms(a1, b1), ms(d1)), cmd: Command{Op: OpJoin, Member: b2},
			want: conf(4, ms(a1), ms(d1, b2))},
		{name: "restarted joiner is replaced in the joining list",
			in: conf(3, ms(a1), ms(b1, c1)), cmd: Command{Op: OpJoin, Member: b2},
			want: conf(4, ms(a1), ms(c1, b2))},
		{name: "older incarnation rejoining replaces too (ids, not numbers, decide)",
			in: conf(3, ms(a2, b1), nil), cmd: Command{Op: OpJoin, Member: a1},
			want: conf(4, ms(b1), ms(a1))},
		{name: "restarted last chain member is not replaced",
			in: conf(4, ms(a1), ms(b1)), cmd: Command{Op: OpJoin, Member: a2},
			wantErr: ErrLastMember},
		{name: "duplicate join of a chain member changes nothing",
			in: conf(2, ms(a1, b1), nil), cmd: Command{Op: OpJoin, Member: b1},
			wantErr: ErrNoChange},
		{name: "duplicate join of the only member changes nothing",
			in: conf(1, ms(a1), nil), cmd: Command{Op: OpJoin, Member: a1},
			wantErr: ErrNoChange},
		{name: "duplicate join of a joiner changes nothing",
			in: conf(2, ms(a1), ms(b1)), cmd: Command{Op: OpJoin, Member: b1},
			wantErr: ErrNoChange},

		// Remove.
		{name: "remove the head",
			in: conf(7, ms(a1, b1, c1), nil), cmd: Command{Op: OpRemove, Member: a1, Epoch: 7},
			want: conf(8, ms(b1, c1), nil)},
		{name: "remove a middle node",
			in: conf(7, ms(a1, b1, c1), nil), cmd: Command{Op: OpRemove, Member: b1, Epoch: 7},
			want: conf(8, ms(a1, c1), nil)},
		{name: "remove the tail",
			in: conf(7, ms(a1, b1, c1), ms(d1)), cmd: Command{Op: OpRemove, Member: c1, Epoch: 7},
			want: conf(8, ms(a1, b1), ms(d1))},
		{name: "remove a joiner",
			in: conf(7, ms(a1), ms(b1, c1)), cmd: Command{Op: OpRemove, Member: b1, Epoch: 7},
			want: conf(8, ms(a1), ms(c1))},
		{name: "remove with a stale epoch changes nothing",
			in: conf(7, ms(a1, b1), nil), cmd: Command{Op: OpRemove, Member: a1, Epoch: 6},
			wantErr: ErrStaleEpoch},
		{name: "remove with a future epoch changes nothing",
			in: conf(7, ms(a1, b1), nil), cmd: Command{Op: OpRemove, Member: a1, Epoch: 8},
			wantErr: ErrStaleEpoch},
		{name: "remove of the last chain member is refused",
			in: conf(7, ms(a1), ms(b1)), cmd: Command{Op: OpRemove, Member: a1, Epoch: 7},
			wantErr: ErrLastMember},
		{name: "remove of another incarnation changes nothing",
			in: conf(7, ms(a1, b1), nil), cmd: Command{Op: OpRemove, Member: a2, Epoch: 7},
			wantErr: ErrNoChange},
		{name: "remove of a joiner's other incarnation changes nothing",
			in: conf(7, ms(a1), ms(c1)), cmd: Command{Op: OpRemove, Member: c2, Epoch: 7},
			wantErr: ErrNoChange},
		{name: "remove of an unknown node changes nothing",
			in: conf(7, ms(a1, b1), nil), cmd: Command{Op: OpRemove, Member: d1, Epoch: 7},
			wantErr: ErrNoChange},

		// Append.
		{name: "append moves a joiner to the tail",
			in: conf(4, ms(a1, b1), ms(c1)), cmd: Command{Op: OpAppend, Member: c1, Epoch: 4},
			want: conf(5, ms(a1, b1, c1), nil)},
		{name: "append takes a later joiner out of order",
			in: conf(4, ms(a1), ms(b1, c1)), cmd: Command{Op: OpAppend, Member: c1, Epoch: 4},
			want: conf(5, ms(a1, c1), ms(b1))},
		{name: "append keeps the configured address, not the command's",
			in:   conf(4, ms(a1), ms(b1)),
			cmd:  Command{Op: OpAppend, Member: Member{ID: "b", Addr: "elsewhere", Incarnation: 1}, Epoch: 4},
			want: conf(5, ms(a1, b1), nil)},
		{name: "append with a stale epoch changes nothing",
			in: conf(4, ms(a1), ms(b1)), cmd: Command{Op: OpAppend, Member: b1, Epoch: 3},
			wantErr: ErrStaleEpoch},
		{name: "append of a node not joining changes nothing",
			in: conf(4, ms(a1, b1), nil), cmd: Command{Op: OpAppend, Member: b1, Epoch: 4},
			wantErr: ErrNoChange},
		{name: "append of another incarnation changes nothing",
			in: conf(4, ms(a1), ms(b1)), cmd: Command{Op: OpAppend, Member: b2, Epoch: 4},
			wantErr: ErrNoChange},

		// Not a command.
		{name: "unknown op changes nothing",
			in: conf(4, ms(a1), nil), cmd: Command{Op: "promote", Member: a1, Epoch: 4},
			wantErr: ErrBadCommand},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := applyChecked(t, tt.in, tt.cmd)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Apply(%v, %+v) error = %v, want %v", tt.in, tt.cmd, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply(%v, %+v) error = %v", tt.in, tt.cmd, err)
			}
			if !sameConfig(got, tt.want) {
				t.Errorf("Apply(%v, %+v) = %+v, want %+v", tt.in, tt.cmd, got, tt.want)
			}
		})
	}
}

// TestApplyLifecycle follows one chain from empty through joins, appends,
// a restart and removals: every change raises the epoch by exactly one and
// a late decision from an earlier epoch changes nothing.
func TestApplyLifecycle(t *testing.T) {
	a1, b1, c1, b2 := mem("a", 1), mem("b", 1), mem("c", 1), mem("b", 2)
	steps := []struct {
		cmd     Command
		want    string // Config.String() after the step
		wantErr error
	}{
		{cmd: Command{Op: OpJoin, Member: a1}, want: "e1 [a]"},
		{cmd: Command{Op: OpJoin, Member: b1}, want: "e2 [a] +[b]"},
		{cmd: Command{Op: OpJoin, Member: c1}, want: "e3 [a] +[b c]"},
		{cmd: Command{Op: OpAppend, Member: b1, Epoch: 2}, want: "e3 [a] +[b c]", wantErr: ErrStaleEpoch},
		{cmd: Command{Op: OpAppend, Member: b1, Epoch: 3}, want: "e4 [a b] +[c]"},
		{cmd: Command{Op: OpAppend, Member: c1, Epoch: 4}, want: "e5 [a b c]"},
		{cmd: Command{Op: OpJoin, Member: b2}, want: "e6 [a c] +[b]"},
		{cmd: Command{Op: OpRemove, Member: b1, Epoch: 6}, want: "e6 [a c] +[b]", wantErr: ErrNoChange},
		{cmd: Command{Op: OpRemove, Member: a1, Epoch: 5}, want: "e6 [a c] +[b]", wantErr: ErrStaleEpoch},
		{cmd: Command{Op: OpRemove, Member: a1, Epoch: 6}, want: "e7 [c] +[b]"},
		{cmd: Command{Op: OpRemove, Member: c1, Epoch: 7}, want: "e7 [c] +[b]", wantErr: ErrLastMember},
		{cmd: Command{Op: OpAppend, Member: b2, Epoch: 7}, want: "e8 [c b]"},
		{cmd: Command{Op: OpRemove, Member: c1, Epoch: 8}, want: "e9 [b]"},
		{cmd: Command{Op: OpJoin, Member: a1}, want: "e10 [b] +[a]"},
	}
	var c Config
	for i, s := range steps {
		next, err := applyChecked(t, c, s.cmd)
		if !errors.Is(err, s.wantErr) {
			t.Fatalf("step %d %+v: error = %v, want %v", i, s.cmd, err, s.wantErr)
		}
		if next.String() != s.want {
			t.Fatalf("step %d %+v: config %v, want %s", i, s.cmd, next, s.want)
		}
		c = next
	}
	if got := c.Joining[0]; got != a1 {
		t.Errorf("rejoined member = %+v, want %+v", got, a1)
	}
}

// TestApplyRandomKeepsInvariants applies random commands and checks after
// each one: Apply does not mutate its input, a change raises the epoch by
// one, the chain never becomes empty once started, and no id appears twice.
func TestApplyRandomKeepsInvariants(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ops := []Op{OpJoin, OpRemove, OpAppend}
	for run := 0; run < 50; run++ {
		var c Config
		for step := 0; step < 200; step++ {
			cmd := Command{
				Op:     ops[rng.IntN(len(ops))],
				Member: mem(fmt.Sprintf("n%d", rng.IntN(5)), uint64(1+rng.IntN(3))),
				Epoch:  c.Epoch - uint64(rng.IntN(2)), // usually current, sometimes stale
			}
			if c.Epoch == 0 {
				cmd.Epoch = 0
			}
			next, err := applyChecked(t, c, cmd)
			if t.Failed() {
				t.Fatalf("run %d step %d: %v after %+v", run, step, c, cmd)
			}
			if err == nil {
				c = next
			}
			if c.Epoch > 0 && len(c.Chain) == 0 {
				t.Fatalf("run %d step %d: chain emptied: %v after %+v", run, step, c, cmd)
			}
			seen := map[string]bool{}
			for _, m := range slices.Concat(c.Chain, c.Joining) {
				if seen[m.ID] {
					t.Fatalf("run %d step %d: %s twice in %v", run, step, m.ID, c)
				}
				seen[m.ID] = true
			}
		}
	}
}

// TestDecodeCommand checks that only well-formed entries of a known op
// with a member id decode, and that Encode round-trips.
func TestDecodeCommand(t *testing.T) {
	for _, cmd := range []Command{
		{Op: OpJoin, Member: mem("a", 1), Reason: "new node"},
		{Op: OpRemove, Member: mem("b", 7), Epoch: 12, Reason: "heartbeat lost"},
		{Op: OpAppend, Member: mem("c", 1<<60), Epoch: 1},
	} {
		got, err := DecodeCommand(cmd.Encode())
		if err != nil || !reflect.DeepEqual(got, cmd) {
			t.Errorf("DecodeCommand(Encode(%+v)) = %+v, %v", cmd, got, err)
		}
	}
	bad := map[string]string{
		"empty":          ``,
		"garbage":        "\x00\x01not json",
		"truncated":      `{"op":"join","member":{"id":"a"`,
		"wrong type":     `{"op":1,"member":{"id":"a"}}`,
		"array":          `[1,2,3]`,
		"no op":          `{"member":{"id":"a","incarnation":1}}`,
		"unknown op":     `{"op":"promote","member":{"id":"a","incarnation":1}}`,
		"op wrong case":  `{"op":"JOIN","member":{"id":"a","incarnation":1}}`,
		"no member id":   `{"op":"join","member":{"addr":"x:1","incarnation":1}}`,
		"no member":      `{"op":"remove","epoch":3}`,
		"null":           `null`,
		"negative epoch": `{"op":"remove","member":{"id":"a"},"epoch":-1}`,
	}
	for name, b := range bad {
		if c, err := DecodeCommand([]byte(b)); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: DecodeCommand(%q) = %+v, %v; want ErrBadCommand", name, b, c, err)
		}
	}
}

// memSink is an in-memory raft.SnapshotSink.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "test" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

var _ raft.SnapshotSink = (*memSink)(nil)

func testFSM(t *testing.T) *fsm {
	return newFSM(slog.New(slog.DiscardHandler), nil)
}

// snapshotBytes takes a snapshot of f and persists it.
func snapshotBytes(t *testing.T, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatalf("Persist: %v", err)
	}
	if !sink.closed || sink.cancelled {
		t.Fatalf("Persist left the sink closed=%v cancelled=%v; want closed", sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

// TestFSMSnapshotRoundTrip checks that Snapshot, Persist and Restore give
// back the same configuration, that the snapshot is a point-in-time copy,
// and that a restore wakes the watchers.
func TestFSMSnapshotRoundTrip(t *testing.T) {
	for _, cfg := range []Config{
		{},
		conf(1, ms(mem("a", 1)), nil),
		conf(42, ms(mem("a", 3), mem("b", 1), mem("c", 9)), ms(mem("d", 2), mem("e", 1))),
	} {
		src := testFSM(t)
		src.set(cfg.Clone())
		data := snapshotBytes(t, src)

		dst := testFSM(t)
		_, changed := dst.current()
		if err := dst.Restore(io.NopCloser(bytes.NewReader(data))); err != nil {
			t.Fatalf("Restore(%s): %v", data, err)
		}
		if got := dst.config(); !sameConfig(got, cfg) {
			t.Errorf("round trip of %+v gave %+v", cfg, got)
		}
		select {
		case <-changed:
		default:
			t.Errorf("Restore did not wake watchers")
		}
	}

	// Point in time: a change after Snapshot is not in it.
	f := testFSM(t)
	f.set(conf(1, ms(mem("a", 1)), nil))
	snap, _ := f.Snapshot()
	f.Apply(&raft.Log{Type: raft.LogCommand, Index: 2, Data: Command{Op: OpJoin, Member: mem("b", 1)}.Encode()})
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := testFSM(t)
	if err := g.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	if got := g.config().String(); got != "e1 [a]" {
		t.Errorf("snapshot taken at e1 restored as %s", got)
	}
}

// TestFSMRestoreRejectsGarbage checks that a corrupt snapshot is an error
// and leaves the configuration alone.
func TestFSMRestoreRejectsGarbage(t *testing.T) {
	f := testFSM(t)
	f.set(conf(3, ms(mem("a", 1)), nil))
	if err := f.Restore(io.NopCloser(strings.NewReader("{not json"))); err == nil {
		t.Fatal("Restore of garbage succeeded")
	}
	if got := f.config().String(); got != "e3 [a]" {
		t.Errorf("config after failed restore = %s, want e3 [a]", got)
	}
}

// TestFSMApply checks the Raft-facing Apply: commands change the
// configuration and report it, refused and malformed entries change
// nothing and say why, other log types are ignored, and each change wakes
// watchers and calls the commit hook once.
func TestFSMApply(t *testing.T) {
	var commits []string
	f := newFSM(slog.New(slog.DiscardHandler), func(cmd Command, cfg Config) {
		commits = append(commits, fmt.Sprintf("%s %s %s", cmd.Op, cmd.Member.ID, cfg))
	})
	index := uint64(0)
	apply := func(typ raft.LogType, data []byte) any {
		index++
		return f.Apply(&raft.Log{Type: typ, Index: index, Data: data})
	}
	check := func(res any, wantCfg string, wantErr error) {
		t.Helper()
		r, ok := res.(applyResult)
		if !ok {
			t.Fatalf("Apply returned %T %v, want applyResult", res, res)
		}
		if !errors.Is(r.err, wantErr) || (wantErr == nil && r.err != nil) {
			t.Errorf("Apply error = %v, want %v", r.err, wantErr)
		}
		if r.cfg.String() != wantCfg || f.config().String() != wantCfg {
			t.Errorf("Apply result %s, fsm %s; want %s", r.cfg, f.config(), wantCfg)
		}
	}

	_, changed := f.current()
	check(apply(raft.LogCommand, Command{Op: OpJoin, Member: mem("a", 1)}.Encode()), "e1 [a]", nil)
	select {
	case <-changed:
	default:
		t.Error("a change did not wake watchers")
	}
	_, changed = f.current()
	check(apply(raft.LogCommand, Command{Op: OpJoin, Member: mem("a", 1)}.Encode()), "e1 [a]", ErrNoChange)
	check(apply(raft.LogCommand, []byte("garbage")), "e1 [a]", ErrBadCommand)
	if res := apply(raft.LogNoop, nil); res != nil {
		t.Errorf("Apply(noop) = %v, want nil", res)
	}
	if res := apply(raft.LogBarrier, nil); res != nil {
		t.Errorf("Apply(barrier) = %v, want nil", res)
	}
	select {
	case <-changed:
		t.Error("watchers woken without a change")
	default:
	}
	check(apply(raft.LogCommand, Command{Op: OpJoin, Member: mem("b", 1)}.Encode()), "e2 [a] +[b]", nil)
	want := []string{"join a e1 [a]", "join b e2 [a] +[b]"}
	if !slices.Equal(commits, want) {
		t.Errorf("commit hook calls = %q, want %q", commits, want)
	}
}
