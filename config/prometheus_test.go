package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The committed dashboards/prometheus.yml is what `gavel config prometheus`
// generates from the repository's config.yaml: the two never drift.
func TestCommittedScrapeConfigIsGenerated(t *testing.T) {
	c, err := Load(filepath.Join("..", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	c.File = "config.yaml"
	want := c.PrometheusScrapeConfig(5 * time.Second)
	got, err := os.ReadFile(filepath.Join("..", "dashboards", "prometheus.yml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != want {
		t.Errorf("dashboards/prometheus.yml is stale: regenerate it with `gavel config prometheus > dashboards/prometheus.yml`")
	}
}

// Every process that serves metrics is a target, labelled with its id, in
// the job of its kind; a process without http_addr is left out.
func TestPrometheusScrapeConfig(t *testing.T) {
	c := Default()
	c.Nodes[2].HTTPAddr = ""
	out := c.PrometheusScrapeConfig(1500 * time.Millisecond)
	for _, want := range []string{
		"scrape_interval: 1500ms",
		"- job_name: gavel-master", `targets: ["127.0.0.1:7211"]`, `labels: {id: "m1", cluster: "gavel"}`,
		"- job_name: gavel-node", `targets: ["127.0.0.1:7112"]`,
		"- job_name: gavel-gateway", `labels: {id: "g1", cluster: "gavel"}`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("scrape config lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, `"n3"`) {
		t.Errorf("n3 has no http_addr but is a target:\n%s", out)
	}
}

// With TLS on, the gateways' metrics are https (on their addr); masters'
// and nodes' http_addr stay plain http.
func TestPrometheusScrapeConfigTLS(t *testing.T) {
	c := Default()
	c.TLS.CA = "/etc/gavel/ca.crt"
	out := c.PrometheusScrapeConfig(5 * time.Second)
	want := "  - job_name: gavel-gateway\n    scheme: https\n    tls_config: {ca_file: \"/etc/gavel/ca.crt\"}\n    static_configs:\n"
	if !strings.Contains(out, want) {
		t.Errorf("gateway job is not https with the CA:\n%s", out)
	}
	if strings.Count(out, "scheme: https") != 1 {
		t.Errorf("masters or nodes scraped over https:\n%s", out)
	}
}
