package agent

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// space returns the bytes free for this process (root may use the blocks
// reserved for it) and the size of the file system holding root.
func space(root string) (free, size int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", root, err)
	}
	avail := st.Bavail
	if unix.Geteuid() == 0 {
		avail = st.Bfree
	}
	return int64(avail) * st.Bsize, int64(st.Blocks) * st.Bsize, nil
}
