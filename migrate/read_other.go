//go:build !linux

package migrate

import (
	"io"
	"os"
)

// readHead returns the first size bytes of the file at path (fewer when it
// is shorter now).
func readHead(path string, size int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, size))
}
