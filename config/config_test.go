package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// TestMain clears GAVEL_* variables from the environment, so that a
// developer's shell cannot change what the tests load.
func TestMain(m *testing.M) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix+"_") {
			os.Unsetenv(k)
		}
	}
	os.Exit(m.Run())
}

// nodesYAML is a valid nodes: section for files that test other keys.
const nodesYAML = `
nodes:
  - {id: n1, addr: "127.0.0.1:7101"}
  - {id: n2, addr: "127.0.0.1:7102"}
  - {id: n3, addr: "127.0.0.1:7103"}
`

// writeConfig writes content to config.yaml in a fresh directory and
// returns its path.
func writeConfig(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// loadErr loads content and returns the error, failing if there is none.
func loadErr(t *testing.T, content string) (path string, err error) {
	t.Helper()
	path = writeConfig(t, content)
	c, err := Load(path)
	if err == nil {
		t.Fatalf("Load(%q) = %+v, want an error", content, c)
	}
	return path, err
}

// wantProblem checks that err holds an *Error for key whose text contains
// msg and names the file.
func wantProblem(t *testing.T, err error, file, key, msg string) {
	t.Helper()
	for _, e := range flatten(err) {
		if e.Key == key && strings.Contains(e.Msg, msg) {
			if e.File != file {
				t.Errorf("%v: File = %q, want %q", e, e.File, file)
			}
			return
		}
	}
	t.Errorf("error %q has no problem at key %q containing %q", err, key, msg)
}

// flatten returns the *Errors in err, which may be joined.
func flatten(err error) []*Error {
	if m, ok := err.(interface{ Unwrap() []error }); ok {
		var out []*Error
		for _, e := range m.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	var e *Error
	if errors.As(err, &e) {
		return []*Error{e}
	}
	return nil
}

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got, want := c.NodeIDs(), []string{"n1", "n2", "n3"}; !slices.Equal(got, want) {
		t.Errorf("NodeIDs() = %v, want %v", got, want)
	}
}

// The repository's config.yaml is the defaults written out: it loads, equals
// Default() but for insecure: true (its cluster is loopback-only; the
// default is false, so that a cluster runs in plaintext only when its
// file says so), and spells out every key.
func TestRepositoryConfigYAML(t *testing.T) {
	path := filepath.Join("..", "config.yaml")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.File, want.Insecure = path, true
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Load(config.yaml) = %+v, want %+v", c, want)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	var missing []string
	var walk func(prefix string, raw any, t reflect.Type)
	walk = func(prefix string, raw any, t reflect.Type) {
		m, _ := raw.(map[string]any)
		for _, f := range fields(t) {
			v, ok := m[f.key]
			switch {
			case !ok:
				missing = append(missing, join(prefix, f.key))
			case f.typ.Kind() == reflect.Struct:
				walk(join(prefix, f.key), v, f.typ)
			case f.typ.Kind() == reflect.Slice && f.typ.Elem().Kind() == reflect.Struct:
				// The first element documents every key; the others
				// may leave out what they do not set.
				if l, _ := v.([]any); len(l) > 0 {
					walk(join(prefix, f.key)+"[]", l[0], f.typ.Elem())
				}
			}
		}
	}
	walk("", raw, reflect.TypeFor[Config]())
	if len(missing) > 0 {
		t.Errorf("config.yaml lacks keys %v", missing)
	}
}

// Keys the file leaves out take their defaults.
func TestLoadAppliesDefaults(t *testing.T) {
	path := writeConfig(t, nodesYAML+"chain: {tick: 20ms}\n")
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.File = path
	want.Chain.Tick = 20 * time.Millisecond
	want.Masters = nil  // masters come only from the file
	want.Gateways = nil // and so do gateways
	want.Hosts = nil    // and hosts
	for i := range want.Nodes {
		want.Nodes[i].HTTPAddr = "" // nodesYAML gives none
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v, want %+v", c, want)
	}
}

// Rule: an unknown key anywhere is an error naming the key path and the file.
func TestUnknownKey(t *testing.T) {
	for _, tc := range []struct{ content, key string }{
		{nodesYAML + "chian: {tick: 5ms}\n", "chian"},
		{nodesYAML + "chain: {tick: 5ms, tock: 5ms}\n", "chain.tock"},
		{nodesYAML + "log: {level: info, colour: red}\n", "log.colour"},
		{"nodes:\n  - {id: n1, addr: \"h:1\"}\n  - {id: n2, adress: \"h:2\"}\n", "nodes[1].adress"},
		{nodesYAML + "replicas: []\n", "replicas"},
		{nodesYAML + "master: {lease: 100ms, leese: 1s}\n", "master.leese"},
	} {
		path, err := loadErr(t, tc.content)
		want := path + `: unknown key "` + tc.key + `"`
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
		if !errors.Is(err, ErrUnknownKey) {
			t.Errorf("error %q is not ErrUnknownKey", err)
		}
	}
}

// Rule: a bad value is an error naming the key and the file.
func TestBadValue(t *testing.T) {
	for _, tc := range []struct{ content, key, msg string }{
		{nodesYAML + "chain: {tick: 10 parsecs}\n", "chain.tick", `invalid duration "10 parsecs"`},
		{nodesYAML + "chain: {tick: 10}\n", "chain.tick", "give a unit"},
		{nodesYAML + "chain: {hello_retry: 0s}\n", "chain.hello_retry", "must be a positive duration"},
		{nodesYAML + "chain: {tick: -1ms}\n", "chain.tick", "must be a positive duration"},
		{nodesYAML + "chain: {max_batch: 0}\n", "chain.max_batch", "must be a positive number"},
		{nodesYAML + "chain: {max_batch: lots}\n", "chain.max_batch", `invalid integer "lots"`},
		{nodesYAML + "chain: {dedup_window: 256}\n", "chain.dedup_window", "no longer read"},
		{nodesYAML + "chain: 5\n", "chain", "expected a mapping"},
		{nodesYAML + "client: {timeout: soon}\n", "client.timeout", `invalid duration "soon"`},
		{nodesYAML + "cluster: {name: [a]}\n", "cluster.name", "expected a string"},
		{nodesYAML + "cluster: {name: \"\"}\n", "cluster.name", "must not be empty"},
		{nodesYAML + "log: {level: loud}\n", "log.level", `unknown log level "loud"`},
		{nodesYAML + "log: {format: xml}\n", "log.format", `unknown log format "xml"`},
		{"nodes: n1\n", "nodes", "expected a list"},
		{"nodes: [5]\n", "nodes[0]", "expected a mapping"},
		{"nodes: []\n", "nodes", "no nodes"},
		{"log: {level: info}\n", "nodes", "no nodes"},
		{"nodes:\n  - {addr: \"h:1\"}\n", "nodes[0].id", "missing node id"},
		{"nodes:\n  - {id: \"n 1\", addr: \"h:1\"}\n", "nodes[0].id", "invalid node id"},
		{"nodes:\n  - {id: n1}\n", "nodes[0].addr", "missing addr"},
		{"nodes:\n  - {id: n1, addr: \"h:1\"}\n  - {id: n1, addr: \"h:2\"}\n", "nodes[1].id", `duplicate node id "n1"`},
		{"nodes:\n  - {id: n1, addr: \"h:1\"}\n  - {id: n2, addr: \"h:1\"}\n", "nodes[1].addr", `duplicate addr "h:1"`},
		{"nodes:\n  - {id: n1, addr: \"h:1\"}\n  - {id: n2, addr: \"h:2\"}\n  - {id: n3, addr: localhost}\n", "nodes[2].addr", "want host:port"},
		{"nodes:\n  - {id: n1, addr: \":7101\"}\n", "nodes[0].addr", "want a host"},
		{"nodes:\n  - {id: n1, addr: \"h:0\"}\n", "nodes[0].addr", "1..65535"},
		{"nodes:\n  - {id: n1, addr: \"h:65536\"}\n", "nodes[0].addr", "1..65535"},
		{"nodes:\n  - {id: n1, addr: \"h:http\"}\n", "nodes[0].addr", "1..65535"},
		{nodesYAML + "gateways: [{id: g1}]\n", "gateways[0].addr", "missing addr"},
		{nodesYAML + "gateways: [{addr: \"h:1\"}]\n", "gateways[0].id", "missing gateway id"},
		{nodesYAML + "gateways: [{id: \"g 1\", addr: \"h:1\"}]\n", "gateways[0].id", "invalid gateway id"},
		{nodesYAML + "gateways: [{id: n2, addr: \"h:1\"}]\n", "gateways[0].id", `duplicate id "n2" (also nodes[1])`},
		{nodesYAML + "gateways: [{id: g1, addr: \"h:1\"}, {id: g1, addr: \"h:2\"}]\n", "gateways[1].id", `duplicate id "g1" (also gateways[0])`},
		{nodesYAML + "gateways: [{id: g1, addr: \"127.0.0.1:7103\"}]\n", "gateways[0].addr", `duplicate addr "127.0.0.1:7103" (also nodes[2].addr)`},
		{nodesYAML + "masters: [{id: m1, addr: \"h:5\", raft_addr: \"h:6\"}]\ngateways: [{id: g1, addr: \"h:6\"}]\n",
			"gateways[0].addr", `duplicate addr "h:6" (also masters[0].raft_addr)`},
		{nodesYAML + "gateways: [{id: g1, addr: \"h:1\"}, {id: g2, addr: \"H:1\"}]\n", "gateways[1].addr", `duplicate addr "H:1" (also gateways[0].addr)`},
		{"nodes: [{id: n1, addr: \"h:1\", http_addr: \"h:2\"}]\ngateways: [{id: g1, addr: \"h:2\"}]\n", "gateways[0].addr", `duplicate addr "h:2" (also nodes[0].http_addr)`},
		{nodesYAML + "gateways: {id: g1}\n", "gateways", "expected a list"},
		{nodesYAML + "gateway: {allowed_origins: \"example.com\"}\n", "gateway.allowed_origins", `invalid origin "example.com"`},
		{nodesYAML + "gateway: {allowed_origins: \"https://a.example.com, ftp://b\"}\n", "gateway.allowed_origins", `invalid origin "ftp://b"`},
		{nodesYAML + "gateway: {queue_size: 0}\n", "gateway.queue_size", "must be a positive number"},
		{nodesYAML + "gateway: {write_timeout: 0s}\n", "gateway.write_timeout", "must be a positive duration"},
		{nodesYAML + "gateway: {ping_interval: 30s, pong_wait: 30s}\n", "gateway.ping_interval", "must be shorter than gateway.pong_wait"},
		{nodesYAML + "gateway: {pong_wait: 1}\n", "gateway.pong_wait", "give a unit"},
		{nodesYAML + "gateway: {read_limit: 100}\n", "gateway.read_limit", "at least 512 bytes"},
		{nodesYAML + "gateway: {metrics_interval: -1s}\n", "gateway.metrics_interval", "must be a positive duration"},
		{nodesYAML + "gateway: {pprof: yes please}\n", "gateway.pprof", `invalid boolean "yes please"`},
		{nodesYAML + "auth: {secret: short}\n", "auth.secret", "too short (5 characters)"},
		{nodesYAML + "auth: {token_ttl: 0s}\n", "auth.token_ttl", "must be a positive duration"},
		// The bounds.
		{nodesYAML + "chain: {retention: 0s}\n", "chain.retention", "must be a positive duration"},
		{nodesYAML + "chain: {max_request_ids: 0}\n", "chain.max_request_ids", "must be a positive number"},
		{nodesYAML + "chain: {max_bidders: -1}\n", "chain.max_bidders", "must be a positive number"},
		{nodesYAML + "chain: {watch_history: 0}\n", "chain.watch_history", "must be a positive number"},
		{nodesYAML + "chain: {max_watch_streams: 0}\n", "chain.max_watch_streams", "must be a positive number"},
		{nodesYAML + "chain: {snapshot_chunk: 100}\n", "chain.snapshot_chunk", "between 4096 (4 KiB) and 16777216"},
		{nodesYAML + "gateway: {max_connections: 0}\n", "gateway.max_connections", "must be a positive number"},
		{nodesYAML + "gateway: {max_connections: 10, max_connections_per_bidder: 11}\n",
			"gateway.max_connections_per_bidder", "must not exceed gateway.max_connections (10)"},
		{nodesYAML + "gateway: {max_watches: 0}\n", "gateway.max_watches", "must be a positive number"},
		{nodesYAML + "master: {forget_after: 400ms}\n", "master.forget_after", "must be longer than master.failure_timeout"},
	} {
		path, err := loadErr(t, tc.content)
		wantProblem(t, err, path, tc.key, tc.msg)
		if want := path + ": " + tc.key + ": "; !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
}

// The readable example of the issue, verbatim.
func TestBadDurationMessage(t *testing.T) {
	path, err := loadErr(t, nodesYAML+"chain:\n  tick: 10 parsecs\n")
	if want := path + `: chain.tick: invalid duration "10 parsecs"`; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q, want prefix %q", err, want)
	}
	var e *Error
	if !errors.As(err, &e) || e.Key != "chain.tick" || e.File != path {
		t.Errorf("errors.As gives %#v, want key chain.tick in %s", e, path)
	}
}

// Rule: a YAML syntax error names the file and the line.
func TestSyntaxError(t *testing.T) {
	for _, tc := range []struct{ content, msg string }{
		{"chain:\n  tick: 5ms\n tock: 3\n", "line 2"},
		{"chain:\n  tick: 5ms\n  tick: 6ms\n", "line 3"},
		{"nodes: [\n", "line 1"},
		{"- a\n- b\n", "top level must be a mapping"},
		{"log: {level: info}\n---\nlog: {level: debug}\n", "more than one YAML document"},
	} {
		path, err := loadErr(t, tc.content)
		if !strings.HasPrefix(err.Error(), path+": invalid YAML: ") || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("error %q: want %q naming the file and %q", err, path+": invalid YAML: ", tc.msg)
		}
		if !errors.Is(err, ErrSyntax) {
			t.Errorf("error %q is not ErrSyntax", err)
		}
	}
}

