package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/gavel-auction/gavel/auth"
	"github.com/gavel-auction/gavel/config"
	"github.com/gavel-auction/gavel/gateway"
	"github.com/gavel-auction/gavel/pki"
)

// gatewayOptions builds gateway id's options from cfg, with the address it
// listens on.
func gatewayOptions(cfg *config.Config, id string) (gateway.Options, string, error) {
	gw, ok := cfg.GatewayByID(id)
	if !ok {
		if len(cfg.Gateways) == 0 {
			return gateway.Options{}, "", &exitError{code: exitUsage, msg: fmt.Sprintf("%s lists no gateways (key gateways)", cfg.File)}
		}
		return gateway.Options{}, "", &exitError{code: exitUsage, msg: fmt.Sprintf("unknown gateway id %q: %s lists %s",
			id, cfg.File, strings.Join(cfg.GatewayIDs(), ", "))}
	}
	ident, err := processTLS(cfg, pki.RoleGateway, gw.ID)
	if err != nil {
		return gateway.Options{}, "", err
	}
	s := cfg.Gateway
	return gateway.Options{ID: gw.ID, Nodes: cfg.NodeAddrs(), Masters: cfg.MasterAddrs(), Secret: cfg.Auth.Secret,
		AllowedOrigins: s.AllowedOrigins, AllowEmptyOrigin: s.AllowEmptyOrigin, QueueSize: s.QueueSize, WriteTimeout: s.WriteTimeout,
		PingInterval: s.PingInterval, PongWait: s.PongWait, ReadLimit: s.ReadLimit,
		SendBuffer: s.SendBuffer, Pprof: s.Pprof,
		MetricsInterval: s.MetricsInterval, CallTimeout: cfg.Client.Timeout, TLS: ident,
		MaxConnections: s.MaxConnections, MaxConnectionsPerBidder: s.MaxConnectionsPerBidder,
		MaxWatches: s.MaxWatches}, config.Bind(gw.Addr, gw.ListenAddr), nil
}

func cmdGateway(ctx context.Context, e *env, args []string) error {
	f := newFlags(e, "gateway", "--id ID [flags]", `
Run gateway ID of the configuration: the WebSocket and HTTP front for
bidders, on its addr, until SIGINT or SIGTERM.

  /ws       the line protocol of docs/gateway.md (wscat -c ws://ADDR/ws?bidder=alice)
  /         the web page
  /healthz  200 and the gateway's view of the chain, as JSON

Bids and reads go to the chain's nodes like any client's; live auctions
are followed through one watch stream per auction at the tail, found
through the masters (or, without masters, the nodes). With auth.secret
set, every connection needs a token (gavel token); without, bidders name
themselves.

With tls.ca set, the gateway serves https and wss with its certificate
(tls.cert for its id) and reaches nodes and masters over mutual TLS;
bidders need no certificate, only to trust the CA:

  wscat --ca certs/ca.crt -c wss://ADDR/ws?bidder=alice

Logs go to stderr.`)
	sf := addServerFlags(f, "gateway")
	cfg, err := sf.load(args)
	if err != nil {
		return err
	}
	opts, addr, err := gatewayOptions(cfg, *sf.id)
	if err != nil {
		return err
	}
	opts.Logger = cfg.NewLogger(e.stderr)
	logTLS(opts.Logger, cfg, *sf.id, opts.TLS)
	g, err := gateway.New(opts)
	if err != nil {
		return exception("gateway %s: %v", *sf.id, err)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		g.Stop()
		return exception("gateway %s: %v", *sf.id, err)
	}
	g.Start(lis)
	<-ctx.Done()
	opts.Logger.Info("signal received: stopping", "gateway", *sf.id)
	g.Stop()
	return nil
}

func cmdToken(_ context.Context, e *env, args []string) error {
	f := newFlags(e, "token", "--bidder NAME [--admin] [--ttl 24h] [flags]", `
Print a bearer token for the gateways: it names the bidder (who may bid
under that name only) and its role, bidder or admin (who may also open
auctions), and expires after --ttl. It is signed with auth.secret of the
configuration (or $GAVEL_AUTH_SECRET), which the gateways check:

  TOKEN=$(gavel token --bidder alice)
  wscat -c ws://127.0.0.1:7401/ws -H "Authorization: Bearer $TOKEN"
  http://127.0.0.1:7401/?token=TOKEN     (the web page)

Without auth.secret the gateways run in open mode and need no token.`)
	configPath := f.String("config", "config.yaml", "configuration file")
	bidder := f.String("bidder", "", "the bidder the token names (required)")
	admin := f.Bool("admin", false, "the admin role: may open auctions")
	ttl := f.Duration("ttl", 0, "how long the token is valid (default: auth.token_ttl of the config, 24h)")
	asJSON := f.Bool("json", false, "print the token and its claims as one JSON object")
	pos, err := f.parse(args)
	if err != nil {
		return err
	}
	e.json = *asJSON
	if err := noArgs(f, pos); err != nil {
		return err
	}
	if *bidder == "" {
		return f.usageErr("missing --bidder")
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		return &exitError{code: exitUsage, msg: err.Error()}
	}
	if cfg.Auth.Secret == "" {
		return &exitError{code: exitUsage, msg: fmt.Sprintf("%s: auth.secret is not set, so the gateways run in open mode "+
			"and take no token (bidders connect with ?bidder=NAME); set auth.secret, or $GAVEL_AUTH_SECRET, to require tokens", cfg.File)}
	}
	if !f.Changed("ttl") {
		*ttl = cfg.Auth.TokenTTL
	}
	if *ttl <= 0 {
		return f.usageErr("--ttl must be positive, got %v", *ttl)
	}
	role := auth.RoleBidder
	if *admin {
		role = auth.RoleAdmin
	}
	now := time.Now()
	tok, err := auth.NewToken([]byte(cfg.Auth.Secret), *bidder, role, *ttl, now)
	if err != nil {
		if errors.Is(err, auth.ErrBadName) {
			return f.usageErr("--bidder: %v", err)
		}
		return exception("%v", err)
	}
	if *asJSON {
		e.printJSON(struct {
			Token   string `json:"token"`
			Bidder  string `json:"bidder"`
			Role    string `json:"role"`
			Expires string `json:"expires"`
		}{tok, *bidder, string(role), now.Add(*ttl).UTC().Format(time.RFC3339)})
		return nil
	}
	fmt.Fprintln(e.stdout, tok)
	return nil
}
