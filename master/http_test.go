package master

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A master's http_addr serves its metrics, /healthz, /readyz once a
// leader is known, and Go's profiler.
func TestMasterHTTPEndpoints(t *testing.T) {
	c := newCluster(t, 3)
	l := c.waitLeader()
	srv := httptest.NewServer(c.masters[l].HTTPHandler())
	defer srv.Close()
	for path, want := range map[string]string{
		"/healthz":                        "ok",
		"/readyz":                         "ready",
		"/metrics":                        "go_goroutines",
		"/debug/pprof/":                   "goroutine",
		"/debug/pprof/trace?seconds=0.05": "",
	} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, %.80q; want 200 with %q", path, resp.StatusCode, body, want)
		}
	}
}
