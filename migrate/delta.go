package migrate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/stowage/stowage/migrate/agent"
	"github.com/stowage/stowage/migrate/manifest"
)

// deltaMin is the size from which a changed file whose target copy exists
// goes by delta transfer.
const deltaMin = 1 << 20

// deltaChunk is how much of the source one read takes (a multiple of every
// block size).
const deltaChunk = 4 << 20

// deltaFits reports whether e, with have at its path on the target, goes by
// delta: a large file without holes (holes are kept by writing data regions
// only) over a regular file.
func deltaFits(e, have *manifest.Entry) bool {
	return have != nil && have.Type == manifest.Regular && have.Size > 0 &&
		e.Size >= deltaMin && e.Blocks*512 >= e.Size
}

// sendDelta has the agent copy the target's file at e's path to temp and
// answer its block checksums, then writes over SFTP only the blocks of the
// source that differ. It reports ok=false when the target's copy cannot be
// used (the caller then sends the whole file) and sent=false when the
// source vanished; sum is the hash of the source as read, when it did not
// change while it was read.
func (r *run) sendDelta(ctx context.Context, e *manifest.Entry, temp string, m *meter) (sent, ok bool, sum string, err error) {
	f, err := os.Open(r.srcRoot + "/" + e.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, true, "", nil
	}
	if err != nil {
		return false, true, "", fmt.Errorf("open source file: %w", err)
	}
	defer f.Close()
	bs := agent.BlockSize(e.Size)
	// This side's checksums are computed while the target computes its.
	type local struct {
		sums []byte
		sum  string
		err  error
	}
	lc := make(chan local, 1)
	go func() {
		sums, sum, err := fileSums(ctx, f, e.Size, bs)
		lc <- local{sums, sum, err}
	}()
	theirs, err := r.agent.Blocks(e.Path, temp, bs)
	mine := <-lc
	if errors.Is(err, agent.ErrAgent) {
		r.opts.Log.Debug("delta transfer not possible, sending the whole file", "path", e.Path, "error", err)
		return false, false, "", nil
	}
	if err != nil {
		return false, true, "", err
	}
	if mine.err != nil {
		return false, true, "", fmt.Errorf("read %s: %w", manifest.Quote(e.Path), mine.err)
	}
	m.sums.Add(int64(len(theirs)))
	dst := r.agent.TempPath + "/" + temp
	out, err := r.sftp.OpenFile(dst, os.O_WRONLY)
	if err != nil {
		return false, true, "", fmt.Errorf("send %s: open %s on the target: %w", manifest.Quote(e.Path), dst, err)
	}
	// Runs of consecutive changed blocks go in writes of up to deltaChunk.
	buf := make([]byte, deltaChunk)
	send := func(off, end int64) error {
		for off < end {
			n := min(end-off, deltaChunk)
			got, err := f.ReadAt(buf[:n], off)
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			if got == 0 {
				return nil // the file shrank: the commit sets the size
			}
			if err := r.lim.wait(ctx, got); err != nil {
				return err
			}
			if _, err := out.WriteAt(buf[:got], off); err != nil {
				return err
			}
			m.bytes.Add(int64(got))
			off += int64(got)
		}
		return nil
	}
	runStart := int64(-1)
	nblocks := len(mine.sums) / agent.SumSize
	for i := 0; i <= nblocks; i++ {
		off := int64(i) * int64(bs)
		same := false
		if i < nblocks {
			a := mine.sums[i*agent.SumSize : (i+1)*agent.SumSize]
			same = (i+1)*agent.SumSize <= len(theirs) && bytes.Equal(a, theirs[i*agent.SumSize:(i+1)*agent.SumSize])
			if same {
				m.matched.Add(min(int64(bs), e.Size-off))
			}
		}
		switch {
		case i < nblocks && !same && runStart < 0:
			runStart = off
		case (same || i == nblocks) && runStart >= 0:
			if err := send(runStart, min(off, e.Size)); err != nil {
				out.Close()
				return false, true, "", fmt.Errorf("send %s: %w", manifest.Quote(e.Path), err)
			}
			runStart = -1
		}
	}
	if err := out.Close(); err != nil {
		return false, true, "", fmt.Errorf("send %s: %w", manifest.Quote(e.Path), err)
	}
	if !r.unchanged(e) {
		mine.sum = ""
	}
	return true, true, mine.sum, nil
}

// fileSums returns the block checksums of the first size bytes of f and,
// when f had size bytes, their hash.
func fileSums(ctx context.Context, f *os.File, size int64, bs int) ([]byte, string, error) {
	buf := make([]byte, deltaChunk)
	sums := make([]byte, 0, (size+int64(bs)-1)/int64(bs)*agent.SumSize)
	h := sha256.New()
	for off := int64(0); off < size; off += deltaChunk {
		if err := ctx.Err(); err != nil {
			return nil, "", err
		}
		n, err := f.ReadAt(buf[:min(deltaChunk, size-off)], off)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, "", err
		}
		h.Write(buf[:n])
		for b := 0; b < n; b += bs {
			sum := agent.BlockSum(buf[b:min(b+bs, n)])
			sums = append(sums, sum[:]...)
		}
		if int64(n) < min(deltaChunk, size-off) {
			return sums, "", nil // the file shrank
		}
	}
	return sums, hex.EncodeToString(h.Sum(nil)), nil
}

// unchanged reports whether the source file of e is still as the walk saw
// it (same inode, size, mtime and ctime).
func (r *run) unchanged(e *manifest.Entry) bool {
	have, _, err := manifest.Stat(r.srcRoot+"/"+e.Path, e.Path)
	return err == nil && have.Ino == e.Ino && have.Size == e.Size && have.MtimeNS == e.MtimeNS && have.CtimeNS == e.CtimeNS
}
