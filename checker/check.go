package checker

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/anishathalye/porcupine"
)

// Errors returned (wrapped) by Report.Err.
var (
	// ErrNotLinearizable is returned for a history that porcupine proved illegal.
	ErrNotLinearizable = errors.New("history is not linearizable")
	// ErrCheckTimeout is returned when porcupine could not decide within
	// the timeout. A test must treat it as a failure: an undecided history
	// proves nothing.
	ErrCheckTimeout = errors.New("linearizability check timed out")
	// ErrMalformedHistory is returned for a history whose operations are
	// not Input/Output pairs with sane timestamps.
	ErrMalformedHistory = errors.New("malformed history")
)

// Report is the outcome of Check.
type Report struct {
	// Result is porcupine's verdict: Ok, Illegal or Unknown (timed out).
	Result porcupine.CheckResult
	// Operations is the number of operations checked; Pending how many of
	// them never returned (the client gave up).
	Operations, Pending int
	// Auctions is the number of partitions (auctions) checked.
	Auctions int
	// Elapsed is the time the check took.
	Elapsed time.Duration

	err     error // a malformed history
	history []porcupine.Operation
	timeout time.Duration
}

// Check checks a history recorded with a Recorder (or built by hand from
// Input and Output values) against the auction model. timeout bounds the
// search (0 means none); an undecided check is reported as Unknown and is
// an error.
func Check(history []porcupine.Operation, timeout time.Duration) *Report {
	rep := &Report{history: history, timeout: timeout, Operations: len(history)}
	auctions := map[string]bool{}
	for i, op := range history {
		in, okIn := op.Input.(Input)
		_, okOut := op.Output.(Output)
		switch {
		case !okIn || !okOut:
			rep.err = fmt.Errorf("%w: operation %d has input %T and output %T, want checker.Input and checker.Output",
				ErrMalformedHistory, i, op.Input, op.Output)
		case op.Return < op.Call:
			rep.err = fmt.Errorf("%w: operation %d returns (%d) before it is called (%d)",
				ErrMalformedHistory, i, op.Return, op.Call)
		case op.ClientId < 0:
			rep.err = fmt.Errorf("%w: operation %d has negative client id", ErrMalformedHistory, i)
		}
		if rep.err != nil {
			rep.Result = porcupine.Illegal
			return rep
		}
		auctions[in.Auction] = true
		if op.Return == pending {
			rep.Pending++
		}
	}
	rep.Auctions = len(auctions)
	start := time.Now()
	rep.Result = porcupine.CheckOperationsTimeout(Model(), history, timeout)
	rep.Elapsed = time.Since(start)
	return rep
}

// Ok reports whether the history is linearizable.
func (r *Report) Ok() bool { return r.err == nil && r.Result == porcupine.Ok }

// Err is nil if the history is linearizable, and otherwise says why not:
// illegal (ErrNotLinearizable), undecided in time (ErrCheckTimeout) or
// malformed (ErrMalformedHistory).
func (r *Report) Err() error {
	switch {
	case r.err != nil:
		return r.err
	case r.Result == porcupine.Ok:
		return nil
	case r.Result == porcupine.Unknown:
		return fmt.Errorf("%w after %v (%d operations, %d auctions)", ErrCheckTimeout, r.timeout,
			r.Operations, r.Auctions)
	}
	return fmt.Errorf("%w (%d operations, %d pending, %d auctions)", ErrNotLinearizable,
		r.Operations, r.Pending, r.Auctions)
}

// String summarises the report.
func (r *Report) String() string {
	if err := r.Err(); err != nil {
		return err.Error()
	}
	return fmt.Sprintf("linearizable (%d operations, %d pending, %d auctions, %v)",
		r.Operations, r.Pending, r.Auctions, r.Elapsed.Round(time.Millisecond))
}

// WriteVisualization writes porcupine's HTML visualization of the history
// to path: the linearization if there is one, otherwise the longest partial
// linearizations and the operations that could not be linearized. It runs
// the check again in verbose mode (with the same timeout), so call it only
// when you want the file.
func (r *Report) WriteVisualization(path string) error {
	if r.err != nil {
		return r.err
	}
	model := Model()
	_, info := porcupine.CheckOperationsVerbose(model, r.history, r.timeout)
	return porcupine.VisualizePath(model, info, path)
}

// WriteVisualizationTemp writes the visualization to a new file in
// os.TempDir() whose name follows pattern (as os.CreateTemp) and returns
// its path.
func (r *Report) WriteVisualizationTemp(pattern string) (string, error) {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return "", err
	}
	path := f.Name()
	if err := f.Close(); err != nil {
		return "", err
	}
	if err := r.WriteVisualization(path); err != nil {
		return path, err
	}
	return path, nil
}
