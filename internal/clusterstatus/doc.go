// Package clusterstatus gathers what the masters and nodes of a gavel
// cluster report about themselves, and holds it as rows: one per master,
// one per node, and the chain as the master leader sees it. `gavel status`
// prints these rows (as tables, or as JSON with their field tags); the
// launcher (package launch) waits on them.
//
// Everything is asked in parallel, each call bounded by an attempt
// timeout; a process that does not answer in time is a row that is not Up,
// with the reason in its Error.
package clusterstatus
