package agent

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/stowage/stowage/migrate/manifest"
)

// Delta transfer of a large file whose target copy differs: the agent copies
// the target's file to a temporary name (a reflink where the file system
// can, an in-kernel copy otherwise) and answers a strong checksum of each
// fixed-size block of it; the sender writes over SFTP only the blocks whose
// checksum differs from its own, and commits the temporary file as usual.
// Fixed blocks fit the change that matters while a volume is in use: data
// rewritten in place (databases, images); an insertion shifts the rest of
// the file and sends it whole.

// SumSize is the length of one block checksum: a SHA-256 cut to 128 bits.
const SumSize = 16

// Block sizes: the square root of the file size (as rsync picks), rounded
// to a multiple of MinBlock, within [MinBlock, MaxBlock].
const (
	MinBlock = 4 << 10
	MaxBlock = 1 << 20
)

// BlockSize returns the delta block size for a file of size bytes.
func BlockSize(size int64) int {
	b := int64(MinBlock)
	for b*b < size && b < MaxBlock {
		b *= 2
	}
	return int(b)
}

// copyChunk is how much of a file one read takes (a multiple of every
// block size).
const copyChunk = 4 << 20

// BlockSum returns the checksum of one block.
func BlockSum(b []byte) [SumSize]byte {
	s := sha256.Sum256(b)
	return [SumSize]byte(s[:SumSize])
}

// blocks copies the target file path to the temporary file temp and returns
// the checksums of temp's blocks of size bs, concatenated.
func (s *server) blocks(path, temp string, bs int) ([]byte, error) {
	if err := checkPath(path); err != nil {
		return nil, err
	}
	if temp == "" || filepath.Base(temp) != temp || temp == "." || temp == ".." {
		return nil, fmt.Errorf("blocks %s: invalid temporary name %q", manifest.Quote(path), temp)
	}
	if bs < MinBlock || bs > MaxBlock {
		return nil, fmt.Errorf("blocks %s: block size %d out of range [%d, %d]", manifest.Quote(path), bs, MinBlock, MaxBlock)
	}
	src, err := os.Open(s.abs(path))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", manifest.Quote(path), err)
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil {
		return nil, fmt.Errorf("stat %s: %w", manifest.Quote(path), err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("blocks %s: not a regular file", manifest.Quote(path))
	}
	tmp := filepath.Join(s.temp(), temp)
	dst, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("blocks %s: %w", manifest.Quote(path), err)
	}
	ok := false
	defer func() {
		dst.Close()
		if !ok {
			os.Remove(tmp)
		}
	}()
	// One read of the target's file gives the checksums and, where the
	// file system cannot share blocks, the copy.
	cloned := cloneFile(dst, src) == nil
	var sums []byte
	buf := make([]byte, max(bs, copyChunk))
	for {
		n, err := io.ReadFull(src, buf)
		if n > 0 {
			for b := 0; b < n; b += bs {
				sum := BlockSum(buf[b:min(b+bs, n)])
				sums = append(sums, sum[:]...)
			}
			if !cloned {
				if _, err := dst.Write(buf[:n]); err != nil {
					return nil, fmt.Errorf("copy %s to a temporary file: %w", manifest.Quote(path), err)
				}
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", manifest.Quote(path), err)
		}
	}
	ok = true
	return sums, nil
}
