package agent

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/migrate/manifest"
)

// blocks answers the checksums of the blocks of bs bytes of the target file
// path, and whether the sender is to patch the file in place: when inPlace
// is asked and the file is a regular file with one link and size bytes.
// Otherwise the file is copied to the temporary file temp and the
// checksums are those of the copy.
func (s *server) blocks(ctx context.Context, path, temp string, bs int, inPlace bool, size int64) ([]byte, bool, error) {
	if err := checkPath(path); err != nil {
		return nil, false, err
	}
	if bs < manifest.MinBlock || bs > manifest.MaxBlock {
		return nil, false, fmt.Errorf("blocks %s: block size %d out of range [%d, %d]", manifest.Quote(path), bs, manifest.MinBlock, manifest.MaxBlock)
	}
	// Not through a symlink: a patch in place would write where it points.
	src, err := os.OpenFile(s.abs(path), os.O_RDONLY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, false, fmt.Errorf("open %s: %w", manifest.Quote(path), err)
	}
	defer src.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return nil, false, fmt.Errorf("stat %s: %w", manifest.Quote(path), err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil, false, fmt.Errorf("blocks %s: not a regular file", manifest.Quote(path))
	}
	sums := s.cachedSums(path, &st, bs)
	if inPlace && st.Nlink == 1 && st.Size == size {
		// From here on the file may change under the sender's writes.
		s.forget(path)
		if sums == nil {
			if sums, _, err = manifest.ReadBlockSums(ctx, src, bs, nil); err != nil {
				return nil, false, fmt.Errorf("read %s: %w", manifest.Quote(path), err)
			}
		}
		return sums, true, nil
	}
	if temp == "" || filepath.Base(temp) != temp || temp == "." || temp == ".." {
		return nil, false, fmt.Errorf("blocks %s: invalid temporary name %q", manifest.Quote(path), temp)
	}
	tmp := filepath.Join(s.temp(), temp)
	dst, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, false, fmt.Errorf("blocks %s: %w", manifest.Quote(path), err)
	}
	ok := false
	defer func() {
		dst.Close()
		if !ok {
			os.Remove(tmp)
		}
	}()
	switch {
	case cloneFile(dst, src) == nil:
		if sums == nil {
			sums, _, err = manifest.ReadBlockSums(ctx, src, bs, nil)
		}
	case sums != nil:
		// An in-kernel copy (copy_file_range): nothing to read here.
		_, err = io.Copy(dst, src)
	default:
		// One read gives the checksums and the copy.
		sums, _, err = manifest.ReadBlockSums(ctx, io.TeeReader(src, dst), bs, nil)
	}
	if err != nil {
		return nil, false, fmt.Errorf("copy %s to a temporary file: %w", manifest.Quote(path), err)
	}
	ok = true
	return sums, false, nil
}

// cachedSums returns the block checksums of bs bytes that this agent's
// walks kept for path with its hash, when st shows the file as it was
// then; nil otherwise.
func (s *server) cachedSums(path string, st *unix.Stat_t, bs int) []byte {
	e := s.cachedEntry(path)
	if e == nil || e.SHA256 == "" || e.Ino != st.Ino || e.Size != st.Size || e.MtimeNS != st.Mtim.Nano() ||
		e.CtimeNS != st.Ctim.Nano() || manifest.BlockSize(e.Size) != bs {
		return nil
	}
	return e.BlockSums()
}

// cloneFile makes dst share src's blocks (FICLONE), where the file system
// can.
func cloneFile(dst, src *os.File) error {
	return unix.IoctlFileClone(int(dst.Fd()), int(src.Fd()))
}
