// Package floor measures what this machine allows a bid at best, with none
// of gavel's code on the path: a gRPC stream round trip between two
// processes on loopback (a bid crosses processes six times on a chain of
// three), and an fsync'd append to a file by one writer alone or by
// several at once on one filesystem (every chain member fsyncs each
// update). docs/performance.md, "What bounds it", quotes them beside the
// chain's own figures:
//
//	go test ./internal/floor -run '^$' -bench . -benchtime 5000x
//
// The fsyncs go to TMPDIR: point it at the filesystem of the data dirs.
package floor
