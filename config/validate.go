package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gavel-auction/gavel/pki"
)

// Validate checks every value of c and returns nil, an *Error naming the
// key of the one bad value, or several *Errors joined with errors.Join. It
// works on a Config built in code as well as on a loaded one.
func (c *Config) Validate() error {
	p := &problems{file: c.File}
	c.validate(p)
	return p.err()
}

// validate runs the check of each section. A new section adds its line here.
func (c *Config) validate(p *problems) {
	c.Cluster.validate(p)
	c.validateProcesses(p)
	c.Master.validate(p)
	c.Chain.validate(p)
	c.Client.validate(p)
	c.Gateway.validate(p)
	c.Auth.validate(p)
	c.TLS.validate(p)
	c.Log.validate(p)
}

func (s ClusterConfig) validate(p *problems) {
	if strings.TrimSpace(s.Name) == "" {
		p.add("cluster.name", nil, "must not be empty")
	}
}

// validateProcesses checks the id and every address of each node,
// master and gateway: well-formed, and none shared by two processes, of
// any kind (their ids name the processes of scripts/launch; their
// addresses are ports on the same hosts). At least one node is needed;
// masters (a static chain without) and gateways are optional.
func (c *Config) validateProcesses(p *problems) {
	if len(c.Nodes) == 0 {
		p.add("nodes", ErrNoNodes, "%v: list at least one {id, addr}", ErrNoNodes)
	}
	hosts := c.validateHosts(p)
	cl := &claims{p: p, ids: map[string]claim{}, addrs: map[string]string{}, ports: map[string][]bound{}}
	for i, n := range c.Nodes {
		key := fmt.Sprintf("nodes[%d]", i)
		cl.id(key, "node", n.ID)
		cl.host(key, n.Host, hosts)
		cl.addr(key+".addr", n.Addr, false)
		cl.addr(key+".http_addr", n.HTTPAddr, true)
	}
	for i, m := range c.Masters {
		key := fmt.Sprintf("masters[%d]", i)
		cl.id(key, "master", m.ID)
		cl.host(key, m.Host, hosts)
		cl.addr(key+".addr", m.Addr, false)
		cl.addr(key+".raft_addr", m.RaftAddr, false)
		cl.addr(key+".http_addr", m.HTTPAddr, true)
	}
	for i, g := range c.Gateways {
		key := fmt.Sprintf("gateways[%d]", i)
		cl.id(key, "gateway", g.ID)
		cl.host(key, g.Host, hosts)
		cl.addr(key+".addr", g.Addr, false)
	}
	// Nodes' binds are claimed first, then masters', then gateways', so
	// that a clash is reported at the later process in that order.
	procs := c.Processes()
	for _, kind := range []string{"node", "master", "gateway"} {
		for _, proc := range procs {
			if proc.Kind != kind {
				continue
			}
			for _, b := range proc.Binds {
				cl.listen(proc.Host, b)
			}
		}
	}
}

// validateHosts checks the hosts: list and returns the names it defines.
func (c *Config) validateHosts(p *problems) map[string]bool {
	names := map[string]bool{}
	ssh := map[string]string{}
	for i, h := range c.Hosts {
		key := fmt.Sprintf("hosts[%d]", i)
		switch {
		case h.Name == "":
			p.add(key+".name", nil, "missing host name")
		case !pki.ValidID(h.Name):
			p.add(key+".name", nil, "invalid host name %q: use letters, digits, '-', '_' and '.'", h.Name)
		case names[h.Name]:
			p.add(key+".name", nil, "duplicate host name %q", h.Name)
		default:
			names[h.Name] = true
		}
		if h.SSH == "" {
			continue
		}
		if strings.ContainsAny(h.SSH, " \t\r\n/@") {
			p.add(key+".ssh", nil, "invalid ssh address %q: want host or host:port (the login goes in user)", h.SSH)
		} else if other, dup := ssh[strings.ToLower(h.SSH)]; dup {
			p.add(key+".ssh", nil, "duplicate ssh address %q (also %s): one hosts entry per machine", h.SSH, other)
		} else {
			ssh[strings.ToLower(h.SSH)] = key + ".ssh"
		}
		if strings.TrimSpace(h.Dir) == "" {
			p.add(key+".dir", nil, "missing working directory for host %q reached over ssh, e.g. /opt/gavel", h.Name)
		} else if !remoteDir.MatchString(h.Dir) {
			p.add(key+".dir", nil, "invalid directory %q: use letters, digits and / . _ - + ~ only (scp hands it to the remote shell)", h.Dir)
		}
		if strings.ContainsAny(h.User, " \t\r\n@:/") {
			p.add(key+".user", nil, "invalid ssh user %q", h.User)
		}
	}
	return names
}

