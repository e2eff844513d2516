package layer

import (
	"archive/tar"
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
)

// Write writes the overlay upper directory upper as an uncompressed OCI
// layer tar to w and returns its diff ID, "sha256:" and the hex digest of
// the bytes written.
//
// Entries come in directory order with the names of each directory sorted
// bytewise (as GNU tar --sort=name), parents before children, without the
// root. A whiteout becomes an empty regular file ".wh.NAME", placed where
// NAME sorts (as Docker's overlay2 driver writes it); an opaque
// directory is its entry followed by "DIR/.wh..wh..opq"; files linked more
// than once inside upper are written once, then as hard links to the first
// name. Headers are PAX with numeric owners only, mtime in whole seconds, no
// atime or ctime, and extended attributes as SCHILY.xattr records except
// overlayfs's own, so the same tree always gives the same bytes. Sockets are
// left out (a tar cannot hold them).
//
// lowers (top first) are only read for a metadata-only copy-up, whose data
// stays in the lower layer. A redirected directory (overlayfs redirect_dir)
// or a redirected metadata-only file gives volume.ErrNotSupported. ctx
// cancels the walk between entries.
func Write(ctx context.Context, w io.Writer, upper string, lowers []string) (diffID string, err error) {
	if err := checkUpper(upper); err != nil {
		return "", err
	}
	h := sha256.New()
	bw := bufio.NewWriterSize(io.MultiWriter(w, h), 64<<10)
	lw := layerWriter{
		ctx:    ctx,
		tw:     tar.NewWriter(bw),
		upper:  upper,
		lowers: lowers,
		links:  make(map[fileID]string),
	}
	if err := lw.dir(""); err != nil {
		return "", err
	}
	if err := lw.tw.Close(); err != nil {
		return "", fmt.Errorf("write layer: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return "", fmt.Errorf("write layer: %w", err)
	}
	return digest(h), nil
}

func digest(h hash.Hash) string { return "sha256:" + hex.EncodeToString(h.Sum(nil)) }

// fileID identifies an inode.
type fileID struct{ dev, ino uint64 }

type layerWriter struct {
	ctx    context.Context
	tw     *tar.Writer
	upper  string
	lowers []string
	// links maps an inode linked more than once to the name it was first
	// written under.
	links map[fileID]string
}

// dir writes the entries of directory rel ("" for the root, else
// "a/b" relative to upper).
func (lw *layerWriter) dir(rel string) error {
	names, err := readNames(path.Join(lw.upper, rel))
	if err != nil {
		return fmt.Errorf("read upper dir: %w", err)
	}
	for _, name := range names {
		if err := lw.ctx.Err(); err != nil {
			return err
		}
		if err := lw.entry(rel, name); err != nil {
			return err
		}
	}
	return nil
}

// entry writes one entry of directory rel and, for a directory, what it
// holds.
func (lw *layerWriter) entry(rel, name string) error {
	p := path.Join(rel, name)
	full := path.Join(lw.upper, p)
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return fmt.Errorf("stat upper entry: %w", err)
	}
	hdr := &tar.Header{
		Name:    p,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: time.Unix(st.Mtim.Sec, 0),
		Format:  tar.FormatPAX,
	}
	if isWhiteout(&st) {
		hdr.Typeflag = tar.TypeReg
		hdr.Name = path.Join(rel, whiteoutPrefix+name)
		return lw.header(hdr)
	}
	if err := lw.xattrs(full, hdr); err != nil {
		return err
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		if _, ok, err := overlayXattr(full, xattrRedirect); err != nil || ok {
			return errors.Join(err, fmt.Errorf("write /%s: %w: redirected directory (mount the overlay with redirect_dir=off)", p, volume.ErrNotSupported))
		}
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		if err := lw.header(hdr); err != nil {
			return err
		}
		opaque, err := isOpaque(full)
		if err != nil {
			return err
		}
		if opaque {
			opq := &tar.Header{
				Typeflag: tar.TypeReg,
				Name:     path.Join(p, whiteoutOpaque),
				Mode:     hdr.Mode & 0o777,
				Uid:      hdr.Uid,
				Gid:      hdr.Gid,
				ModTime:  hdr.ModTime,
				Format:   tar.FormatPAX,
			}
			if err := lw.header(opq); err != nil {
				return err
			}
		}
		return lw.dir(p)
	case unix.S_IFREG:
		return lw.file(hdr, full, &st)
	case unix.S_IFLNK:
		target, err := os.Readlink(full)
		if err != nil {
			return fmt.Errorf("read symlink: %w", err)
		}
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = target
		return lw.header(hdr)
	case unix.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
		return lw.header(hdr)
	case unix.S_IFCHR, unix.S_IFBLK:
		hdr.Typeflag = tar.TypeChar
		if st.Mode&unix.S_IFMT == unix.S_IFBLK {
			hdr.Typeflag = tar.TypeBlock
		}
		hdr.Devmajor = int64(unix.Major(st.Rdev))
		hdr.Devminor = int64(unix.Minor(st.Rdev))
		return lw.header(hdr)
	default: // socket
		return nil
	}
}

