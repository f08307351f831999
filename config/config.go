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
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"time"
)

// Config is everything one gavel process reads from config.yaml.
type Config struct {
	// File is the path the configuration was loaded from ("" for Default or
	// a Config built in code); it prefixes error messages. Not a yaml key.
	File string `mapstructure:"-"`

	Cluster  ClusterConfig   `mapstructure:"cluster"`
	Hosts    []HostConfig    `mapstructure:"hosts"`
	Masters  []MasterConfig  `mapstructure:"masters"`
	Master   MasterSection   `mapstructure:"master"`
	Nodes    []NodeConfig    `mapstructure:"nodes"`
	Chain    ChainConfig     `mapstructure:"chain"`
	Client   ClientConfig    `mapstructure:"client"`
	Gateways []GatewayConfig `mapstructure:"gateways"`
	Gateway  GatewaySection  `mapstructure:"gateway"`
	Auth     AuthConfig      `mapstructure:"auth"`
	TLS      TLSConfig       `mapstructure:"tls"`
	Log      LogConfig       `mapstructure:"log"`

	// Insecure lets the cluster run without TLS (tls.ca empty): every
	// link in plaintext, and nobody's identity checked but with tokens, so
	// anyone who reaches a port may act as any node, master or gateway.
	// Without TLS, masters, nodes and gateways refuse to start unless it
	// is set (CheckTransport). With tls.ca set it changes nothing.
	Insecure bool `mapstructure:"insecure"`
}

// HostConfig is one element of the hosts: list, a machine that
// scripts/launch (gavel launch) starts processes on. A process names its
// machine with host:; a process without one runs on the launching machine.
type HostConfig struct {
	// Name is how processes refer to the host (host: NAME).
	Name string `mapstructure:"name"`
	// SSH is the host or host:port to reach the machine with ssh; empty
	// runs the host's processes on the launching machine, without ssh.
	SSH string `mapstructure:"ssh"`
	// User is the ssh login (default: ssh's own, the launching user).
	User string `mapstructure:"user"`
	// Key is the ssh private key on the launching machine (default: ssh's
	// own choice).
	Key string `mapstructure:"key"`
	// KnownHosts is the known_hosts file that holds this host's key on the
	// launching machine (default: ssh's own, ~/.ssh/known_hosts).
	KnownHosts string `mapstructure:"known_hosts"`
	// Dir is the working directory on the machine: the launcher copies the
	// binary, the configuration and the certificates there, and the
	// processes keep their logs and data under it. Relative paths of the
	// configuration (data dirs, tls files) are relative to it. Required for
	// a host reached over ssh, where a relative dir (or one starting ~/) is
	// relative to the login's home; a local host defaults to the launching
	// directory.
	Dir string `mapstructure:"dir"`
}

// TLSConfig is the tls: section. With a CA set, every gRPC link (node to
// node, node to master, master to master, gateway and tools to both) runs
// over mutual TLS with certificates of that CA, and gateways serve https
// and wss. `gavel certs init` makes a development CA and the certificates.
type TLSConfig struct {
	// CA is the PEM file of the certificate authority that signs every
	// process's certificate; empty (the default) turns TLS off.
	CA string `mapstructure:"ca"`
	// Cert is the PEM certificate of a process; {id} stands for the
	// process id (n1, m2, g1; "client" for the command-line tools).
	// Default certs/{id}.crt.
	Cert string `mapstructure:"cert"`
	// Key is the PEM private key of a process, like Cert (default
	// certs/{id}.key).
	Key string `mapstructure:"key"`
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
	// HTTPAddr is the host:port of /metrics, /healthz and /readyz; empty
	// serves none.
	HTTPAddr string `mapstructure:"http_addr"`
	// Host names the hosts: entry the node runs on; empty: the launching
	// machine.
	Host string `mapstructure:"host"`
	// ListenAddr is the host:port the node binds when it differs from the
	// address it is reached at, addr (for example 0.0.0.0:7101 behind NAT);
	// empty binds addr.
	ListenAddr string `mapstructure:"listen_addr"`
	// DataDir holds the node's write-ahead log and snapshots (default
	// chain.data_dir/ID).
	DataDir string `mapstructure:"data_dir"`
}

