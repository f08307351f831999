// Package api holds gavel's wire protocol: the protobuf messages and gRPC
// services of gavel.proto (client API, admin API, chain replication) and
// their generated Go code. Regenerate with scripts/genproto.
package api
