package conns

import "errors"

// Sentinel errors; test for them with errors.Is.
var (
	// ErrClosed is returned by Get after Close.
	ErrClosed = errors.New("connection cache closed")
)
