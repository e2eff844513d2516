package manifest

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"sync/atomic"

	"github.com/cespare/xxhash/v2"
)

// Block checksums for delta transfer: the reads that hash a large file also
// take a checksum of each of its fixed-size blocks, and keep them with the
// hash (Entry.BlockSums) under the same inode facts, so that a delta
// transfer of the file later needs no read of it to know its blocks. A
// block checksum only finds blocks that need not be sent: the content hash
// (SHA-256 of the whole file) that each side takes by itself decides
// whether the copy is right, so a checksum collision cannot leave a wrong
// file unnoticed.

// SumSize is the length of one block checksum (an XXH64 of the block, big
// endian).
const SumSize = 8

// Block sizes: the square root of the file size (as rsync picks), a power
// of two within [MinBlock, MaxBlock].
const (
	MinBlock = 4 << 10
	MaxBlock = 1 << 20
)

// SumsMin is the size from which hashing a file keeps its block checksums.
const SumsMin = 1 << 20

// MaxSums bounds the block checksums that one walk (or HashWhere) keeps, in
// bytes: beyond it a delta transfer reads the file as it would without.
const MaxSums = 64 << 20

// hashChunk is how much of a file one read takes (a multiple of every block
// size).
const hashChunk = 4 << 20

// chunkBufs holds the read buffers of ReadBlockSums: a walk hashes many
// files of a few MiB.
var chunkBufs = sync.Pool{New: func() any { return new([hashChunk]byte) }}

// BlockSize returns the block size of a file of size bytes.
func BlockSize(size int64) int {
	b := int64(MinBlock)
	for b*b < size && b < MaxBlock {
		b *= 2
	}
	return int(b)
}

// SumsLen returns the length of the block checksums of a file of size
// bytes.
func SumsLen(size int64) int64 {
	bs := int64(BlockSize(size))
	return (size + bs - 1) / bs * SumSize
}

// AppendBlockSums appends to dst the checksums of b cut in blocks of bs
// bytes (the last one may be shorter).
func AppendBlockSums(dst, b []byte, bs int) []byte {
	for off := 0; off < len(b); off += bs {
		dst = binary.BigEndian.AppendUint64(dst, xxhash.Sum64(b[off:min(off+bs, len(b))]))
	}
	return dst
}

// BlockSums returns the checksums of the blocks (of BlockSize(Size) bytes)
// of the content that SHA256 is the hash of, taken in the same read; nil
// when they were not kept.
func (e *Entry) BlockSums() []byte {
	if int64(len(e.sums)) != SumsLen(e.Size) {
		return nil // of other content than the entry's size says
	}
	return e.sums
}

// sumsBudget is what is left of MaxSums.
type sumsBudget struct{ left atomic.Int64 }

func newSumsBudget() *sumsBudget {
	b := &sumsBudget{}
	b.left.Store(MaxSums)
	return b
}

// take reserves the checksums of a file of size bytes and reports whether
// they are to be kept.
func (b *sumsBudget) take(size int64) bool {
	if b == nil || size < SumsMin {
		return false
	}
	n := SumsLen(size)
	if b.left.Add(-n) < 0 {
		b.left.Add(n)
		return false
	}
	return true
}

// give returns the checksums of a file of size bytes that take reserved
// and that were not kept.
func (b *sumsBudget) give(size int64) { b.left.Add(SumsLen(size)) }

// hashFile returns the hex SHA-256 of the file at path and, when budget
// has room for them and the file has size bytes, the checksums of its
// blocks, all from one read; checksums not kept go back to budget (nil:
// none are kept). ctx stops it between reads.
func hashFile(ctx context.Context, path string, size int64, budget *sumsBudget) (_ string, _ []byte, err error) {
	if !budget.take(size) {
		// Without block checksums: fewer system calls and no buffer per
		// file, which a walk of many small files feels.
		sum, err := hashWhole(ctx, path)
		return sum, nil, err
	}
	var out []byte
	defer func() {
		if out == nil {
			budget.give(size)
		}
	}()
	f, err := os.Open(path)
	if err != nil {
		return "", nil, fmt.Errorf("hash file: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	out, n, err := ReadBlockSums(ctx, f, BlockSize(size), h)
	if err != nil {
		out = nil
		return "", nil, fmt.Errorf("hash %s: %w", Quote(path), err)
	}
	if n != size {
		out = nil // changed while read: the next walk sees other facts
	}
	return hex.EncodeToString(h.Sum(nil)), out, nil
}

// ReadBlockSums reads r to its end and returns the checksums of its blocks
// of bs bytes and the number of bytes read; h, unless nil, sees every
// byte. ctx stops it between reads.
func ReadBlockSums(ctx context.Context, r io.Reader, bs int, h hash.Hash) ([]byte, int64, error) {
	var sums []byte
	chunk := chunkBufs.Get().(*[hashChunk]byte)
	defer chunkBufs.Put(chunk)
	buf := chunk[:]
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return nil, n, err
		}
		k, err := io.ReadFull(r, buf)
		if h != nil {
			h.Write(buf[:k])
		}
		sums = AppendBlockSums(sums, buf[:k], bs)
		n += int64(k)
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return sums, n, nil
		}
		if err != nil {
			return nil, n, err
		}
	}
}

// sumsBudget returns what is left of m's MaxSums.
func (m *Manifest) sumsBudget() *sumsBudget {
	if m.budget == nil {
		m.budget = newSumsBudget()
	}
	return m.budget
}

// HashEntry hashes the regular file e, one of m's entries and the first
// path of its inode, in the tree at root, keeping its block checksums
// within m's budget. ctx abandons it between reads. The other paths of
// e's inode get the hash from HashWhere.
func (m *Manifest) HashEntry(ctx context.Context, root string, e *Entry) error {
	sum, sums, err := hashFile(ctx, root+"/"+e.Path, e.Size, m.sumsBudget())
	if err != nil {
		return err
	}
	e.SHA256, e.sums = sum, sums
	m.Hashed += e.Size
	return nil
}
