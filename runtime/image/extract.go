package image

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/stowage/stowage/plugins/volume"
)

const (
	whiteoutPrefix = ".wh."
	whiteoutMeta   = ".wh..wh."
	whiteoutOpaque = ".wh..wh..opq"
	// maxLinks bounds the symlinks followed while resolving one entry, as
	// the kernel's MAXSYMLINKS does.
	maxLinks = 40
)

// extractor writes one layer tar into an empty directory. Every entry path
// is resolved component by component with Lstat under root: symlinks of the
// layer are followed only while they stay inside root, and the entry's own
// last component is never followed. Nothing else writes into root while it
// extracts (root is a private temporary directory), so what is checked is
// what is written.
type extractor struct {
	root  string // the layer directory
	log   *slog.Logger
	owner bool // whether ownership can be set: running as root
	dirs  []deferred
}

// deferred is the metadata of a directory, applied after all entries, since
// writing into a directory changes its mtime and a read-only mode could
// stop the writes.
type deferred struct {
	rel string
	hdr *tar.Header
}

// extract extracts the uncompressed layer tar r into root, an existing
// empty directory, in overlayfs form. An entry that would be written
// outside root is ErrInvalid naming the entry; the caller removes root on
// any error.
func extract(ctx context.Context, r io.Reader, root string, log *slog.Logger) error {
	e := &extractor{root: root, log: log, owner: os.Geteuid() == 0}
	if err := os.Chmod(root, 0o755); err != nil {
		return err
	}
	tr := tar.NewReader(r)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read layer tar: %w: %w", volume.ErrInvalid, err)
		}
		if err := e.entry(hdr, tr); err != nil {
			return err
		}
	}
	// Deepest and latest first: children before a parent that may lose its
	// write permission.
	for i := len(e.dirs) - 1; i >= 0; i-- {
		d := e.dirs[i]
		if err := e.meta(d.rel, d.hdr); err != nil {
			return err
		}
	}
	return nil
}

// invalid returns ErrInvalid naming a tar entry.
func invalid(name, format string, args ...any) error {
	return fmt.Errorf("layer entry %q: %w: %s", name, volume.ErrInvalid, fmt.Sprintf(format, args...))
}

// cleanName checks a tar path and returns it cleaned and relative: absolute
// paths and paths that leave the root are ErrInvalid.
func cleanName(entry, name string) (string, error) {
	if name == "" {
		return "", invalid(entry, "empty path")
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", invalid(entry, "NUL in path")
	}
	if path.IsAbs(name) {
		return "", invalid(entry, "absolute path %q", name)
	}
	p := path.Clean(name)
	if p == ".." || strings.HasPrefix(p, "../") {
		return "", invalid(entry, "path %q leaves the layer", name)
	}
	return p, nil
}

// resolveDir returns dir (a cleaned relative path) as a path relative to
// e.root that has no symlink in it, following the layer's symlinks while
// they stay inside root. Missing directories are created when create is
// set, otherwise they are fs.ErrNotExist.
func (e *extractor) resolveDir(entry, dir string, create bool) (string, error) {
	cur := "" // resolved so far: relative to root, no symlinks
	todo := strings.Split(dir, "/")
	links := 0
	for len(todo) > 0 {
		c := todo[0]
		todo = todo[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if cur == "" {
				return "", invalid(entry, "path goes through a symlink that points out of the layer")
			}
			cur = path.Dir(cur)
			if cur == "." {
				cur = ""
			}
			continue
		}
		next := path.Join(cur, c)
		full := filepath.Join(e.root, next)
		fi, err := os.Lstat(full)
		switch {
		case errors.Is(err, fs.ErrNotExist) && create:
			if err := os.Mkdir(full, 0o755); err != nil {
				return "", fmt.Errorf("extract %q: %w", entry, err)
			}
			cur = next
		case err != nil:
			return "", fmt.Errorf("extract %q: %w", entry, err)
		case fi.Mode()&fs.ModeSymlink != 0:
			if links++; links > maxLinks {
				return "", invalid(entry, "too many levels of symlinks")
			}
			target, err := os.Readlink(full)
			if err != nil {
				return "", fmt.Errorf("extract %q: %w", entry, err)
			}
			if path.IsAbs(target) {
				return "", invalid(entry, "path goes through symlink %s -> %s, which points out of the layer", next, target)
			}
			todo = append(strings.Split(target, "/"), todo...)
		case fi.IsDir():
			cur = next
		default:
			return "", invalid(entry, "path goes through %s, which is not a directory", next)
		}
	}
	return cur, nil
}