// MasterConfig is one element of the masters: list, a replica of the
// master's Raft group. With no masters the chain runs on the static
// configuration of the nodes: list (epoch 1, file order) and the admin
// call (gavel reconfigure) changes it.
type MasterConfig struct {
	// ID names the master (m1, m2, ...); it is also its Raft server id.
	ID string `mapstructure:"id"`
	// Addr is the gRPC host:port that nodes, gateways and tools reach.
	Addr string `mapstructure:"addr"`
	// RaftAddr is the host:port of the Raft transport between masters.
	RaftAddr string `mapstructure:"raft_addr"`
	// DataDir holds the Raft log, stable store and snapshots (default
	// master.data_dir/ID).
	DataDir string `mapstructure:"data_dir"`
	// HTTPAddr is the host:port of /metrics, /healthz and /readyz; empty
	// serves none.
	HTTPAddr string `mapstructure:"http_addr"`
	// Host names the hosts: entry the master runs on; empty: the launching
	// machine.
	Host string `mapstructure:"host"`
	// ListenAddr is the gRPC host:port the master binds when it differs
	// from addr; empty binds addr.
	ListenAddr string `mapstructure:"listen_addr"`
	// RaftListenAddr is the Raft host:port the master binds when it
	// differs from raft_addr; empty binds raft_addr.
	RaftListenAddr string `mapstructure:"raft_listen_addr"`
}

// MasterSection is the master: section: failure detection, leases and the
// Raft group's timing.
type MasterSection struct {
	// DataDir is where each master keeps its Raft data, in a directory
	// named after its id, unless the master sets its own (default
	// ".run/data").
	DataDir string `mapstructure:"data_dir"`
	// Heartbeat is how often a node reports to the master (default 50ms).
	Heartbeat time.Duration `mapstructure:"heartbeat"`
	// FailureTimeout is how long a node may go without a heartbeat before
	// the leader removes it from the chain (default 500ms).
	FailureTimeout time.Duration `mapstructure:"failure_timeout"`
	// Lease is how long a heartbeat lets a tail serve reads and a head
	// take bids (default 200ms). It must stay below failure_timeout minus
	// raft.leader_lease_timeout, so that every lease has run out before a
	// node is removed, even across a change of master leader.
	Lease time.Duration `mapstructure:"lease"`
	// ForgetAfter is how long the leader keeps what it heard from a node
	// that is not in the chain (removed, replaced, or never admitted) and
	// has stopped heartbeating (default 1m; more than failure_timeout).
	ForgetAfter time.Duration `mapstructure:"forget_after"`
	// Raft tunes the master group's Raft (hashicorp/raft).
	Raft RaftConfig `mapstructure:"raft"`
}

