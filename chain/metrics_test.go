package chain

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestNodeMetrics: a node serves its metrics in Prometheus text format:
// bids by outcome (counted once, at the node that answered the client),
// the bid latency histogram, and its state read at scrape time; /readyz
// says whether it is a caught-up member.
func TestNodeMetrics(t *testing.T) {
	c := startGRPCCluster(t, 3)
	c.open(t, "n1", "a1")
	bidOK(t, c, "n2", "a1", "alice", 10) // forwarded to the head: counted at n2 only
	get := func(id, path string) (int, string) {
		srv := httptest.NewServer(c.nodes[id].HTTPHandler())
		defer srv.Close()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	_, n2 := get("n2", "/metrics")
	for _, want := range []string{
		`gavel_bids_total{outcome="success"} 1`,
		`gavel_bid_duration_seconds_bucket{outcome="success",le="+Inf"} 1`,
		`gavel_chain_epoch 1`,
		`gavel_node_role{role="middle"} 1`,
		`gavel_chain_length 3`,
		`gavel_node_applied_seq 2`,
		`gavel_reconfigurations_total 1`,
		`go_goroutines`,
		`process_cpu_seconds_total`,
	} {
		if !strings.Contains(n2, want) {
			t.Errorf("n2's /metrics lacks %q", want)
		}
	}
	if _, n1 := get("n1", "/metrics"); strings.Contains(n1, `gavel_bids_total{outcome="success"} 1`) {
		t.Errorf("the head counted a bid that was forwarded to it")
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		if code, body := get(id, "/readyz"); code != http.StatusOK {
			t.Errorf("%s /readyz: %d %s", id, code, body)
		}
		if code, _ := get(id, "/healthz"); code != http.StatusOK {
			t.Errorf("%s /healthz: %d", id, code)
		}
	}
}
