package main

import (
	"strings"
	"testing"
)

// The test binary has no stow-provider beside it: serve says what is
// missing and where it looked, and does nothing else.
func TestProviderServeNotInstalled(t *testing.T) {
	out, errOut, code := stow(t, nil, "provider", "serve", "local", "--endpoint", "unix:///run/x.sock", "--root", t.TempDir())
	if code != 1 || out != "" || !strings.Contains(errOut, "stow-provider is not installed: looked in ") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}
