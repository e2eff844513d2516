package migrate

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// readHead returns the first size bytes of the file at path (fewer when it
// is shorter now), with plain system calls: os.Open costs several more per
// file (poller registration, file status flags), which many small files
// feel.
func readHead(path string, size int64) ([]byte, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	data := make([]byte, size)
	off := 0
	for off < len(data) {
		n, err := unix.Read(fd, data[off:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if n == 0 {
			break
		}
		off += n
	}
	return data[:off], nil
}