// resolve returns the path relative to root at which the entry called name
// goes: its directory resolved, its last component as it is.
func (e *extractor) resolve(entry, name string, create bool) (string, error) {
	p, err := cleanName(entry, name)
	if err != nil {
		return "", err
	}
	if p == "." {
		return "", nil
	}
	dir, base := path.Split(p)
	parent, err := e.resolveDir(entry, dir, create)
	if err != nil {
		return "", err
	}
	return path.Join(parent, base), nil
}

func (e *extractor) full(rel string) string { return filepath.Join(e.root, rel) }

// entry writes one tar entry.
func (e *extractor) entry(hdr *tar.Header, r io.Reader) error {
	name := hdr.Name
	if hdr.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	p, err := cleanName(name, name)
	if err != nil {
		return err
	}
	if aufsMeta(p) {
		e.log.Warn("skipped whiteout metadata entry", "op", "extract", "entry", name)
		return nil
	}
	rel, err := e.resolve(name, p, true)
	if err != nil {
		return err
	}
	if base := path.Base(rel); rel != "" && strings.HasPrefix(base, whiteoutPrefix) {
		return e.whiteout(name, path.Dir(rel), base)
	}
	if rel == "" {
		if hdr.Typeflag != tar.TypeDir {
			return invalid(name, "the layer root must be a directory")
		}
		e.dirs = append(e.dirs, deferred{rel, hdr})
		return nil
	}
	full := e.full(rel)
	switch hdr.Typeflag {
	case tar.TypeDir:
		if fi, err := os.Lstat(full); err == nil && fi.IsDir() {
			e.dirs = append(e.dirs, deferred{rel, hdr})
			return nil
		}
		if err := e.clear(name, full); err != nil {
			return err
		}
		if err := os.Mkdir(full, 0o700); err != nil {
			return fmt.Errorf("extract %q: %w", name, err)
		}
		e.dirs = append(e.dirs, deferred{rel, hdr})
		return nil
	case tar.TypeReg, tar.TypeGNUSparse:
		if err := e.clear(name, full); err != nil {
			return err
		}
		if err := writeFile(full, r); err != nil {
			return fmt.Errorf("extract %q: %w", name, err)
		}
	case tar.TypeSymlink:
		if err := e.clear(name, full); err != nil {
			return err
		}
		if err := os.Symlink(hdr.Linkname, full); err != nil {
			return fmt.Errorf("extract %q: %w", name, err)
		}
	case tar.TypeLink:
		return e.hardlink(hdr, rel)
	case tar.TypeFifo:
		if err := e.clear(name, full); err != nil {
			return err
		}
		if err := mkfifo(full); err != nil {
			return fmt.Errorf("extract %q: %w", name, err)
		}
	case tar.TypeChar, tar.TypeBlock:
		e.log.Warn("skipped device node in layer", "op", "extract", "entry", name)
		return nil
	default:
		e.log.Warn("skipped tar entry of unknown type", "op", "extract", "entry", name, "type", string(hdr.Typeflag))
		return nil
	}
	return e.meta(rel, hdr)
}

// clear removes what is at full, so a later entry replaces an earlier one
// of the same path, as tar does.
func (e *extractor) clear(name, full string) error {
	if _, err := os.Lstat(full); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err := removeAll(full); err != nil {
		return fmt.Errorf("extract %q: %w", name, err)
	}
	return nil
}

