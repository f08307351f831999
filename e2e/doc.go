// Package e2e holds gavel's real-process tests: they build the gavel
// binary, start `gavel node` processes on loopback from a generated
// config.yaml, drive them with concurrent clients, SIGKILL processes, and
// check the recorded histories with porcupine. The package has no code
// outside its tests.
package e2e
