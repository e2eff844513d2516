//go:build !unix

package sidecar

import "os/exec"

// detach does nothing here: sidecars need Linux.
func detach(*exec.Cmd) {}
