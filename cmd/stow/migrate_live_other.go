//go:build !linux

package main

import (
	"fmt"

	"github.com/stowage/stowage/plugins/volume"
)

// killCgroupOf fails: only Linux has cgroups.
func killCgroupOf(int, string) (int, error) {
	return 0, fmt.Errorf("kill the processes of a container: %w: only Linux has cgroups", volume.ErrNotSupported)
}
