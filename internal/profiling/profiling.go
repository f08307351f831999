// Package profiling serves Go's profiler (net/http/pprof) under
// /debug/pprof/ on a process's HTTP mux: CPU profiles, execution traces,
// heap, goroutines, and the mutex and block profiles when their rates are
// set. Nodes and masters serve it on their http_addr, gateways only with
// gateway.pprof; see docs/observability.md.
package profiling

import (
	"net/http"
	"net/http/pprof"
)

// Register adds the /debug/pprof/ handlers to mux.
func Register(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}
