package auth

import (
	"context"
	"strings"

	"google.golang.org/grpc/metadata"
)

// MetadataKey is the gRPC metadata key that carries a bearer token to the
// nodes: "authorization: Bearer TOKEN".
const MetadataKey = "authorization"

// tokenKey is the context key of WithToken's token.
type tokenKey struct{}

// WithToken returns ctx carrying token for the gRPC calls made with it: in
// each call's metadata, and as a value that the client package copies
// into every BidRequest it sends on a stream shared by many bidders (see
// TokenOf). An empty token returns ctx unchanged.
func WithToken(ctx context.Context, token string) context.Context {
	if token == "" {
		return ctx
	}
	ctx = context.WithValue(ctx, tokenKey{}, token)
	return metadata.AppendToOutgoingContext(ctx, MetadataKey, "Bearer "+token)
}

// TokenOf returns the token that WithToken put in ctx, or "".
func TokenOf(ctx context.Context) string {
	t, _ := ctx.Value(tokenKey{}).(string)
	return t
}

// IncomingToken returns the bearer token in the metadata of the gRPC call
// received with ctx, or "".
func IncomingToken(ctx context.Context) string {
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get(MetadataKey) {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
	}
	return ""
}

// ForwardToken returns the outgoing context of a call that a server makes
// on behalf of the call it received with ctx (a node forwarding a bid to
// the head): it carries the received call's bearer token on.
func ForwardToken(ctx context.Context) context.Context {
	if tok := IncomingToken(ctx); tok != "" {
		return metadata.AppendToOutgoingContext(ctx, MetadataKey, "Bearer "+tok)
	}
	return ctx
}
