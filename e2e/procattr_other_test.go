//go:build !linux

package e2e

import "syscall"

// groupLeaderAttr puts a started process in a process group of its own.
// Outside Linux nothing ends it when the test binary dies: only the
// test's cleanup does.
func groupLeaderAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