// claims records which key holds each process id, each address and each
// listening port of a configuration, so that a second use is reported
// with the first.
type claims struct {
	p     *problems
	ids   map[string]claim   // id -> its holder
	addrs map[string]string  // lower-cased addr -> key holding it
	ports map[string][]bound // "host/port" -> the binds of that port on that host
}

// bound is one listening socket of a process: the IP (or host name) it
// binds, and the key that says so.
type bound struct{ ip, key string }

// host checks that the process at key names a defined host, if any.
func (cl *claims) host(key, host string, hosts map[string]bool) {
	if host != "" && !hosts[host] {
		cl.p.add(key+".host", nil, "unknown host %q: add it to hosts: (name, ssh, user, key, dir)", host)
	}
}

// listen checks an address a process binds on its host and claims its
// port. Two processes on one host may not bind the same port on the same
// IP, nor the same port when either binds every IP (0.0.0.0, [::]).
func (cl *claims) listen(host string, b BindAddr) {
	if strings.HasSuffix(b.Key, "listen_addr") {
		if err := CheckAddr(b.Addr); err != nil {
			cl.p.add(b.Key, nil, "%v", err)
			return
		}
	}
	ip, port, err := net.SplitHostPort(b.Addr)
	if err != nil {
		return // the address itself was reported
	}
	k := host + "/" + port
	for _, other := range cl.ports[k] {
		if other.ip == ip || wildcard(other.ip) || wildcard(ip) {
			where := "the launching machine"
			if host != "" {
				where = "host " + host
			}
			cl.p.add(b.Key, nil, "port %s on %s is also bound by %s", port, where, other.key)
			return
		}
	}
	cl.ports[k] = append(cl.ports[k], bound{ip: strings.ToLower(ip), key: b.Key})
}

// wildcard reports whether ip binds every address of its host.
func wildcard(ip string) bool {
	a := net.ParseIP(ip)
	return a != nil && a.IsUnspecified()
}

// claim is the holder of an id: its key and kind (node, master, gateway).
type claim struct{ key, kind string }

// id checks the id of the process at key and claims it.
func (cl *claims) id(key, kind, id string) {
	switch {
	case id == "":
		cl.p.add(key+".id", nil, "missing %s id", kind)
	case !pki.ValidID(id):
		cl.p.add(key+".id", nil, "invalid %s id %q: use letters, digits, '-', '_' and '.'", kind, id)
	default:
		if other, dup := cl.ids[id]; dup {
			what := "id"
			if kind == "node" && other.kind == "node" {
				what = "node id"
			}
			cl.p.add(key+".id", nil, "duplicate %s %q (also %s)", what, id, other.key)
			return
		}
		cl.ids[id] = claim{key: key, kind: kind}
	}
}

// addr checks the address at key and claims it; an optional one may be
// empty.
func (cl *claims) addr(key, addr string, optional bool) {
	if addr == "" && optional {
		return
	}
	if err := CheckAddr(addr); err != nil {
		cl.p.add(key, nil, "%v", err)
		return
	}
	if other, dup := cl.addrs[strings.ToLower(addr)]; dup {
		cl.p.add(key, nil, "duplicate addr %q (also %s)", addr, other)
		return
	}
	cl.addrs[strings.ToLower(addr)] = key
}