// Rule: a missing file is a clear error naming the path.
func TestMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(path)
	if err == nil || !strings.HasPrefix(err.Error(), path+": ") || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want an fs.ErrNotExist error naming %s", err, path)
	}
	if _, err := Load(""); err == nil {
		t.Error(`Load("") succeeded`)
	}
}

// Rule: GAVEL_* variables override scalar keys, whether or not the file sets
// them.
func TestEnvOverrides(t *testing.T) {
	t.Setenv("GAVEL_CHAIN_TICK", "20ms")
	t.Setenv("GAVEL_LOG_LEVEL", "debug")
	t.Setenv("GAVEL_CLUSTER_NAME", "prod")
	t.Setenv("GAVEL_CLIENT_TIMEOUT", "2s")
	t.Setenv("GAVEL_CHAIN_MAX_BATCH", "64")
	t.Setenv("GAVEL_GATEWAY_PPROF", "true")
	c, err := Load(writeConfig(t, nodesYAML+"chain: {tick: 5ms, hello_retry: 70ms}\nlog: {level: warn}\n"))
	if err != nil {
		t.Fatal(err)
	}
	got := []any{c.Chain.Tick, c.Log.Level, c.Cluster.Name, c.Client.Timeout, c.Chain.MaxBatch, c.Chain.HelloRetry, c.Gateway.Pprof}
	want := []any{20 * time.Millisecond, "debug", "prod", 2 * time.Second, 64, 70 * time.Millisecond, true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// The gateway and auth sections: a full example, and the secret from the
// environment as config.yaml recommends.
func TestGatewaySections(t *testing.T) {
	t.Setenv("GAVEL_AUTH_SECRET", "0123456789abcdef0123")
	c, err := Load(writeConfig(t, nodesYAML+`
gateways:
  - {id: g1, addr: "127.0.0.1:7401"}
  - {id: g2, addr: "127.0.0.1:7402"}
gateway: {allowed_origins: [" https://a.example.com ", "http://b.example.com:8080"], queue_size: 8, read_limit: 1024}
auth: {token_ttl: 1h}
`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := c.GatewayIDs(), []string{"g1", "g2"}; !slices.Equal(got, want) {
		t.Errorf("GatewayIDs() = %v, want %v", got, want)
	}
	if g, ok := c.GatewayByID("g2"); !ok || g.Addr != "127.0.0.1:7402" {
		t.Errorf("GatewayByID(g2) = %+v, %v", g, ok)
	}
	if _, ok := c.GatewayByID("g3"); ok {
		t.Error("GatewayByID(g3) found one")
	}
	if got, want := c.Gateway.AllowedOrigins, []string{"https://a.example.com", "http://b.example.com:8080"}; !slices.Equal(got, want) {
		t.Errorf("AllowedOrigins = %q, want %q", got, want)
	}
	got := []any{c.Gateway.QueueSize, c.Gateway.ReadLimit, c.Gateway.WriteTimeout, c.Auth.Secret, c.Auth.TokenTTL}
	want := []any{8, 1024, 10 * time.Second, "0123456789abcdef0123", time.Hour}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
}

// A list of strings is a YAML list or one comma-separated string (what an
// environment variable holds); empty entries are dropped, and no entry at
// all is nil, as in Default.
func TestStringList(t *testing.T) {
	for _, tc := range []struct {
		yaml, env string
		want      []string
	}{
		{"", "", nil},
		{"gateway: {allowed_origins: []}\n", "", nil},
		{"gateway: {allowed_origins: \"\"}\n", "", nil},
		{"gateway: {allowed_origins: \"https://a.example.com, ,http://b:1\"}\n", "", []string{"https://a.example.com", "http://b:1"}},
		{"gateway:\n  allowed_origins:\n    - https://a.example.com\n    - \"*\"\n", "", []string{"https://a.example.com", "*"}},
		{"gateway: {allowed_origins: [https://a.example.com]}\n", "http://c:2,http://d:3", []string{"http://c:2", "http://d:3"}},
		{"", " https://e.example.com ", []string{"https://e.example.com"}},
	} {
		if tc.env != "" {
			t.Setenv("GAVEL_GATEWAY_ALLOWED_ORIGINS", tc.env)
		}
		c, err := Load(writeConfig(t, nodesYAML+tc.yaml))
		if err != nil {
			t.Errorf("%q (env %q): %v", tc.yaml, tc.env, err)
			continue
		}
		if !reflect.DeepEqual(c.Gateway.AllowedOrigins, tc.want) {
			t.Errorf("%q (env %q): AllowedOrigins = %#v, want %#v", tc.yaml, tc.env, c.Gateway.AllowedOrigins, tc.want)
		}
		os.Unsetenv("GAVEL_GATEWAY_ALLOWED_ORIGINS")
	}
	_, err := loadErr(t, nodesYAML+"gateway: {allowed_origins: [[a]]}\n")
	if !strings.Contains(err.Error(), "gateway.allowed_origins: expected a list of strings") {
		t.Errorf("error %q: want a message about the list", err)
	}
	_, err = loadErr(t, nodesYAML+"gateway: {allowed_origins: {a: b}}\n")
	if !strings.Contains(err.Error(), "gateway.allowed_origins: expected a list of strings or a comma-separated string") {
		t.Errorf("error %q: want a message about the list", err)
	}
}

// Rule: a bad environment value names the variable.
func TestEnvBadValue(t *testing.T) {
	for _, tc := range []struct{ env, value, key, msg string }{
		{"GAVEL_CHAIN_TICK", "10 parsecs", "chain.tick", "invalid duration"},
		{"GAVEL_CHAIN_MAX_BATCH", "-3", "chain.max_batch", "must be a positive number"},
		{"GAVEL_LOG_FORMAT", "yaml", "log.format", "unknown log format"},
		{"GAVEL_AUTH_SECRET", "hunter2", "auth.secret", "too short"},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv(tc.env, tc.value)
			path, err := loadErr(t, nodesYAML)
			wantProblem(t, err, path, tc.key, tc.msg)
			if !strings.Contains(err.Error(), "$"+tc.env) {
				t.Errorf("error %q does not name %s", err, tc.env)
			}
		})
	}
}

// Rule: validation works on a Config built in code.
func TestValidateBuiltInCode(t *testing.T) {
	for _, tc := range []struct {
		key, msg string
		edit     func(c *Config)
	}{
		{"nodes", "no nodes", func(c *Config) { c.Nodes = nil }},
		{"nodes[2].addr", "want host:port", func(c *Config) { c.Nodes[2].Addr = "127.0.0.1" }},
		{"nodes[1].id", "duplicate node id", func(c *Config) { c.Nodes[1].ID = "n1" }},
		{"nodes[2].addr", "duplicate addr", func(c *Config) { c.Nodes[2].Addr = c.Nodes[0].Addr }},
		{"chain.tick", "positive", func(c *Config) { c.Chain.Tick = 0 }},
		{"chain.max_batch", "positive", func(c *Config) { c.Chain.MaxBatch = -1 }},
		{"client.timeout", "positive", func(c *Config) { c.Client.Timeout = 0 }},
		{"log.level", "unknown log level", func(c *Config) { c.Log.Level = "" }},
	} {
		c := Default()
		tc.edit(c)
		err := c.Validate()
		wantProblem(t, err, "", tc.key, tc.msg)
		if err != nil && !strings.HasPrefix(err.Error(), tc.key+": ") {
			t.Errorf("error %q: want %q first (no file)", err, tc.key+": ")
		}
	}
	c := Default()
	c.Nodes = nil
	if err := c.Validate(); !errors.Is(err, ErrNoNodes) {
		t.Errorf("Validate() = %v, want ErrNoNodes", err)
	}
	c.Log.Level = "DEBUG" // levels and formats are case-insensitive
	c.Log.Format = "JSON"
	c.Nodes = Default().Nodes
	if err := c.Validate(); err != nil {
		t.Error(err)
	}
}

// Every problem is reported at once, and errors.As finds the first.
func TestValidateReportsAll(t *testing.T) {
	c := Default()
	c.File = "x.yaml"
	c.Chain.Tick = 0
	c.Log.Format = "xml"
	err := c.Validate()
	if got := len(flatten(err)); got != 2 {
		t.Fatalf("Validate() = %v: %d problems, want 2", err, got)
	}
	var e *Error
	if !errors.As(err, &e) || e.Key != "chain.tick" || e.File != "x.yaml" {
		t.Errorf("errors.As gives %#v, want chain.tick in x.yaml", e)
	}
}

func TestErrorFormat(t *testing.T) {
	for _, tc := range []struct {
		err  Error
		want string
	}{
		{Error{File: "c.yaml", Key: "chain.tick", Msg: "bad"}, "c.yaml: chain.tick: bad"},
		{Error{File: "c.yaml", Msg: "bad"}, "c.yaml: bad"},
		{Error{Key: "chain.tick", Msg: "bad"}, "chain.tick: bad"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("%#v.Error() = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestNode(t *testing.T) {
	c := Default()
	if n, ok := c.Node("n2"); !ok || n.Addr != "127.0.0.1:7102" {
		t.Errorf("Node(n2) = %v, %v", n, ok)
	}
	if _, ok := c.Node("n9"); ok {
		t.Error("Node(n9) found")
	}
}

func TestNewLogger(t *testing.T) {
	c := Default()
	c.Log = LogConfig{Level: "debug", Format: "json"}
	var buf bytes.Buffer
	c.NewLogger(&buf, "node", "n1").Debug("hello", "epoch", 7)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("not one JSON record: %q: %v", buf.String(), err)
	}
	if rec["msg"] != "hello" || rec["node"] != "n1" || rec["level"] != "DEBUG" || rec["epoch"] != 7.0 {
		t.Errorf("record %v", rec)
	}

	buf.Reset()
	c.Log = LogConfig{Level: "warn", Format: "text"}
	log := c.NewLogger(&buf)
	log.Info("dropped")
	log.Warn("kept", "reason", "x")
	if got := buf.String(); strings.Contains(got, "dropped") || !strings.Contains(got, `level=WARN msg=kept reason=x`) {
		t.Errorf("text log at warn = %q", got)
	}
}

// FuzzLoad checks that Load never panics, that every failure is an *Error
// naming the file, and that whatever it accepts is valid.
func FuzzLoad(f *testing.F) {
	if data, err := os.ReadFile(filepath.Join("..", "config.yaml")); err == nil {
		f.Add(string(data))
	}
	for _, s := range []string{
		"", "~", "[]", "- a", "nodes:", "nodes: [~]", "nodes: {a: b}", "chain: {tick: {a: 1}}",
		nodesYAML + "chain: {tick: 10ms, max_batch: 99999999999999999999}",
		nodesYAML + "chain.tick: 5ms\nChain: {Tick: 1s}",
		"a: &x [*x]", "? [a]\n: b", "1: 2\ntrue: false", "nodes: [{id: [1], addr: {a: 1}}]",
		"log: !!binary aGVsbG8=", "chain: {tick: 2001-12-14}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, content string) {
		path := writeConfig(t, content)
		c, err := Load(path)
		if err != nil {
			for _, e := range flatten(err) {
				if e.File != path {
					t.Fatalf("problem %q does not name the file", e)
				}
			}
			if len(flatten(err)) == 0 {
				t.Fatalf("error %q holds no *Error", err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Load accepted a config that Validate rejects: %v", err)
		}
	})
}

// Rule: hosts are named once, referenced by name, reached over ssh only
// with a working directory; two processes never bind one port on one
// host, on the same IP or when either binds every IP; listen addresses are
// checked like addresses.
func TestHostsAndListenAddrs(t *testing.T) {
	withHosts := func(c *Config) {
		c.Hosts = []HostConfig{{Name: "h1", SSH: "10.0.0.1", Dir: "/opt/gavel"}, {Name: "h2", SSH: "10.0.0.2:2222", Dir: "gavel"}}
	}
	for _, tc := range []struct {
		key, msg string
		edit     func(c *Config)
	}{
		{"nodes[0].host", `unknown host "h9"`, func(c *Config) { c.Nodes[0].Host = "h9" }},
		{"hosts[1].name", `duplicate host name "h1"`, func(c *Config) { withHosts(c); c.Hosts[1].Name = "h1" }},
		{"hosts[0].name", "missing host name", func(c *Config) { withHosts(c); c.Hosts[0].Name = "" }},
		{"hosts[0].dir", "missing working directory", func(c *Config) { withHosts(c); c.Hosts[0].Dir = "" }},
		{"hosts[0].dir", "invalid directory", func(c *Config) { withHosts(c); c.Hosts[0].Dir = "/opt/my gavel;rm" }},
		{"hosts[1].ssh", "duplicate ssh address", func(c *Config) { withHosts(c); c.Hosts[1].SSH = "10.0.0.1" }},
		{"hosts[0].ssh", "invalid ssh address", func(c *Config) { withHosts(c); c.Hosts[0].SSH = "root@10.0.0.1" }},
		{"hosts[0].user", "invalid ssh user", func(c *Config) { withHosts(c); c.Hosts[0].User = "a b" }},
		{"nodes[1].listen_addr", "invalid addr", func(c *Config) { c.Nodes[1].ListenAddr = "0.0.0.0" }},
		{"nodes[1].listen_addr", "also bound by nodes[0].addr", func(c *Config) { c.Nodes[1].ListenAddr = "0.0.0.0:7101" }},
		{"masters[0].raft_listen_addr", "also bound by nodes[0].addr", func(c *Config) { c.Masters[0].RaftListenAddr = "127.0.0.1:7101" }},
		{"tls.cert", "must name", func(c *Config) { c.TLS.CA = "certs/ca.crt"; c.TLS.Cert = "" }},
	} {
		c := Default()
		tc.edit(c)
		wantProblem(t, c.Validate(), "", tc.key, tc.msg)
	}

	// The same port on two hosts, or on two IPs of one host, is fine.
	c := Default()
	withHosts(c)
	c.Nodes[0].Host, c.Nodes[0].Addr = "h1", "10.0.0.1:7101"
	c.Nodes[1].Host, c.Nodes[1].Addr = "h2", "10.0.0.2:7101"
	c.Nodes[2].Host, c.Nodes[2].Addr, c.Nodes[2].ListenAddr = "h2", "10.0.0.3:7101", "10.0.0.3:7101"
	if err := c.Validate(); err != nil {
		t.Errorf("Validate() = %v, want nil", err)
	}
	c.Nodes[2].ListenAddr = "0.0.0.0:7101" // every IP of h2, n2's port
	wantProblem(t, c.Validate(), "", "nodes[2].listen_addr", "port 7101 on host h2 is also bound by nodes[1].addr")
	if h, ok := c.HostByName("h2"); !ok || h.SSH != "10.0.0.2:2222" {
		t.Errorf("HostByName(h2) = %+v, %v", h, ok)
	}
	if got := Bind("10.0.0.3:7101", ""); got != "10.0.0.3:7101" {
		t.Errorf("Bind without listen = %s", got)
	}
	c.TLS = TLSConfig{CA: "c/ca.crt", Cert: "c/{id}.crt", Key: "c/{id}.key"}
	if cert, key := c.TLSFiles("n1"); !c.TLSEnabled() || cert != "c/n1.crt" || key != "c/n1.key" {
		t.Errorf("TLSFiles(n1) = %s %s (enabled %v)", cert, key, c.TLSEnabled())
	}
}

// Without TLS a cluster runs only when its file says insecure: true, which
// defaults to false (also from GAVEL_INSECURE); the error names the file
// and the key. With tls.ca, insecure changes nothing.
func TestCheckTransport(t *testing.T) {
	path := writeConfig(t, nodesYAML)
	c, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckTransport()
	var ce *Error
	if !errors.Is(err, ErrPlaintext) || !errors.As(err, &ce) || ce.Key != "insecure" ||
		!strings.HasPrefix(err.Error(), path+": insecure: tls.ca is not set") || !strings.Contains(err.Error(), "insecure: true") {
		t.Errorf("CheckTransport without TLS or insecure: %v", err)
	}
	for _, yaml := range []string{nodesYAML + "insecure: true\n", nodesYAML + "tls: {ca: ca.crt}\n"} {
		c, err := Load(writeConfig(t, yaml))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.CheckTransport(); err != nil {
			t.Errorf("CheckTransport of %q: %v", yaml, err)
		}
	}
	t.Setenv("GAVEL_INSECURE", "true")
	if c, err := Load(path); err != nil || c.CheckTransport() != nil {
		t.Errorf("GAVEL_INSECURE=true: %v", err)
	}
}
