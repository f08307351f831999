//go:build unix

package wsbench

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// RaiseFileLimit raises the process's limit of open files (RLIMIT_NOFILE)
// for want descriptors: the soft limit to the hard limit, and, when the
// process runs as root and the hard limit is below want, the hard limit
// too, up to want (and no further than Linux's fs.nr_open). It returns the
// soft limit in force afterwards.
func RaiseFileLimit(want uint64) (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Max < want && os.Geteuid() == 0 {
		hard := want
		if ceil := nrOpen(); ceil > 0 {
			hard = min(hard, ceil)
		}
		if hard > rl.Max {
			raised := syscall.Rlimit{Cur: hard, Max: hard}
			if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err == nil {
				return hard, nil
			}
		}
	}
	if rl.Cur < rl.Max {
		cur := rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: cur, Max: rl.Max}); err != nil {
			return rl.Cur, err
		}
		rl.Cur = cur
	}
	return rl.Cur, nil
}

// nrOpen returns Linux's ceiling on a process's open files (fs.nr_open),
// 0 when unknown.
func nrOpen() uint64 {
	if runtime.GOOS != "linux" {
		return 0
	}
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0
	}
	return n
}
