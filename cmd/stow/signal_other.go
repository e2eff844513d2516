//go:build !linux

package main

import "syscall"

type syscallSignal = syscall.Signal

// signalByName knows no names on this system.
func signalByName(string) (syscall.Signal, bool) { return 0, false }
