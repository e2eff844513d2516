//go:build !linux

package security

import (
	"fmt"

	"github.com/stowage/stowage/plugins/volume"
)

// DropCapabilities fails with ErrNotSupported: only Linux has capabilities.
func DropCapabilities(keep []string) error {
	if _, err := parseCapabilities(keep); err != nil {
		return err
	}
	return fmt.Errorf("drop capabilities: %w", volume.ErrNotSupported)
}

// NoNewPrivileges fails with ErrNotSupported: only Linux has no_new_privs.
func NoNewPrivileges() error {
	return fmt.Errorf("set no_new_privs: %w", volume.ErrNotSupported)
}

// LoadSeccomp fails with ErrNotSupported: only Linux has seccomp.
func LoadSeccomp(programs [][]byte) error {
	return fmt.Errorf("load seccomp filter: %w", volume.ErrNotSupported)
}
