package layer

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"path"
	"slices"

	"golang.org/x/sys/unix"
)

// Changes lists the changes recorded in the overlay upper directory upper
// over the lower layers lowers (top first), sorted by path. The lines are
// those `docker diff` prints (Docker 20.10 on overlay2, which compares the
// container's root with its image's: moby's archive.ChangesDirs), computed
// from the upper directory and lookups in the lower layers:
//   - a path the lower layers do not have is A, and so is everything under
//     it;
//   - a path they have is C when its type, mode, owner or device number
//     differ or its security.capability attribute does, and, for a
//     non-directory, its size or mtime (to the second when either side has
//     no nanoseconds); a copy-up alone (a hard link to a lower file, say) is
//     no change;
//   - a whiteout over a path the lower layers have is D, and so is each
//     entry of a lower directory that an opaque upper directory (removed and
//     made again) no longer has; nothing under a D path is listed;
//   - every directory above a change is C, the root excepted.
//
// A lower layer's whiteouts and opaque directories hide what lies below
// them, as in the overlay mount. An entry overlayfs marks as a metadata-only
// copy-up or as redirected is C when the lower layers have its path; a
// renamed directory (redirect_dir=on) is A with only what its upper copy
// holds, so mount with redirect_dir=off. Changes returns volume.ErrNotFound when
// upper does not exist.
func Changes(upper string, lowers []string) ([]Change, error) {
	if err := checkUpper(upper); err != nil {
		return nil, err
	}
	d := differ{upper: upper}
	if _, err := d.walk("/", stack(lowers), false); err != nil {
		return nil, err
	}
	slices.SortFunc(d.out, func(a, b Change) int { return cmp.Compare(a.Path, b.Path) })
	return d.out, nil
}

type differ struct {
	upper string
	out   []Change
}

func (d *differ) add(kind Kind, p string) { d.out = append(d.out, Change{Kind: kind, Path: p}) }

// walk records the changes under directory dir (absolute in the container),
// which is a directory in the upper layer and, when old is not empty, in the
// lower layers too. upperOnly says that the lower layers' entries of dir are
// hidden (dir or a directory above it is opaque). It reports whether it
// recorded anything.
func (d *differ) walk(dir string, old stack, upperOnly bool) (changed bool, err error) {
	names, err := readNames(d.upper + dir)
	if err != nil {
		return false, fmt.Errorf("read upper dir: %w", err)
	}
	present := make(map[string]bool, len(names))
	for _, name := range names {
		p := path.Join(dir, name)
		var st unix.Stat_t
		if err := unix.Lstat(d.upper+p, &st); err != nil {
			return false, fmt.Errorf("stat upper entry: %w", err)
		}
		was, err := old.lookup(name)
		if err != nil {
			return false, err
		}
		if isWhiteout(&st) {
			if was != nil && !upperOnly {
				d.add(Deleted, p)
				changed = true
			}
			continue
		}
		present[name] = true
		if was == nil {
			d.add(Added, p)
			if isDir(&st) {
				if err := d.added(p); err != nil {
					return false, err
				}
			}
			changed = true
			continue
		}
		reported, err := d.differs(p, &st, was, old)
		if err != nil {
			return false, err
		}
		if reported {
			d.add(Changed, p)
			changed = true
		}
		if !isDir(&st) {
			continue
		}
		var sub stack
		if isDir(was) {
			if sub, err = old.child(name); err != nil {
				return false, err
			}
		}
		opaque, err := isOpaque(d.upper + p)
		if err != nil {
			return false, err
		}
		inner, err := d.walk(p, sub, upperOnly || opaque)
		if err != nil {
			return false, err
		}
		if inner && !reported {
			d.add(Changed, p)
		}
		changed = changed || inner
	}
	if upperOnly {
		gone, err := old.names()
		if err != nil {
			return false, err
		}
		for _, name := range gone {
			if !present[name] {
				d.add(Deleted, path.Join(dir, name))
				changed = true
			}
		}
	}
	return changed, nil
}

