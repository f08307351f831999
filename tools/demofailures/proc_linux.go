package main

import "syscall"

// procAttr makes a started process die with the demo even when the demo
// itself is killed before it can stop it.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
