package chain

// The master inside the simulation (simOptions.Policy): the master
// package's own policy — master.Leader for heartbeats, leases and
// removals, master.Decide and master.Apply for configurations — run on
// simulated time, with heartbeats and their replies as simulated messages.
//
// The master group is modelled as one leader at a time over a replicated
// configuration: the configuration survives a failover (Raft commits it
// before it is pushed), the leader's view of the nodes does not. A new
// leader takes office ElectionDelay after the old one fails and, as the
// real one does, gives every member a full failure timeout before it
// removes anyone.
//
// The master is a party on the network named "master": partition(id,
// "master", d) cuts a node off from it (heartbeats, their replies and
// configuration pushes are lost both ways) without touching the chain's
// links.

import (
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/master"
)

// masterID is the master's name on the simulated network.
const masterID = "master"

// policyMaster is the simulated master group.
type policyMaster struct {
	cfg       master.Config  // the committed configuration
	leader    *master.Leader // nil while no leader is in office
	term      int            // counts leaders, so that a failed one's late work is dropped
	failovers int
}

// masterTime is the master's clock: real simulated time, no drift.
func (c *simCluster) masterTime() time.Time { return time.UnixMicro(baseMs*1000 + c.now) }

// member is node id's entry in a master configuration.
func (c *simCluster) member(n *simNode) master.Member {
	return master.Member{ID: n.id, Addr: n.id + ":7000", Incarnation: n.incarnation}
}

// bootstrapPolicy makes the first configuration, the given chain, and a
// leader, and pushes the configuration.
func (c *simCluster) bootstrapPolicy(chain []string) {
	cfg := master.Config{Epoch: 1}
	for _, id := range chain {
		cfg.Chain = append(cfg.Chain, c.member(c.node(id)))
	}
	c.electLeader()
	c.commitConfig(cfg, "bootstrap")
}

// electLeader puts a new leader in office now.
func (c *simCluster) electLeader() {
	c.pm.term++
	c.pm.leader = master.NewLeader(c.masterTime())
	c.logf("master: leader %d in office (epoch %d)", c.pm.term, c.pm.cfg.Epoch)
}

// failMaster takes the leader down; another takes office ElectionDelay
// later, with no memory of the nodes' heartbeats.
func (c *simCluster) failMaster() {
	if c.pm.leader == nil {
		return
	}
	c.pm.leader = nil
	c.pm.failovers++
	c.logf("master: leader %d fails", c.pm.term)
	c.after(c.between(c.opts.ElectionDelay), func() {
		if c.pm.leader == nil {
			c.electLeader()
		}
	})
}

// commitConfig makes cfg the committed configuration and pushes it to
// every member (the configuration watch).
func (c *simCluster) commitConfig(cfg master.Config, why string) {
	c.pm.cfg = cfg
	c.master.cfg = cfg.Proto()
	c.master.changes++
	c.logf("master: epoch %d %s (%s)", cfg.Epoch, cfg, why)
	for _, list := range [][]master.Member{cfg.Chain, cfg.Joining} {
		for _, m := range list {
			c.pushPolicy(m.ID, c.master.cfg)
		}
	}
}

// pushPolicy sends a configuration to node id on its watch stream; lost
// when the node is cut off from the master.
func (c *simCluster) pushPolicy(id string, cfg *api.ChainConfig) {
	if c.isCut(id, masterID) {
		return
	}
	c.after(c.between(c.opts.ConfigDelay), func() {
		if c.isCut(id, masterID) {
			return
		}
		n := c.nodes[id]
		c.onNode(n, func() { c.install(n, cfg) })
	})
}

// install is Node.installFromMaster: the configuration is installed when
// it is for this run of the node.
func (c *simCluster) install(n *simNode, cfg *api.ChainConfig) {
	if !forThisRun(n.r, n.incarnation, cfg) {
		return
	}
	err := n.r.Reconfigure(proto.Clone(cfg).(*api.ChainConfig))
	if err != nil && err != ErrRemoved {
		c.violation("%s: Reconfigure(epoch %d): %v", n.id, cfg.Epoch, err)
	}
	c.drain(n)
}

// heartbeat sends n's report to the master leader, as Node.report and the
// membership's heartbeat loop do; the reply installs the configuration
// and grants the lease, counted from the send time on n's clock.
func (c *simCluster) heartbeat(n *simNode) {
	r := n.r
	req := progressReport(r, n.id+":7000", n.incarnation, r.Durable())
	sentMs, run := c.clockOf(n), n.run
	if c.isCut(n.id, masterID) {
		return
	}
	c.after(c.between(c.opts.ClientDelay), func() {
		l := c.pm.leader
		if l == nil || c.isCut(n.id, masterID) {
			return
		}
		res := l.Heartbeat(c.pm.cfg, req, c.masterTime(), time.Duration(c.opts.Lease)*time.Microsecond)
		cfg := c.master.cfg
		c.after(c.between(c.opts.ClientDelay), func() {
			if c.isCut(n.id, masterID) {
				return
			}
			c.onNode(n, func() {
				if n.run != run {
					return // a reply to an earlier run of the process
				}
				c.install(n, cfg)
				if res.Lease > 0 {
					n.r.GrantLease(sentMs + res.Lease.Milliseconds())
				}
				c.drain(n)
			})
		})
	})
}

// policyTick is one round of the leader's loop: at most one command,
// committed at once.
func (c *simCluster) policyTick() {
	l := c.pm.leader
	if l == nil {
		return
	}
	cmd, ok := l.Decide(c.pm.cfg, c.masterTime(), time.Duration(c.opts.FailureTimeout)*time.Microsecond)
	if !ok {
		return
	}
	next, err := master.Apply(c.pm.cfg, cmd)
	if err != nil {
		c.violation("master: Decide proposed %s %s, which Apply refuses: %v", cmd.Op, cmd.Member.ID, err)
		return
	}
	c.commitConfig(next, fmt.Sprintf("%s %s: %s", cmd.Op, cmd.Member.ID, cmd.Reason))
	l.Settled(next)
}

// pause stops node id for d: it runs nothing meanwhile (no tick, no
// heartbeat, no message handled), then resumes with what came in order.
func (c *simCluster) pause(id string, d int64) {
	n := c.node(id)
	if n.crashed {
		return
	}
	n.pausedUntil = max(n.pausedUntil, c.now+d)
	c.logf("PAUSE %s for %.1fms (role %v, applied %d)", id, float64(d)/1000, n.r.Role(), n.r.Applied())
}

// restart starts a crashed node's process again with its durable state
// (sync always: everything it applied) and a new incarnation; it asks the
// master to join, and catches up from the tail.
func (c *simCluster) restart(id string) {
	n := c.node(id)
	if !n.crashed {
		return
	}
	old := n.r
	n.r = c.newReplica(id)
	if n.archive != nil {
		n.r.opts.Archive = n.archive // on disk with the state
	}
	if err := n.r.Restore(Recovered{State: old.State(), Log: old.Log(), Complete: true}); err != nil {
		c.violation("%s: restore: %v", id, err)
		return
	}
	n.crashed, n.pausedUntil = false, 0
	c.startRun(n)
	c.logf("RESTART %s (applied %d, incarnation %d)", id, n.r.Applied(), n.incarnation)
}