// added records everything under the new directory dir as added.
func (d *differ) added(dir string) error {
	names, err := readNames(d.upper + dir)
	if err != nil {
		return fmt.Errorf("read upper dir: %w", err)
	}
	for _, name := range names {
		p := path.Join(dir, name)
		var st unix.Stat_t
		if err := unix.Lstat(d.upper+p, &st); err != nil {
			return fmt.Errorf("stat upper entry: %w", err)
		}
		if isWhiteout(&st) {
			continue
		}
		d.add(Added, p)
		if isDir(&st) {
			if err := d.added(p); err != nil {
				return err
			}
		}
	}
	return nil
}

// differs reports whether upper entry p (stat st) differs from what the
// lower layers have at p (stat was, found in old): Docker's statDifferent
// plus the file capabilities.
func (d *differ) differs(p string, st, was *unix.Stat_t, old stack) (bool, error) {
	if st.Mode != was.Mode || st.Uid != was.Uid || st.Gid != was.Gid || st.Rdev != was.Rdev {
		return true, nil
	}
	if !isDir(st) && (st.Size != was.Size || !sameTime(st.Mtim, was.Mtim)) {
		return true, nil
	}
	for _, x := range []string{xattrMetacopy, xattrRedirect} {
		if _, ok, err := overlayXattr(d.upper+p, x); err != nil || ok {
			return ok, err // part of it lives in a lower layer: say C
		}
	}
	lowerPath, err := old.path(path.Base(p))
	if err != nil {
		return false, err
	}
	c1, err := capability(d.upper + p)
	if err != nil {
		return false, err
	}
	c2, err := capability(lowerPath)
	if err != nil {
		return false, err
	}
	return !bytes.Equal(c1, c2), nil
}

// capability returns the security.capability attribute of p, nil when it
// has none.
func capability(p string) ([]byte, error) {
	v, err := getxattr(p, "security.capability")
	if errors.Is(err, unix.ENODATA) || errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read capabilities of %s: %w", p, err)
	}
	return v, nil
}

// sameTime compares mtimes as Docker does: equal, or the same second when
// either has no nanoseconds (tar archives often keep whole seconds only).
func sameTime(a, b unix.Timespec) bool {
	return a.Sec == b.Sec && (a.Nsec == b.Nsec || a.Nsec == 0 || b.Nsec == 0)
}

// stack is the real directories, top layer first, whose overlay merge is
// one directory of the lower layers. It ends at an opaque directory, whose
// lower layers are hidden.
type stack []string

// entry finds name in s: the path of the topmost entry, or "" when no layer
// has it or a whiteout hides it.
func (s stack) entry(name string) (string, *unix.Stat_t, error) {
	for _, dir := range s {
		p := path.Join(dir, name)
		var st unix.Stat_t
		err := unix.Lstat(p, &st)
		switch {
		case err == nil && isWhiteout(&st):
			return "", nil, nil
		case err == nil:
			return p, &st, nil
		case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		default:
			return "", nil, fmt.Errorf("stat lower entry: %w", err)
		}
	}
	return "", nil, nil
}

// lookup returns the stat of name in s, nil when the lower layers do not
// have it.
func (s stack) lookup(name string) (*unix.Stat_t, error) {
	_, st, err := s.entry(name)
	return st, err
}

// path returns the real path of name in s.
func (s stack) path(name string) (string, error) {
	p, _, err := s.entry(name)
	return p, err
}

// child returns the stack of directory name in s, which must be a directory
// in its topmost layer.
func (s stack) child(name string) (stack, error) {
	var out stack
	for _, dir := range s {
		p := path.Join(dir, name)
		var st unix.Stat_t
		err := unix.Lstat(p, &st)
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("stat lower entry: %w", err)
		}
		if !isDir(&st) {
			break // a whiteout or a file hides the layers below
		}
		out = append(out, p)
		opaque, err := isOpaque(p)
		if err != nil {
			return nil, err
		}
		if opaque {
			break
		}
	}
	return out, nil
}

// names returns the names in the merged directory s, sorted.
func (s stack) names() ([]string, error) {
	seen := make(map[string]bool)
	var out []string
	for _, dir := range s {
		names, err := readNames(dir)
		if err != nil {
			return nil, fmt.Errorf("read lower dir: %w", err)
		}
		for _, name := range names {
			if seen[name] {
				continue
			}
			seen[name] = true
			var st unix.Stat_t
			if err := unix.Lstat(path.Join(dir, name), &st); err != nil {
				return nil, fmt.Errorf("stat lower entry: %w", err)
			}
			if !isWhiteout(&st) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out, nil
}
