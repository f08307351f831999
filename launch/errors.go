package launch

import "errors"

// Sentinel errors. Every error the launcher returns for one of these
// situations wraps the sentinel, inside a message that names the host and
// the key of config.yaml involved; test for them with errors.Is.
var (
	// ErrUnreachable is returned when ssh cannot reach a host, or cannot
	// run a command there.
	ErrUnreachable = errors.New("unreachable")
	// ErrMissingFile is returned when a file that config.yaml names on the
	// launching machine (an ssh key, a known_hosts file, a TLS file) does
	// not exist there.
	ErrMissingFile = errors.New("file not found")
	// ErrPortTaken is returned when a port that a process would bind is
	// already taken on its host.
	ErrPortTaken = errors.New("already taken")
	// ErrCannotBind is returned when a process's address cannot be bound
	// on its host for another reason than a taken port, usually an IP
	// that is not one of the host's.
	ErrCannotBind = errors.New("cannot be bound")
	// ErrNotReady is returned when a started process exits, or does not
	// answer, join the chain or find a master leader in time.
	ErrNotReady = errors.New("not ready")
	// ErrUnknownID is returned for a process id that config.yaml does not
	// list.
	ErrUnknownID = errors.New("unknown id")
	// ErrNotRunning is returned by Kill for a process that does not run.
	ErrNotRunning = errors.New("not running")
	// ErrStillRunning is returned by LocalProc.Kill for a process that
	// still runs 5 seconds after SIGKILL.
	ErrStillRunning = errors.New("still runs")
	// ErrDown is returned by Status when a process of the configuration is
	// down or does not answer.
	ErrDown = errors.New("down")
	// ErrAgent is returned when the launcher's helper on a host (gavel
	// launch agent) fails or answers something unreadable.
	ErrAgent = errors.New("host agent failed")
	// ErrMonitor is returned when the Prometheus of --monitor cannot start.
	ErrMonitor = errors.New("monitor failed")
	// ErrNeedsTLS is returned by Up and Restart for a configuration
	// without TLS that puts a process beyond loopback.
	ErrNeedsTLS = errors.New("TLS needed beyond loopback")
)