func (s GatewaySection) validate(p *problems) {
	for _, o := range s.AllowedOrigins {
		if o == "*" {
			continue
		}
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			p.add("gateway.allowed_origins", nil, "invalid origin %q: want scheme://host[:port], e.g. https://auctions.example.com, or *", o)
		}
	}
	positiveInt(p, "gateway.queue_size", s.QueueSize)
	positiveDuration(p, "gateway.write_timeout", s.WriteTimeout)
	positiveDuration(p, "gateway.ping_interval", s.PingInterval)
	positiveDuration(p, "gateway.pong_wait", s.PongWait)
	if s.PingInterval > 0 && s.PongWait > 0 && s.PingInterval >= s.PongWait {
		p.add("gateway.ping_interval", nil, "must be shorter than gateway.pong_wait (%v), or live clients are cut off between pings", s.PongWait)
	}
	if s.ReadLimit < 512 {
		p.add("gateway.read_limit", nil, "must be at least 512 bytes, got %d", s.ReadLimit)
	}
	if s.SendBuffer != 0 && (s.SendBuffer < 4096 || s.SendBuffer > 64<<20) {
		p.add("gateway.send_buffer", nil, "must be 0 (the kernel's default) or between 4096 and 67108864 bytes, got %d", s.SendBuffer)
	}
	positiveDuration(p, "gateway.metrics_interval", s.MetricsInterval)
	positiveInt(p, "gateway.max_connections", s.MaxConnections)
	positiveInt(p, "gateway.max_connections_per_bidder", s.MaxConnectionsPerBidder)
	positiveInt(p, "gateway.max_watches", s.MaxWatches)
	if s.MaxConnections > 0 && s.MaxConnectionsPerBidder > s.MaxConnections {
		p.add("gateway.max_connections_per_bidder", nil, "must not exceed gateway.max_connections (%d)", s.MaxConnections)
	}
}

// MinSecretLen is the shortest auth.secret accepted.
const MinSecretLen = 16

func (s AuthConfig) validate(p *problems) {
	if s.Secret != "" && len(s.Secret) < MinSecretLen {
		p.add("auth.secret", nil, "too short (%d characters): use at least %d, e.g. from `openssl rand -hex 32`, or leave it empty for open mode",
			len(s.Secret), MinSecretLen)
	}
	positiveDuration(p, "auth.token_ttl", s.TokenTTL)
}

func (s MasterSection) validate(p *problems) {
	if strings.TrimSpace(s.DataDir) == "" {
		p.add("master.data_dir", nil, "must not be empty")
	}
	positiveDuration(p, "master.heartbeat", s.Heartbeat)
	positiveDuration(p, "master.failure_timeout", s.FailureTimeout)
	positiveDuration(p, "master.lease", s.Lease)
	if s.ForgetAfter <= s.FailureTimeout {
		p.add("master.forget_after", nil, "must be longer than master.failure_timeout (%v): the leader needs a silent node's "+
			"report until it has removed it, got %v", s.FailureTimeout, s.ForgetAfter)
	}
	positiveDuration(p, "master.raft.heartbeat_timeout", s.Raft.HeartbeatTimeout)
	positiveDuration(p, "master.raft.election_timeout", s.Raft.ElectionTimeout)
	positiveDuration(p, "master.raft.leader_lease_timeout", s.Raft.LeaderLeaseTimeout)
	positiveDuration(p, "master.raft.commit_timeout", s.Raft.CommitTimeout)
	positiveInt(p, "master.raft.snapshot_threshold", s.Raft.SnapshotThreshold)
	if s.Heartbeat > 0 && s.Lease > 0 && s.Heartbeat >= s.Lease {
		p.add("master.heartbeat", nil, "must be shorter than master.lease (%v), or leases lapse between heartbeats", s.Lease)
	}
	if s.Lease > 0 && s.FailureTimeout > 0 && s.Raft.LeaderLeaseTimeout > 0 &&
		s.Lease+s.Raft.LeaderLeaseTimeout >= s.FailureTimeout {
		p.add("master.lease", nil, "must be shorter than master.failure_timeout (%v) minus master.raft.leader_lease_timeout (%v): "+
			"a removed tail could otherwise still serve reads", s.FailureTimeout, s.Raft.LeaderLeaseTimeout)
	}
	if s.Raft.LeaderLeaseTimeout > s.Raft.HeartbeatTimeout {
		p.add("master.raft.leader_lease_timeout", nil, "must not exceed master.raft.heartbeat_timeout (%v)", s.Raft.HeartbeatTimeout)
	}
}

// remoteDir matches a working directory safe to hand to a remote shell
// unquoted, as scp before OpenSSH 9 does.
var remoteDir = regexp.MustCompile(`^[A-Za-z0-9._/+~-]+$`)

// CheckAddr returns an error unless addr is host:port with a non-empty host
// and a port in 1..65535.
func CheckAddr(addr string) error {
	if addr == "" {
		return errors.New("missing addr (host:port)")
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid addr %q: want host:port, e.g. 127.0.0.1:7101", addr)
	}
	if host == "" || strings.ContainsAny(host, " \t\r\n/") {
		return fmt.Errorf("invalid addr %q: want a host before the port, e.g. 127.0.0.1:7101", addr)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("invalid addr %q: port must be a number in 1..65535", addr)
	}
	return nil
}