// RaftConfig is the master.raft: section.
type RaftConfig struct {
	// HeartbeatTimeout: a follower without contact from the leader for this
	// long starts an election (default 500ms).
	HeartbeatTimeout time.Duration `mapstructure:"heartbeat_timeout"`
	// ElectionTimeout: a candidate without a quorum for this long starts a
	// new election (default 500ms).
	ElectionTimeout time.Duration `mapstructure:"election_timeout"`
	// LeaderLeaseTimeout: a leader without contact with a quorum for this
	// long steps down (default 250ms).
	LeaderLeaseTimeout time.Duration `mapstructure:"leader_lease_timeout"`
	// CommitTimeout is how often an idle leader sends its followers an
	// AppendEntries (default 5ms), which is how a follower learns that an
	// entry committed: a follower's watchers (nodes, gateways) hear of a
	// new configuration at most twice this after the leader. Each follower
	// takes 100–200 such messages a second at 5ms.
	CommitTimeout time.Duration `mapstructure:"commit_timeout"`
	// SnapshotThreshold is how many log entries between snapshots
	// (default 1024).
	SnapshotThreshold int `mapstructure:"snapshot_threshold"`
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
	// DataDir is where each node keeps its data, in a directory named
	// after its id, unless the node sets its own (default ".run/data").
	DataDir string `mapstructure:"data_dir"`
	// Sync is "always" (default): every update is fsync'd at every chain
	// member before a client hears of it; or "none": writes reach the
	// operating system only, at memory speed, and a whole-cluster power
	// loss loses what the disks had not written yet.
	Sync string `mapstructure:"sync"`
	// SnapshotEvery is how many updates pass between two snapshots of a
	// node's state; the log is compacted after each (default 50000).
	SnapshotEvery int `mapstructure:"snapshot_every"`
	// SegmentSize is the size in bytes of one write-ahead log segment
	// file, preallocated when the segment is created (default 16 MiB).
	// Smaller segments free disk space sooner after a compaction; each
	// new segment costs a file creation and a directory fsync.
	SegmentSize int `mapstructure:"segment_size"`
	// SnapshotChunk is the most bytes of state or archived results in one
	// chunk of a snapshot sent to a joining node (default 2 MiB).
	SnapshotChunk int `mapstructure:"snapshot_chunk"`

	// The bounds on each node's memory (docs/operations.md, "Bounds").

	// Retention is how long a closed auction stays in the nodes' memory
	// after its close (default 10m). Then the head retires it: its final
	// result moves to each node's archive (in its data dir) and is read
	// from there; a bid on it is refused as closed.
	Retention time.Duration `mapstructure:"retention"`
	// MaxRequestIDs bounds the request ids the chain remembers, over all
	// bidders, for exactly-once retries by request id (default 250000,
	// about 250 bytes each); past it the oldest are forgotten. Retries
	// within a client session are deduplicated by the session.
	MaxRequestIDs int `mapstructure:"max_request_ids"`
	// MaxBidders bounds the distinct bidders one auction registers
	// (default 10000); a new bidder's bid past it is refused with
	// TOO_MANY_BIDDERS.
	MaxBidders int `mapstructure:"max_bidders"`
	// WatchHistory is how many recent changes of each open auction a node
	// keeps, so that a watch resumed after a sequence number gets each
	// one it missed (default 128); beyond it, the auction's state.
	WatchHistory int `mapstructure:"watch_history"`
	// MaxWatchStreams bounds the watch streams one node serves at once,
	// one per auction and gateway (default 10000); a watch past it is
	// refused with RESOURCE_EXHAUSTED.
	MaxWatchStreams int `mapstructure:"max_watch_streams"`
}

// SyncAlways reports whether chain.sync is "always".
func (s ChainConfig) SyncAlways() bool { return strings.ToLower(s.Sync) != "none" }

// ClientConfig is the client: section, used by the command-line client.
type ClientConfig struct {
	// Timeout is how long a CLI call keeps retrying (default 5s).
	Timeout time.Duration `mapstructure:"timeout"`
}

// GatewayConfig is one element of the gateways: list, a WebSocket and
// HTTP front for bidders (gavel gateway).
type GatewayConfig struct {
	// ID names the gateway (g1, g2, ...), used with `gavel gateway --id`.
	ID string `mapstructure:"id"`
	// Addr is the HTTP host:port the gateway listens on: the page on /,
	// the WebSocket protocol on /ws, health on /healthz.
	Addr string `mapstructure:"addr"`
	// Host names the hosts: entry the gateway runs on; empty: the
	// launching machine.
	Host string `mapstructure:"host"`
	// ListenAddr is the host:port the gateway binds when it differs from
	// addr; empty binds addr.
	ListenAddr string `mapstructure:"listen_addr"`
}

