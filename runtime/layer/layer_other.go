//go:build !linux

package layer

import (
	"context"
	"fmt"
	"io"

	"github.com/stowage/stowage/plugins/volume"
)

// Changes lists the changes in an overlay upper directory; overlayfs is
// Linux only, so here it returns volume.ErrNotSupported.
func Changes(upper string, lowers []string) ([]Change, error) {
	return nil, fmt.Errorf("read overlay changes: %w", volume.ErrNotSupported)
}

// Write writes an overlay upper directory as a layer tar; overlayfs is Linux
// only, so here it returns volume.ErrNotSupported.
func Write(ctx context.Context, w io.Writer, upper string, lowers []string) (diffID string, err error) {
	return "", fmt.Errorf("write overlay layer: %w", volume.ErrNotSupported)
}