// file writes a regular file, or a hard link to the name its inode was first
// written under.
func (lw *layerWriter) file(hdr *tar.Header, full string, st *unix.Stat_t) error {
	if st.Nlink > 1 {
		id := fileID{dev: st.Dev, ino: st.Ino}
		if first, ok := lw.links[id]; ok {
			hdr.Typeflag = tar.TypeLink
			hdr.Linkname = first
			return lw.header(hdr)
		}
		lw.links[id] = hdr.Name
	}
	src := full
	if _, ok, err := overlayXattr(full, xattrMetacopy); err != nil {
		return err
	} else if ok {
		if src, err = lw.metacopyData(full, "/"+hdr.Name); err != nil {
			return err
		}
	}
	f, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("open file: %w", err)
	}
	defer f.Close()
	var fst unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &fst); err != nil {
		return fmt.Errorf("stat file: %w", err)
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = fst.Size
	if err := lw.header(hdr); err != nil {
		return err
	}
	if _, err := io.CopyN(lw.tw, f, hdr.Size); err != nil {
		return fmt.Errorf("write /%s: %w", hdr.Name, err)
	}
	return nil
}

// metacopyData returns the lower file that holds the data of a
// metadata-only copy-up at p: the file the lower layers have at p, found
// through real directories only, as overlayfs does.
func (lw *layerWriter) metacopyData(full, p string) (string, error) {
	if _, ok, err := overlayXattr(full, xattrRedirect); err != nil || ok {
		return "", errors.Join(err, fmt.Errorf("write %s: %w: redirected metadata-only copy-up (mount the overlay with metacopy=off)", p, volume.ErrNotSupported))
	}
	s := stack(lw.lowers)
	dir, name := path.Split(p)
	for _, c := range strings.Split(strings.Trim(dir, "/"), "/") {
		if c == "" {
			continue
		}
		var err error
		if s, err = s.child(c); err != nil {
			return "", err
		}
	}
	src, st, err := s.entry(name)
	if err != nil {
		return "", err
	}
	if st == nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("write %s: %w: metadata-only copy-up without a file in a lower layer", p, volume.ErrNotFound)
	}
	return src, nil
}

// xattrs adds the extended attributes of full, except overlayfs's own, to
// hdr as PAX records.
func (lw *layerWriter) xattrs(full string, hdr *tar.Header) error {
	names, err := listxattr(full)
	if err != nil {
		return fmt.Errorf("list xattrs of %s: %w", full, err)
	}
	for _, name := range names {
		if isOverlayXattr(name) {
			continue
		}
		v, err := getxattr(full, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return fmt.Errorf("read xattr %s of %s: %w", name, full, err)
		}
		if hdr.PAXRecords == nil {
			hdr.PAXRecords = make(map[string]string)
		}
		hdr.PAXRecords["SCHILY.xattr."+name] = string(v)
	}
	return nil
}

func (lw *layerWriter) header(hdr *tar.Header) error {
	if err := lw.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write header of /%s: %w", hdr.Name, err)
	}
	return nil
}
