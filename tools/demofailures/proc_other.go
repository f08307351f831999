//go:build !linux

package main

import "syscall"

// procAttr: outside Linux, the demo's own cleanup stops its processes.
func procAttr() *syscall.SysProcAttr { return nil }
