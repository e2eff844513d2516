package layer

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
)

// readNames returns the names in directory dir, sorted bytewise.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	return names, nil
}

func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }

// isWhiteout reports whether st is an overlay whiteout: a character device
// with device number 0:0.
func isWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// overlayXattr returns the value of overlayfs's own attribute name ("opaque",
// "redirect", ...) on path, under trusted.overlay. or user.overlay., and
// whether it is set.
func overlayXattr(path, name string) ([]byte, bool, error) {
	for _, prefix := range []string{xattrTrustedOverlay, xattrUserOverlay} {
		v, err := getxattr(path, prefix+name)
		switch {
		case err == nil:
			return v, true, nil
		case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP), errors.Is(err, unix.EPERM):
			// EPERM: trusted.* cannot be read without CAP_SYS_ADMIN;
			// an unprivileged caller sees only the user.* namespace.
		default:
			return nil, false, fmt.Errorf("read xattr %s%s of %s: %w", prefix, name, path, err)
		}
	}
	return nil, false, nil
}

// isOpaque reports whether the directory at path is marked opaque.
func isOpaque(path string) (bool, error) {
	v, ok, err := overlayXattr(path, xattrOpaque)
	return ok && string(v) == "y", err
}

// isOverlayXattr reports whether an extended attribute belongs to overlayfs
// itself rather than to the file.
func isOverlayXattr(name string) bool {
	return strings.HasPrefix(name, xattrTrustedOverlay) || strings.HasPrefix(name, xattrUserOverlay)
}

// getxattr reads one extended attribute of path without following a
// symlink.
func getxattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			size, err := unix.Lgetxattr(path, name, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, max(size, 2*len(buf)))
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// listxattr lists the extended attribute names of path, sorted, without
// following a symlink.
func listxattr(path string) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			size, err := unix.Llistxattr(path, nil)
			if err != nil {
				return nil, err
			}
			buf = make([]byte, max(size, 2*len(buf)))
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, name := range strings.Split(string(buf[:n]), "\x00") {
			if name != "" {
				names = append(names, name)
			}
		}
		slices.Sort(names)
		return names, nil
	}
}

// checkUpper checks that upper is a directory.
func checkUpper(upper string) error {
	var st unix.Stat_t
	if err := unix.Lstat(upper, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("stat upper dir %s: %w: %w", upper, volume.ErrNotFound, err)
		}
		return fmt.Errorf("stat upper dir %s: %w", upper, err)
	}
	if !isDir(&st) {
		return fmt.Errorf("upper dir %s: %w: not a directory", upper, volume.ErrInvalid)
	}
	return nil
}
