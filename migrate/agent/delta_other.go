//go:build !linux

package agent

import (
	"context"
	"errors"
)

// blocks is not supported on this system: files are sent whole.
func (s *server) blocks(context.Context, string, string, int, bool, int64) ([]byte, bool, error) {
	return nil, false, errors.New("delta transfer is not supported on this system")
}
