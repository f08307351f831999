package chain

import (
	"fmt"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
)

// The replication decoder and handler under arbitrary input: bytes
// decoded as a ChainMessage and stepped into a replica of a live chain
// must never panic, and a message Step must drop (malformed, another
// epoch, another addressee, a stranger) must change nothing.

// fuzzChain is three replicas n1 -> n2 -> n3 that have applied an open
// and a few bids, with one more bid sequenced at the head and forwarded
// to n2 only (so that Sent lists and acks are in play).
type fuzzChain struct {
	rs   map[string]*Replica
	msgs []*api.ChainMessage // every message the chain exchanged
	held []*api.ChainMessage // sent, not delivered
}

func newFuzzChain(tb testing.TB) *fuzzChain {
	tb.Helper()
	cfg := &api.ChainConfig{Epoch: 3, Chain: []*api.Member{{Id: "n1"}, {Id: "n2"}, {Id: "n3"}}}
	c := &fuzzChain{rs: map[string]*Replica{}}
	for _, m := range cfg.Chain {
		r := NewReplica(Options{ID: m.Id, MaxBatch: 4, HelloRetryTicks: 3, Logger: slog.New(slog.DiscardHandler)})
		if err := r.Reconfigure(cfg); err != nil {
			tb.Fatal(err)
		}
		c.rs[m.Id] = r
	}
	const now = 1_700_000_000_000
	c.pump(nil)
	head := c.rs["n1"]
	head.Propose(1, &api.Command{Op: &api.Command_Open{Open: &api.OpenAuction{Auction: "a1", DurationMs: 60_000,
		MinIncrement: 1, RequestId: "o1"}}}, now)
	c.pump(nil)
	for i, bidder := range []string{"alice", "bob", "carol", "alice", "dave", "bob"} {
		head.Propose(Handle(i+2), &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{Auction: "a1", Bidder: bidder,
			Amount: int64(10 * (i + 1)), RequestId: fmt.Sprint("b", i)}}}, now+int64(i))
		c.pump(nil)
	}
	head.Propose(9, &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{Auction: "a1", Bidder: "erin", Amount: 500,
		RequestId: "late"}}}, now+10)
	// n2 gets the forward but its forward to n3 is held back.
	c.pump(func(m *api.ChainMessage) bool { return m.From == "n2" && m.To == "n3" })
	if got := c.rs["n1"].Applied(); got != 8 || c.rs["n3"].Applied() != 7 || c.rs["n2"].Applied() != 8 {
		tb.Fatalf("fixture: applied n1 %d n2 %d n3 %d", got, c.rs["n2"].Applied(), c.rs["n3"].Applied())
	}
	return c
}

// pump delivers messages until none is left, holding those hold selects.
func (c *fuzzChain) pump(hold func(*api.ChainMessage) bool) {
	for {
		var out []*api.ChainMessage
		for _, id := range []string{"n1", "n2", "n3"} {
			if r := c.rs[id]; r.HasReady() {
				out = append(out, r.Ready().Messages...)
			}
		}
		if len(out) == 0 {
			return
		}
		for _, m := range out {
			c.msgs = append(c.msgs, m)
			if hold != nil && hold(m) {
				c.held = append(c.held, m)
				continue
			}
			c.rs[m.To].Step(m)
		}
	}
}

// fingerprint is everything of r a message could change.
func fingerprint(r *Replica) string {
	s := fmt.Sprintf("role %v epoch %d applied %d committed %d sent %d..%d up %v/%v caught %v waiters %d digest %x",
		r.role, r.Epoch(), r.Applied(), r.committed, r.sentStart(), len(r.sent), r.upstream, r.upEstablished, r.caughtUp,
		len(r.waiters), r.state.Digest())
	for _, l := range r.down {
		s += fmt.Sprintf(" link %s ready %v next %d holds %d", l.id, l.ready, l.next, l.holds)
	}
	return s + fmt.Sprintf(" ready %v", r.HasReady())
}

// fuzzStep decodes data, patches it as fix says (so that fuzzing reaches
// past the epoch and sender checks), steps it into one replica of a fresh
// fuzzChain and checks the outcome.
func fuzzStep(t *testing.T, data []byte, fix uint8) {
	c := newFuzzChain(t)
	var m api.ChainMessage
	if err := proto.Unmarshal(data, &m); err != nil {
		return // the decoder refuses it: nothing reaches a replica
	}
	ids := []string{"n1", "n2", "n3"}
	target := c.rs[ids[int(fix)%3]]
	if fix&0x04 != 0 {
		m.Epoch = target.Epoch()
	}
	if fix&0x08 != 0 {
		m.To = target.ID()
	}
	if fix&0x10 != 0 {
		m.From = ids[int(fix>>5)%3]
	}
	before := fingerprint(target)
	others := map[string]string{}
	for id, r := range c.rs {
		others[id] = fingerprint(r)
	}
	target.Step(&m)
	dropped := m.GetEpoch() != target.Epoch() || target.checkStep(&m) != nil
	if dropped {
		if after := fingerprint(target); after != before {
			t.Fatalf("a dropped message (%v) changed %s:\nbefore %s\nafter  %s\nmessage %v",
				target.checkStep(&m), target.ID(), before, after, &m)
		}
	}
	for id, r := range c.rs {
		if r != target && fingerprint(r) != others[id] {
			t.Fatalf("a message to %s changed %s", target.ID(), id)
		}
	}
	// Whatever it did, the replica goes on: its output is well formed and
	// the chain still delivers and commits.
	c.pump(nil)
	if r := c.rs["n1"]; r.committed > r.Applied() {
		t.Fatalf("n1 committed %d above applied %d", r.committed, r.Applied())
	}
}

