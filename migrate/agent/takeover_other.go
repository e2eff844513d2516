//go:build !linux

package agent

const defaultSessionDir = ""

// takeOver does nothing on this system.
func takeOver(string, string) error { return nil }

// releaseSession does nothing on this system.
func releaseSession(string, string) {}

// hashesPath is empty: hashes are not kept on this system.
func hashesPath(string, string) string { return "" }
