package container

import (
	"fmt"
	"os"

	"github.com/stowage/stowage/internal/companion"
	"github.com/stowage/stowage/runtime/container/initproc"
)

// modeMonitor, in initproc.EnvMode, makes this binary the monitor of a
// detached container; initproc's modes make it a container's init.
const modeMonitor = "monitor"

// initName is the file name of the container init program.
const initName = "stow-init"

// selfExe re-executes this binary as the container init.
const selfExe = "/proc/self/exe"

// Init runs the re-executed roles of this binary and never returns in
// them; in a normal start it returns at once. Call it first thing in main,
// before anything starts goroutines that matter.
func Init() {
	switch mode := os.Getenv(initproc.EnvMode); mode {
	case "":
		return
	case modeMonitor:
		runMonitor()
		os.Exit(initproc.CodeSetup)
	default:
		initproc.Main(mode)
	}
}

// findInit returns the container init program of a runtime whose
// executable is exe: stow-init installed with it, else exe itself
// (selfExe).
func findInit(exe string) string {
	if p := companion.FindFrom(exe, initName); p != "" {
		return p
	}
	return selfExe
}

// initProgram returns the container init program that Options.Init asks
// for.
func initProgram(opt string) (string, error) {
	if opt != "" {
		fi, err := os.Stat(opt)
		if err != nil {
			return "", fmt.Errorf("container init: %w", err)
		}
		if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
			return "", fmt.Errorf("container init %s: not an executable file", opt)
		}
		return opt, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return selfExe, nil
	}
	return findInit(exe), nil
}
