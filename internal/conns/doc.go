// Package conns keeps the gRPC client connections a gavel process makes
// to other processes: one *grpc.ClientConn per address, dialled on first
// use and closed together when the process stops.
//
// gRPC connects lazily and reconnects by itself, so a cached connection
// serves for as long as its cache lives, whatever happens to the process
// at the other end; nothing is dropped or redialled on a failed call.
package conns
