//go:build !linux

package initproc

import (
	"fmt"
	"os"
)

// Main exits with CodeSetup: containers need Linux.
func Main(mode string) {
	fmt.Fprintf(os.Stderr, "stow-init: %s=%q: containers need Linux\n", EnvMode, mode)
	os.Exit(CodeSetup)
}
