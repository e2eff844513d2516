package main

import (
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

type syscallSignal = syscall.Signal

// signalByName finds a signal by its name, with or without "SIG".
func signalByName(s string) (syscall.Signal, bool) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	return sig, sig != 0
}
