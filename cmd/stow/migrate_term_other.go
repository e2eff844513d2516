//go:build !linux

package main

import "io"

// isTerminal reports false: progress is plain lines on this system.
func isTerminal(io.Writer) bool { return false }
