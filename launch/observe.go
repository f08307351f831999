package launch

import (
	"context"

	"github.com/gavel-auction/gavel/internal/clusterstatus"
)

// statusObserver is the Observer of a running cluster: the status calls
// of `gavel status`, through package clusterstatus.
type statusObserver struct {
	c *clusterstatus.Cluster
}

var _ Observer = (*statusObserver)(nil)

// NewStatusObserver returns an Observer that asks every master and node of
// c's configuration for its status.
func NewStatusObserver(c *clusterstatus.Cluster) Observer { return &statusObserver{c: c} }

// View asks every master and node for its status, in parallel.
func (o *statusObserver) View(ctx context.Context) View {
	s := o.c.Gather(ctx)
	masters := o.c.Config().Masters
	v := View{Masters: map[string]MasterView{}, Nodes: map[string]NodeView{}, Leader: s.Leader}
	// Gather has one row per master of the configuration, in its order.
	for i, r := range s.Masters {
		v.Masters[masters[i].ID] = MasterView{Up: r.Up, State: r.State, LeaderID: r.LeaderID, Epoch: r.Epoch, Err: r.Error}
	}
	for _, r := range s.Nodes {
		v.Nodes[r.ID] = NodeView{Up: r.Up, Role: r.Role, Epoch: r.Epoch, Applied: r.Applied, Lag: r.Lag, Err: r.Error}
	}
	switch {
	case s.Chain != nil:
		v.Epoch, v.Chain, v.Joining = s.Chain.Epoch, s.Chain.Chain, s.Chain.Joining
		for _, m := range s.Chain.Nodes {
			if m.Running != "" {
				v.Restarted = append(v.Restarted, m.ID)
			}
		}
	case len(masters) == 0 && s.Newest != nil:
		v.Epoch = s.Newest.Epoch
		v.Chain, v.Joining = clusterstatus.MemberIDs(s.Newest.Chain), clusterstatus.MemberIDs(s.Newest.Joining)
	}
	return v
}
