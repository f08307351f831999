package e2e

import "syscall"

// groupLeaderAttr puts a started process in a process group of its own
// (ending the group ends whatever it starts) and has the kernel SIGKILL
// it when the test binary dies without cleaning up: a -timeout panic, a
// SIGTERM, an interrupt, none of which reach a process group of its own.
func groupLeaderAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
