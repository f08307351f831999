package clusterstatus

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/gavel-auction/gavel/api"
	"github.com/gavel-auction/gavel/client"
	"github.com/gavel-auction/gavel/config"
)

// Cluster asks the masters and nodes of one configuration for their
// status. It is safe for concurrent use.
type Cluster struct {
	cfg     *config.Config
	cl      *client.Client
	dial    []grpc.DialOption
	attempt time.Duration
	ids     map[string]string // node addr -> id, from the config file
}

// New returns a Cluster that asks cfg's nodes through cl and its masters
// over connections made for each question with dial (TLS) besides the
// default options; attempt bounds every call. The caller keeps cl and
// closes it when done.
func New(cfg *config.Config, cl *client.Client, dial []grpc.DialOption, attempt time.Duration) *Cluster {
	c := &Cluster{cfg: cfg, cl: cl, dial: dial, attempt: attempt, ids: map[string]string{}}
	for _, n := range cfg.Nodes {
		c.ids[n.Addr] = n.ID
	}
	return c
}

// Config is the configuration whose masters and nodes c asks.
func (c *Cluster) Config() *config.Config { return c.cfg }

// Gather asks every master and every node of the config file for its
// status, in parallel, and returns the rows: the masters (one per master
// of the configuration, in its order), the chain as
// the master leader (else the master with the newest Raft state) sees it,
// cross-checked with the nodes' own answers, and the nodes.
func (c *Cluster) Gather(ctx context.Context) Status { return c.gather(ctx, false) }

// GatherAll is Gather that also asks the nodes that a configuration names
// (the masters' or a node's) but the config file does not.
func (c *Cluster) GatherAll(ctx context.Context) Status { return c.gather(ctx, true) }

func (c *Cluster) gather(ctx context.Context, beyond bool) Status {
	var mres []masterResult
	var nres []client.NodeResult
	var wg sync.WaitGroup
	wg.Go(func() { mres = queryMasters(ctx, c.cfg.Masters, c.attempt, c.dial) })
	wg.Go(func() { nres = queryNodes(ctx, c.cl, c.cfg.NodeAddrs(), c.attempt) })
	wg.Wait()
	mrows, view, leading := masterRows(mres)
	s := Status{Masters: mrows}
	if view >= 0 {
		s.Chain = chainView(mres[view].Status, leading, c.cfg.NodeIDs())
		if leading {
			s.Leader = mrows[view].ID
		}
	}
	ids := c.ids
	if beyond {
		ids = maps.Clone(c.ids)
		// Nodes that a configuration names but the config file does not.
		var extra []string
		seen := map[string]bool{}
		for _, r := range nres {
			seen[r.Addr] = true
		}
		note := func(cfg *api.ChainConfig) {
			for _, m := range append(slices.Clone(cfg.GetChain()), cfg.GetJoining()...) {
				if m.GetAddr() != "" && !seen[m.Addr] {
					seen[m.Addr] = true
					extra = append(extra, m.Addr)
				}
				if m.GetAddr() != "" && ids[m.Addr] == "" {
					ids[m.Addr] = m.GetId()
				}
			}
		}
		if view >= 0 {
			note(mres[view].Status.GetConfig())
		}
		for _, r := range nres {
			note(r.Status.GetConfig())
		}
		if len(extra) > 0 {
			nres = append(nres, queryNodes(ctx, c.cl, extra, c.attempt)...)
		}
	}
	s.Nodes, s.Newest = nodeRows(nres, ids)
	if s.Chain != nil {
		crossCheck(s.Chain, s.Nodes)
	}
	return s
}

// GatherNodes asks the nodes that the client knows (client.StatusAll) for
// their status, and returns their rows and the newest configuration among
// them; no master is asked. With follow, when the answers name nodes that
// were not asked, it asks again, those included.
func (c *Cluster) GatherNodes(ctx context.Context, follow bool) Status {
	res := c.cl.StatusAll(ctx)
	if follow && learnedMore(res) {
		res = c.cl.StatusAll(ctx)
	}
	var s Status
	s.Nodes, s.Newest = nodeRows(res, c.ids)
	return s
}

// masterResult is one master's answer to Status.
type masterResult struct {
	ID, Addr string
	Status   *api.MasterStatus
	Err      error
}

// queryMasters asks every master for its status, in parallel, each call
// bounded by ctx and attempt, dialing with dial (TLS) besides the default
// options. Results come in the order of masters.
func queryMasters(ctx context.Context, masters []config.MasterConfig, attempt time.Duration, dial []grpc.DialOption) []masterResult {
	res := make([]masterResult, len(masters))
	var wg sync.WaitGroup
	for i, m := range masters {
		res[i].ID, res[i].Addr = m.ID, m.Addr
		wg.Go(func() {
			cc, err := grpc.NewClient(m.Addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, dial...)...)
			if err != nil {
				res[i].Err = err
				return
			}
			defer cc.Close()
			actx, cancel := context.WithTimeout(ctx, attempt)
			defer cancel()
			res[i].Status, res[i].Err = api.NewMasterClient(cc).Status(actx, &api.MasterStatusRequest{})
		})
	}
	wg.Wait()
	return res
}

// queryNodes asks each address for its status, in parallel, each call
// bounded by ctx and attempt.
func queryNodes(ctx context.Context, cl *client.Client, addrs []string, attempt time.Duration) []client.NodeResult {
	res := make([]client.NodeResult, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		res[i].Addr = a
		wg.Go(func() {
			actx, cancel := context.WithTimeout(ctx, attempt)
			defer cancel()
			res[i].Status, res[i].Err = cl.Status(actx, a)
		})
	}
	wg.Wait()
	return res
}

// learnedMore reports whether the configurations in res name an address
// that res does not cover.
func learnedMore(res []client.NodeResult) bool {
	seen := map[string]bool{}
	for _, r := range res {
		seen[r.Addr] = true
	}
	for _, r := range res {
		c := r.Status.GetConfig()
		for _, m := range append(slices.Clone(c.GetChain()), c.GetJoining()...) {
			if m.GetAddr() != "" && !seen[m.Addr] {
				return true
			}
		}
	}
	return false
}
