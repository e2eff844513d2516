//go:build !linux

package seccomp

import (
	"fmt"

	"github.com/stowage/stowage/plugins/volume"
)

// Programs fails with ErrNotSupported: only Linux has seccomp.
func Programs() ([][]byte, error) {
	return nil, fmt.Errorf("seccomp filter: %w", volume.ErrNotSupported)
}
