//go:build !linux

package launch

import "syscall"

// attachedAttr: outside Linux, the program that starts an attached
// process stops it itself.
func attachedAttr() *syscall.SysProcAttr { return nil }
