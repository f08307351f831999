package e2e

import (
	"testing"
	"time"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/checker"
)

// TestSIGKILLAndReconfigure runs three `gavel node` processes with bidders
// going through every node, SIGKILLs one node (head, middle or tail), and
// pushes the configuration without it to the survivors through the admin
// call the master uses. Bids go on; the history is linearizable, no
// acknowledged bid is lost, and the survivors end with identical state.
func TestSIGKILLAndReconfigure(t *testing.T) {
	for _, tc := range []struct {
		name, victim string
		survivors    []string
	}{
		{"middle", "n2", []string{"n1", "n3"}},
		{"head", "n1", []string{"n2", "n3"}},
		{"tail", "n3", []string{"n1", "n2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t, 3)
			w := newWorkload(c, "a1", "a2")
			w.start(6, 2)
			time.Sleep(time.Second)
			c.kill(tc.victim)
			t.Logf("SIGKILLed %s", tc.victim)
			time.Sleep(300 * time.Millisecond) // what a failure detector would take
			c.reconfigure(&api.ChainConfig{Epoch: 2, Chain: c.members(tc.survivors...)}, tc.survivors...)
			before := w.successes()
			time.Sleep(1500 * time.Millisecond)
			w.finish()
			if after := w.successes(); after-before < 20 {
				t.Errorf("only %d bids succeeded after the reconfiguration", after-before)
			}
			w.verify(t, tc.survivors...)
		})
	}
}

// TestJoinAtTail: a fourth node started with --join catches up from the
// tail under load, is appended as the new tail, and serves reads.
func TestJoinAtTail(t *testing.T) {
	c := newCluster(t, 4) // n4 is started below with --join
	c.kill("n4")
	c.reconfigure(&api.ChainConfig{Epoch: 2, Chain: c.members("n1", "n2", "n3")}, "n1", "n2", "n3")
	w := newWorkload(c, "a1", "a2")
	w.start(6, 2)
	time.Sleep(500 * time.Millisecond)
	c.start("n4", "--join")
	c.waitUp("n4")
	c.reconfigure(&api.ChainConfig{Epoch: 3, Chain: c.members("n1", "n2", "n3"), Joining: c.members("n4")},
		"n1", "n2", "n3", "n4")
	// Wait until n4 has caught up with the tail, then append it.
	deadline := time.Now().Add(10 * time.Second)
	for {
		sts := c.statuses("n3", "n4")
		if sts["n4"].Applied > 0 && sts["n3"].Applied-sts["n4"].Applied < 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("n4 did not catch up: n3 applied %d, n4 applied %d", sts["n3"].Applied, sts["n4"].Applied)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.reconfigure(&api.ChainConfig{Epoch: 4, Chain: c.members("n1", "n2", "n3", "n4")}, "n1", "n2", "n3", "n4")
	time.Sleep(time.Second)
	if st := c.statuses("n4")["n4"]; st.Role != api.Role_TAIL || !st.Readable {
		t.Errorf("n4 after the join: role %v readable %v, want a readable tail", st.Role, st.Readable)
	}
	w.finish()
	w.verify(t, "n1", "n2", "n3", "n4")
}

// successes is the number of successful bids so far.
func (w *workload) successes() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.outcomes[checker.OutcomeSuccess]
}