// FuzzReplicaStep: go test -fuzz FuzzReplicaStep ./chain/ explores; plain
// go test runs the seed corpus: every message the fixture chain exchanged,
// with and without patches, and malformed variants of them.
func FuzzReplicaStep(f *testing.F) {
	c := newFuzzChain(f)
	add := func(m *api.ChainMessage) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		for _, fix := range []uint8{0, 0x0c, 0x1d, 0x3e} {
			f.Add(b, fix)
		}
	}
	for _, m := range append(c.msgs, c.held...) {
		add(m)
	}
	forged := &api.Update{Seq: 9, Epoch: 3, Command: &api.Command{Op: &api.Command_Bid{Bid: &api.PlaceBid{
		Auction: "a1", Bidder: "mallory", Amount: 1 << 40, RequestId: "x"}}}}
	for _, m := range []*api.ChainMessage{
		// An ack of more than anyone applied, from the tail, to the head.
		{Epoch: 3, From: "n3", To: "n1", Body: &api.ChainMessage_Ack{Ack: &api.Ack{Seq: 1 << 40}}},
		// Updates the sender does not hold (pred_applied below them).
		{Epoch: 3, From: "n2", To: "n3", Body: &api.ChainMessage_Forward{Forward: &api.Forward{Updates: []*api.Update{forged}}}},
		// A gap inside one forward.
		{Epoch: 3, From: "n2", To: "n3", Body: &api.ChainMessage_Forward{Forward: &api.Forward{PredApplied: 20,
			Updates: []*api.Update{{Seq: 8, Epoch: 3, Command: forged.Command}, {Seq: 10, Epoch: 3, Command: forged.Command}}}}},
		// An update of a later epoch than its message.
		{Epoch: 3, From: "n2", To: "n3", Body: &api.ChainMessage_Forward{Forward: &api.Forward{PredApplied: 9,
			Updates: []*api.Update{{Seq: 8, Epoch: 4, Command: forged.Command}}}}},
		// A snapshot chunk beyond what the sender holds.
		{Epoch: 3, From: "n1", To: "n2", Body: &api.ChainMessage_Forward{Forward: &api.Forward{Handshake: true, PredApplied: 8,
			Chunk: &api.SnapshotChunk{Seq: 99, Last: true}}}},
		// A hello that knows more committed than it holds.
		{Epoch: 3, From: "n3", To: "n2", Body: &api.ChainMessage_Hello{Hello: &api.Hello{LastSeq: 2, Committed: 7}}},
		// To someone else; from nobody; no body; nil bodies.
		{Epoch: 3, From: "n1", To: "n9", Body: &api.ChainMessage_Ack{Ack: &api.Ack{Seq: 1}}},
		{Epoch: 3, To: "n2", Body: &api.ChainMessage_Ack{Ack: &api.Ack{Seq: 1}}},
		{Epoch: 3, From: "n1", To: "n2"},
		{Epoch: 3, From: "n1", To: "n2", Body: &api.ChainMessage_Forward{}},
		{Epoch: 3, From: "n3", To: "n2", Body: &api.ChainMessage_Hello{}},
	} {
		add(m)
	}
	f.Add([]byte{0xff, 0x01}, uint8(0))
	f.Fuzz(fuzzStep)
}

// TestCheckMessageDropsMalformed: each malformed message of the seed
// corpus is dropped by Step, with nothing changed at its addressee, while
// the well-formed traffic of the fixture passes CheckMessage.
func TestCheckMessageDropsMalformed(t *testing.T) {
	c := newFuzzChain(t)
	for _, m := range append(c.msgs, c.held...) {
		if err := CheckMessage(m); err != nil {
			t.Errorf("a replica's own message is refused: %v: %v", err, m)
		}
	}
	// The held forward, delivered, goes through; one that claims more
	// than its sender holds does not.
	fwd := proto.Clone(c.held[0]).(*api.ChainMessage)
	fwd.GetForward().PredApplied = 0
	n3 := c.rs["n3"]
	before := fingerprint(n3)
	n3.Step(fwd)
	if after := fingerprint(n3); after != before {
		t.Errorf("a malformed forward changed n3:\n%s\n%s", before, after)
	}
	n3.Step(c.held[0])
	if n3.Applied() != 8 {
		t.Errorf("the real forward: n3 applied %d, want 8", n3.Applied())
	}
}
