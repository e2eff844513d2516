package migrate

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// syncFS writes the dirty data of the file system that holds dir to its
// device, so that what frozen writers left in the page cache is on disk
// before the final pass.
func syncFS(dir string) error {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sync the source file system: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Syncfs(fd); err != nil {
		return fmt.Errorf("sync the source file system: %w", err)
	}
	return nil
}
