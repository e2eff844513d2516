//go:build unix

package sidecar

import (
	"os/exec"
	"syscall"
)

// detach puts cmd in its own process group, so that a ^C meant for
// volumed does not reach the sidecar that stow starts.
func detach(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
}
