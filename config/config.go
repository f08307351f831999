// Package config holds gavel's typed configuration: the Config struct that
// every process reads from config.yaml, its defaults, loading with viper
// (GAVEL_* environment variables override scalar keys) and validation.
//
// Every problem is reported as an *Error naming the file and the key, so an
// operator can fix config.yaml without reading code. To add a section, add a
// field with a mapstructure tag to Config (its scalar keys get defaults and
// environment overrides from Default automatically) and a validate method
// that Validate calls.
package config

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"time"
)

// Config is everything one gavel process reads from config.yaml.
type Config struct {
	// File is the path the configuration was loaded from ("" for Default or
	// a Config built in code); it prefixes error messages. Not a yaml key.
	File string `mapstructure:"-"`

	Cluster ClusterConfig `mapstructure:"cluster"`
	Nodes   []NodeConfig  `mapstructure:"nodes"`
	Chain   ChainConfig   `mapstructure:"chain"`
	Client  ClientConfig  `mapstructure:"client"`
	Log     LogConfig     `mapstructure:"log"`
}

// ClusterConfig is the cluster: section.
type ClusterConfig struct {
	// Name identifies the cluster in logs and metrics (default "gavel").
	Name string `mapstructure:"name"`
}

// NodeConfig is one element of the nodes: list, a chain replica.
type NodeConfig struct {
	// ID names the node (n1, n2, ...): letters, digits, '-', '_' and '.'.
	ID string `mapstructure:"id"`
	// Addr is the gRPC host:port the node listens on and is reached at.
	Addr string `mapstructure:"addr"`
}

// ChainConfig is the chain: section, the replication protocol's knobs.
type ChainConfig struct {
	// Tick is the period of the protocol core's clock (default 10ms).
	Tick time.Duration `mapstructure:"tick"`
	// HelloRetry is how long a node waits before repeating an unanswered
	// link handshake to its successor (default 50ms).
	HelloRetry time.Duration `mapstructure:"hello_retry"`
	// MaxBatch is the most updates sent in one replication message
	// (default 1024).
	MaxBatch int `mapstructure:"max_batch"`
	// DedupWindow is how many request ids are remembered per bidder for
	// exactly-once retries (default 256).
	DedupWindow int `mapstructure:"dedup_window"`
}

// ClientConfig is the client: section, used by the command-line client.
type ClientConfig struct {
	// Timeout is how long a CLI call keeps retrying (default 5s).
	Timeout time.Duration `mapstructure:"timeout"`
}

// LogConfig is the log: section.
type LogConfig struct {
	// Level is the minimum level logged: debug, info, warn or error
	// (default info; case-insensitive).
	Level string `mapstructure:"level"`
	// Format is text (logfmt-like key=value) or json (default text).
	Format string `mapstructure:"format"`
}

// Default returns the built-in configuration: the default of every key and a
// local cluster of three nodes, n1..n3 on 127.0.0.1:7101..7103. Load applies
// the same scalar defaults but takes the nodes only from the file.
func Default() *Config {
	return &Config{
		Cluster: ClusterConfig{Name: "gavel"},
		Nodes: []NodeConfig{
			{ID: "n1", Addr: "127.0.0.1:7101"},
			{ID: "n2", Addr: "127.0.0.1:7102"},
			{ID: "n3", Addr: "127.0.0.1:7103"},
		},
		Chain: ChainConfig{
			Tick:        10 * time.Millisecond,
			HelloRetry:  50 * time.Millisecond,
			MaxBatch:    1024,
			DedupWindow: 256,
		},
		Client: ClientConfig{Timeout: 5 * time.Second},
		Log:    LogConfig{Level: "info", Format: "text"},
	}
}

// Node returns the node with the given id, and whether there is one.
func (c *Config) Node(id string) (NodeConfig, bool) {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return NodeConfig{}, false
}

// NodeIDs returns the ids of all nodes in file order (the initial chain
// order, head first).
func (c *Config) NodeIDs() []string {
	ids := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		ids[i] = n.ID
	}
	return ids
}

// NewLogger returns a logger writing to w with a text or json handler (per
// log.format) at the level of log.level, with attrs (key-value pairs or
// slog.Attr, as for slog.Logger.With) added to every record. Invalid settings
// fall back to text at info; Load has already rejected them.
func (c *Config) NewLogger(w io.Writer, attrs ...any) *slog.Logger {
	level, ok := logLevels[strings.ToLower(c.Log.Level)]
	if !ok {
		level = slog.LevelInfo
	}
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if strings.EqualFold(c.Log.Format, "json") {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(h).With(attrs...)
}

// logLevels maps the accepted log.level values to slog levels.
var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// Sentinel errors, wrapped in an *Error that names the file and key; test
// for them with errors.Is. A file that cannot be read wraps the os error, so
// errors.Is(err, fs.ErrNotExist) tells a missing file.
var (
	// ErrSyntax is returned by Load when the file is not valid YAML.
	ErrSyntax = errors.New("invalid YAML")
	// ErrUnknownKey is returned when the file has a key gavel does not
	// know, usually a typo.
	ErrUnknownKey = errors.New("unknown key")
	// ErrNoNodes is returned when the configuration lists no chain nodes.
	ErrNoNodes = errors.New("no nodes configured")
)

// Error is one problem with a configuration. Load and Validate return an
// *Error, or several joined with errors.Join when there are several
// problems; use errors.As to get the first one's Key.
type Error struct {
	File string // config file path; "" for a Config built in code
	Key  string // key path such as "chain.tick" or "nodes[2].addr"; may be ""
	Msg  string // what is wrong, and where it came from if not the file
	err  error  // sentinel or underlying cause, for errors.Is; may be nil
}

// Error formats the problem as "FILE: KEY: MSG", leaving out empty parts.
func (e *Error) Error() string {
	var parts []string
	for _, s := range []string{e.File, e.Key, e.Msg} {
		if s != "" {
			parts = append(parts, s)
		}
	}
	return strings.Join(parts, ": ")
}

// Unwrap returns the sentinel or underlying error, if any.
func (e *Error) Unwrap() error { return e.err }