// CheckTransport returns an *Error wrapping ErrPlaintext, naming the file
// and the key insecure, unless the cluster may run as configured: with
// TLS (tls.ca set), or without it when insecure: true says so. Masters,
// nodes and gateways call it before they start.
func (c *Config) CheckTransport() error {
	if c.TLSEnabled() || c.Insecure {
		return nil
	}
	return &Error{File: c.File, Key: "insecure", err: ErrPlaintext, Msg: "tls.ca is not set, so every link would be " +
		"plaintext and nobody's identity checked: anyone who reaches a port could act as any node, master or gateway. " +
		"Turn TLS on (gavel certs init, then tls.ca: certs/ca.crt), or set insecure: true (a top-level key) " +
		"to run in plaintext on a network only you reach"}
}

func (s TLSConfig) validate(p *problems) {
	if s.CA == "" {
		return
	}
	if strings.TrimSpace(s.Cert) == "" {
		p.add("tls.cert", nil, "must name each process's certificate, e.g. certs/{id}.crt")
	}
	if strings.TrimSpace(s.Key) == "" {
		p.add("tls.key", nil, "must name each process's private key, e.g. certs/{id}.key")
	}
}

func (s ChainConfig) validate(p *problems) {
	positiveDuration(p, "chain.tick", s.Tick)
	positiveDuration(p, "chain.hello_retry", s.HelloRetry)
	positiveInt(p, "chain.max_batch", s.MaxBatch)
	positiveInt(p, "chain.snapshot_every", s.SnapshotEvery)
	if s.SnapshotChunk < 4<<10 || s.SnapshotChunk > 16<<20 {
		p.add("chain.snapshot_chunk", nil, "must be between 4096 (4 KiB) and 16777216 (16 MiB) bytes, got %d", s.SnapshotChunk)
	}
	positiveDuration(p, "chain.retention", s.Retention)
	positiveInt(p, "chain.max_request_ids", s.MaxRequestIDs)
	positiveInt(p, "chain.max_bidders", s.MaxBidders)
	positiveInt(p, "chain.watch_history", s.WatchHistory)
	positiveInt(p, "chain.max_watch_streams", s.MaxWatchStreams)
	if s.SegmentSize < 64<<10 || s.SegmentSize > 1<<30 {
		p.add("chain.segment_size", nil, "must be between 65536 (64 KiB) and 1073741824 (1 GiB) bytes, got %d", s.SegmentSize)
	}
	if v := strings.ToLower(s.Sync); v != "always" && v != "none" {
		p.add("chain.sync", nil, "unknown sync mode %q (want always or none)", s.Sync)
	}
	if strings.TrimSpace(s.DataDir) == "" {
		p.add("chain.data_dir", nil, "must not be empty")
	}
}

func (s ClientConfig) validate(p *problems) {
	positiveDuration(p, "client.timeout", s.Timeout)
}

func (s LogConfig) validate(p *problems) {
	if _, ok := logLevels[strings.ToLower(s.Level)]; !ok {
		p.add("log.level", nil, "unknown log level %q (want debug, info, warn or error)", s.Level)
	}
	if f := strings.ToLower(s.Format); f != "text" && f != "json" {
		p.add("log.format", nil, "unknown log format %q (want text or json)", s.Format)
	}
}

func positiveDuration(p *problems, key string, d time.Duration) {
	if d <= 0 {
		p.add(key, nil, "must be a positive duration, got %v", d)
	}
}

func positiveInt(p *problems, key string, n int) {
	if n <= 0 {
		p.add(key, nil, "must be a positive number, got %d", n)
	}
}

// problems collects the errors found in one configuration, so that an
// operator sees all of them at once.
type problems struct {
	file string
	errs []*Error
}

// add records a problem with key (may be ""), wrapping cause (may be nil).
func (p *problems) add(key string, cause error, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Key: key, Msg: fmt.Sprintf(format, args...), err: cause})
}

// err returns nil, the single problem, or all of them joined.
func (p *problems) err() error {
	switch len(p.errs) {
	case 0:
		return nil
	case 1:
		return p.errs[0]
	}
	errs := make([]error, len(p.errs))
	for i, e := range p.errs {
		errs[i] = e
	}
	return errors.Join(errs...)
}