// GatewaySection is the gateway: section, shared by every gateway: its
// WebSocket connections' limits and timing.
type GatewaySection struct {
	// AllowedOrigins are the browser origins (such as
	// "https://auctions.example.com") allowed to open a WebSocket besides
	// the gateway's own host; "*" allows any. Requests without an Origin
	// header (wscat, programs) are allowed in open mode, and with
	// auth.secret only with AllowEmptyOrigin. A YAML list, or one
	// comma-separated string (as GAVEL_GATEWAY_ALLOWED_ORIGINS holds it).
	// Default none: the gateway's own host only.
	AllowedOrigins []string `mapstructure:"allowed_origins"`
	// AllowEmptyOrigin lets a request without an Origin header connect to
	// a gateway with auth.secret (default false: such a gateway takes
	// only requests that say which page they come from; wscat sends one
	// with -o http://HOST:PORT).
	AllowEmptyOrigin bool `mapstructure:"allow_empty_origin"`
	// QueueSize is how many messages a connection may have waiting to be
	// sent (default 256). Past it the connection is behind: a new highest
	// push replaces the waiting one of its auction (a slow watcher gets the
	// newest, never a backlog), and replies wait, so that the gateway stops
	// reading the commands of a client that does not read its answers.
	QueueSize int `mapstructure:"queue_size"`
	// WriteTimeout bounds the write of one frame to a client; a client that
	// takes no data for this long is disconnected (default 10s).
	WriteTimeout time.Duration `mapstructure:"write_timeout"`
	// PingInterval is how often the gateway pings each client (default 10s).
	PingInterval time.Duration `mapstructure:"ping_interval"`
	// PongWait is how long a connection may stay silent (no frame, no pong)
	// before it is closed; longer than ping_interval (default 30s).
	PongWait time.Duration `mapstructure:"pong_wait"`
	// ReadLimit is the largest frame, in bytes, a client may send
	// (default 65536); a larger one closes the connection.
	ReadLimit int `mapstructure:"read_limit"`
	// SendBuffer is the kernel's send buffer, in bytes, for each client
	// connection (default 65536): what a client that stops reading can
	// hold up in the kernel before the gateway's writes to it stall and
	// write_timeout cuts it off. 0 leaves the kernel's autotuning, which
	// may grow each buffer to several MB.
	SendBuffer int `mapstructure:"send_buffer"`
	// MetricsInterval is the period of the metrics push (default 1s).
	MetricsInterval time.Duration `mapstructure:"metrics_interval"`
	// MaxConnections bounds the WebSocket connections one gateway holds
	// (default 20000, about 11 KiB each when idle; each needs a file
	// descriptor); past it a connection is refused with 503.
	MaxConnections int `mapstructure:"max_connections"`
	// MaxConnectionsPerBidder bounds one bidder's connections to one
	// gateway (default 16); past it a connection (or a login) is refused.
	MaxConnectionsPerBidder int `mapstructure:"max_connections_per_bidder"`
	// MaxWatches bounds the auctions one connection watches at once
	// (default 1024); past it a watch is refused with an error.
	MaxWatches int `mapstructure:"max_watches"`
	// Pprof serves Go's profiles (net/http/pprof) on /debug/pprof/ at the
	// gateway's address (default false). They show the process's command
	// line and memory: enable it only where that address is not public.
	Pprof bool `mapstructure:"pprof"`
}

