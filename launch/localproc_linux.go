package launch

import "syscall"

// attachedAttr has the kernel SIGKILL an attached process when the
// program that started it dies, even before it can stop it.
func attachedAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