// aufsMeta says whether p is in or is one of the .wh..wh.* metadata files
// and directories of aufs, other than the opaque marker, which are not part
// of the image's content.
func aufsMeta(p string) bool {
	for c := range strings.SplitSeq(p, "/") {
		if strings.HasPrefix(c, whiteoutMeta) && c != whiteoutOpaque {
			return true
		}
	}
	return false
}

// whiteout converts an OCI whiteout entry dir/base to overlayfs form.
func (e *extractor) whiteout(name, dir, base string) error {
	if dir == "." {
		dir = ""
	}
	switch {
	case base == whiteoutOpaque:
		if err := setOpaque(e.full(dir)); err != nil {
			return fmt.Errorf("mark %q opaque: %w", name, err)
		}
		return nil
	}
	target := strings.TrimPrefix(base, whiteoutPrefix)
	if target == "" || target == "." || target == ".." {
		return invalid(name, "whiteout of no name")
	}
	full := e.full(path.Join(dir, target))
	if err := e.clear(name, full); err != nil {
		return err
	}
	if err := mknodWhiteout(full); err != nil {
		return fmt.Errorf("convert whiteout %q: %w", name, err)
	}
	return nil
}

// hardlink links rel to the entry's link target, which must be a
// non-directory of this layer.
func (e *extractor) hardlink(hdr *tar.Header, rel string) error {
	name := hdr.Name
	target, err := e.resolve(name, hdr.Linkname, false)
	if errors.Is(err, fs.ErrNotExist) {
		return invalid(name, "hard link target %q is not in the layer", hdr.Linkname)
	}
	if err != nil {
		return err
	}
	fi, err := os.Lstat(e.full(target))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return invalid(name, "hard link target %q is not in the layer", hdr.Linkname)
	case err != nil:
		return fmt.Errorf("extract %q: %w", name, err)
	case fi.IsDir() || target == "":
		return invalid(name, "hard link to directory %q", hdr.Linkname)
	case target == rel:
		return nil
	}
	if err := e.clear(name, e.full(rel)); err != nil {
		return err
	}
	if err := os.Link(e.full(target), e.full(rel)); err != nil {
		return fmt.Errorf("extract %q: %w", name, err)
	}
	return nil
}

// writeFile creates full, which does not exist, with r's content.
func writeFile(full string, r io.Reader) error {
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, r)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// meta applies ownership, mode, xattrs and times of hdr to rel, in this
// order: chown clears setuid bits and file capabilities.
func (e *extractor) meta(rel string, hdr *tar.Header) error {
	full := e.full(rel)
	symlink := hdr.Typeflag == tar.TypeSymlink
	if e.owner {
		if err := lchown(full, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("extract %q: %w", hdr.Name, err)
		}
	}
	if !symlink {
		if err := chmod(full, uint32(hdr.Mode&0o7777)); err != nil {
			return fmt.Errorf("extract %q: %w", hdr.Name, err)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(hdr.PAXRecords)) {
		v := hdr.PAXRecords[k]
		attr, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if strings.HasPrefix(attr, "trusted.overlay.") {
			// Only the store writes overlayfs's own attributes; a layer's
			// could redirect lookups in the lower layers.
			e.log.Warn("skipped overlayfs xattr in layer", "op", "extract", "entry", hdr.Name, "xattr", attr)
			continue
		}
		if err := lsetxattr(full, attr, []byte(v)); err != nil {
			if !e.owner || errors.Is(err, errXattrNotSupported) {
				e.log.Warn("skipped xattr", "op", "extract", "entry", hdr.Name, "xattr", attr, "err", err)
				continue
			}
			return fmt.Errorf("extract %q: set xattr %s: %w", hdr.Name, attr, err)
		}
	}
	mtime := hdr.ModTime
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	atime := hdr.AccessTime
	if atime.IsZero() {
		atime = mtime
	}
	if err := setTimes(full, atime, mtime); err != nil {
		return fmt.Errorf("extract %q: %w", hdr.Name, err)
	}
	return nil
}