// AuthConfig is the auth: section: bearer tokens for the gateways.
type AuthConfig struct {
	// Secret is the HMAC-SHA256 key that signs bidder tokens (gavel token).
	// Empty (the default) runs the gateways in open mode: a bidder names
	// itself with ?bidder=NAME or login. Set it, at least 16 characters,
	// preferably from the environment (GAVEL_AUTH_SECRET).
	Secret string `mapstructure:"secret"`
	// TokenTTL is how long a token from gavel token is valid unless --ttl
	// says otherwise (default 24h).
	TokenTTL time.Duration `mapstructure:"token_ttl"`
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
// local cluster of three masters, m1..m3 on 127.0.0.1:7201..7203 (Raft on
// 7301..7303), three nodes, n1..n3 on 127.0.0.1:7101..7103, and one gateway,
// g1 on 127.0.0.1:7401. Load applies the same scalar defaults but takes
// masters, nodes and gateways only from the file.
func Default() *Config {
	return &Config{
		Cluster: ClusterConfig{Name: "gavel"},
		Hosts:   []HostConfig{},
		Nodes: []NodeConfig{
			{ID: "n1", Addr: "127.0.0.1:7101", HTTPAddr: "127.0.0.1:7111"},
			{ID: "n2", Addr: "127.0.0.1:7102", HTTPAddr: "127.0.0.1:7112"},
			{ID: "n3", Addr: "127.0.0.1:7103", HTTPAddr: "127.0.0.1:7113"},
		},
		Masters: []MasterConfig{
			{ID: "m1", Addr: "127.0.0.1:7201", RaftAddr: "127.0.0.1:7301", DataDir: ".run/data/m1", HTTPAddr: "127.0.0.1:7211"},
			{ID: "m2", Addr: "127.0.0.1:7202", RaftAddr: "127.0.0.1:7302", DataDir: ".run/data/m2", HTTPAddr: "127.0.0.1:7212"},
			{ID: "m3", Addr: "127.0.0.1:7203", RaftAddr: "127.0.0.1:7303", DataDir: ".run/data/m3", HTTPAddr: "127.0.0.1:7213"},
		},
		Master: MasterSection{
			DataDir:        ".run/data",
			Heartbeat:      50 * time.Millisecond,
			FailureTimeout: 500 * time.Millisecond,
			Lease:          200 * time.Millisecond,
			ForgetAfter:    time.Minute,
			Raft: RaftConfig{
				HeartbeatTimeout:   500 * time.Millisecond,
				ElectionTimeout:    500 * time.Millisecond,
				LeaderLeaseTimeout: 250 * time.Millisecond,
				CommitTimeout:      5 * time.Millisecond,
				SnapshotThreshold:  1024,
			},
		},
		Chain: ChainConfig{
			Tick:          10 * time.Millisecond,
			HelloRetry:    50 * time.Millisecond,
			MaxBatch:      1024,
			DataDir:       ".run/data",
			Sync:          "always",
			SnapshotEvery: 50_000,
			SegmentSize:   16 << 20,
			SnapshotChunk: 2 << 20,

			Retention:       10 * time.Minute,
			MaxRequestIDs:   250_000,
			MaxBidders:      10_000,
			WatchHistory:    128,
			MaxWatchStreams: 10_000,
		},
		Client:   ClientConfig{Timeout: 5 * time.Second},
		Gateways: []GatewayConfig{{ID: "g1", Addr: "127.0.0.1:7401"}},
		Gateway: GatewaySection{
			QueueSize:       256,
			WriteTimeout:    10 * time.Second,
			PingInterval:    10 * time.Second,
			PongWait:        30 * time.Second,
			ReadLimit:       64 << 10,
			SendBuffer:      64 << 10,
			MetricsInterval: time.Second,

			MaxConnections:          20_000,
			MaxConnectionsPerBidder: 16,
			MaxWatches:              1024,
		},
		Auth: AuthConfig{TokenTTL: 24 * time.Hour},
		TLS:  TLSConfig{Cert: "certs/{id}.crt", Key: "certs/{id}.key"},
		Log:  LogConfig{Level: "info", Format: "text"},
	}
}

// Bind returns the address a process listens on: listen when set, else
// the address it is reached at.
func Bind(addr, listen string) string {
	if listen != "" {
		return listen
	}
	return addr
}

// Process is one master, node or gateway of a configuration, with the
// addresses it binds: what validation checks for clashes and what the
// launcher probes before it starts the process.
type Process struct {
	Kind string // master, node or gateway
	ID   string
	Key  string // its element of the file: "masters[0]", "nodes[2]"
	Host string // its hosts: entry; "" is the launching machine
	Addr string // the address it is reached at
	// Binds are the addresses it listens on, each with the key that sets
	// it (listen_addr when given, else the address itself).
	Binds []BindAddr
}

// BindAddr is one address a process listens on and the key that sets it.
type BindAddr struct{ Addr, Key string }

// Processes lists the processes of c in start order: masters, nodes,
// gateways.
func (c *Config) Processes() []Process {
	var ps []Process
	bind := func(key, field, addr, listen string) BindAddr {
		if listen != "" {
			return BindAddr{Addr: listen, Key: key + "." + strings.TrimSuffix(field, "addr") + "listen_addr"}
		}
		return BindAddr{Addr: addr, Key: key + "." + field}
	}
	for i, m := range c.Masters {
		key := fmt.Sprintf("masters[%d]", i)
		p := Process{Kind: "master", ID: m.ID, Key: key, Host: m.Host, Addr: m.Addr,
			Binds: []BindAddr{bind(key, "addr", m.Addr, m.ListenAddr), bind(key, "raft_addr", m.RaftAddr, m.RaftListenAddr)}}
		if m.HTTPAddr != "" {
			p.Binds = append(p.Binds, bind(key, "http_addr", m.HTTPAddr, ""))
		}
		ps = append(ps, p)
	}
	for i, n := range c.Nodes {
		key := fmt.Sprintf("nodes[%d]", i)
		p := Process{Kind: "node", ID: n.ID, Key: key, Host: n.Host, Addr: n.Addr,
			Binds: []BindAddr{bind(key, "addr", n.Addr, n.ListenAddr)}}
		if n.HTTPAddr != "" {
			p.Binds = append(p.Binds, bind(key, "http_addr", n.HTTPAddr, ""))
		}
		ps = append(ps, p)
	}
	for i, g := range c.Gateways {
		key := fmt.Sprintf("gateways[%d]", i)
		ps = append(ps, Process{Kind: "gateway", ID: g.ID, Key: key, Host: g.Host, Addr: g.Addr,
			Binds: []BindAddr{bind(key, "addr", g.Addr, g.ListenAddr)}})
	}
	return ps
}

// HostByName returns the hosts: entry called name, and whether there is one.
func (c *Config) HostByName(name string) (HostConfig, bool) {
	for _, h := range c.Hosts {
		if h.Name == name {
			return h, true
		}
	}
	return HostConfig{}, false
}

// TLSEnabled reports whether the tls: section turns mutual TLS on.
func (c *Config) TLSEnabled() bool { return c.TLS.CA != "" }

// TLSFiles returns the certificate and key files of process id (such as
// "n1", or "client" for the command-line tools).
func (c *Config) TLSFiles(id string) (cert, key string) {
	return strings.ReplaceAll(c.TLS.Cert, "{id}", id), strings.ReplaceAll(c.TLS.Key, "{id}", id)
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

// MasterByID returns the master with the given id, and whether there is one.
func (c *Config) MasterByID(id string) (MasterConfig, bool) {
	for _, m := range c.Masters {
		if m.ID == id {
			return m, true
		}
	}
	return MasterConfig{}, false
}

// MasterIDs returns the ids of all masters in file order.
func (c *Config) MasterIDs() []string {
	ids := make([]string, len(c.Masters))
	for i, m := range c.Masters {
		ids[i] = m.ID
	}
	return ids
}

// MasterAddrs returns the gRPC addresses of all masters in file order.
func (c *Config) MasterAddrs() []string {
	addrs := make([]string, len(c.Masters))
	for i, m := range c.Masters {
		addrs[i] = m.Addr
	}
	return addrs
}

// NodeDataDir returns the data directory of node n.
func (c *Config) NodeDataDir(n NodeConfig) string {
	if n.DataDir != "" {
		return n.DataDir
	}
	return filepath.Join(c.Chain.DataDir, n.ID)
}

// MasterDataDir returns the Raft data directory of master m.
func (c *Config) MasterDataDir(m MasterConfig) string {
	if m.DataDir != "" {
		return m.DataDir
	}
	return filepath.Join(c.Master.DataDir, m.ID)
}

// GatewayByID returns the gateway with the given id, and whether there is one.
func (c *Config) GatewayByID(id string) (GatewayConfig, bool) {
	for _, g := range c.Gateways {
		if g.ID == id {
			return g, true
		}
	}
	return GatewayConfig{}, false
}

// GatewayIDs returns the ids of all gateways in file order.
func (c *Config) GatewayIDs() []string {
	ids := make([]string, len(c.Gateways))
	for i, g := range c.Gateways {
		ids[i] = g.ID
	}
	return ids
}

// NodeAddrs returns the gRPC addresses of all nodes in file order.
func (c *Config) NodeAddrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr
	}
	return addrs
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
	// ErrPlaintext is returned by CheckTransport for a configuration
	// without TLS (tls.ca) that does not say insecure: true.
	ErrPlaintext = errors.New("plaintext without insecure: true")
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
