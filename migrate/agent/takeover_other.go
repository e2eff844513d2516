//go:build !linux

package agent

const defaultSessionDir = ""

// takeOver does nothing on this system.
func takeOver(string, string) error { return nil }

// releaseSession does nothing on this system.
func releaseSession(string, string) {}
