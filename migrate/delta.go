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
	"sync"

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

// sendDelta has the agent answer the block checksums of the target's file
// at e's path (have in the target's manifest), then writes over SFTP only
// the blocks of the source that differ: into the target's file itself when
// the agent grants it (then c.InPlace is set for the commit), otherwise
// into c.Temp, which the agent made a copy of that file. It reports
// ok=false when the target's copy cannot be used (the caller then sends
// the whole file) and sent=false when the source vanished; sum is the hash
// of the source as read, when it did not change since the walk.
//
// The source's checksums come from the read that hashed it in this round
// when they were kept (manifest.Entry.BlockSums); they hold as long as the
// file is as the walk saw it, which the end checks (unchanged): a file
// changed meanwhile is committed without a hash, and the next round finds
// it differs.
func (r *run) sendDelta(ctx context.Context, e, have *manifest.Entry, c *agent.Commit, m *meter) (sent, ok bool, sum string, err error) {
	f, err := os.Open(r.srcRoot + "/" + e.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, true, "", nil
	}
	if err != nil {
		return false, true, "", fmt.Errorf("open source file: %w", err)
	}
	defer f.Close()
	bs := manifest.BlockSize(e.Size)
	// This side's checksums are computed, where not kept, while the target
	// answers its.
	type local struct {
		sums []byte
		sum  string
		err  error
	}
	lc := make(chan local, 1)
	if kept := e.BlockSums(); e.SHA256 != "" && kept != nil {
		lc <- local{kept, e.SHA256, nil}
	} else {
		go func() {
			sums, sum, err := fileSums(ctx, f, e.Size, bs)
			lc <- local{sums, sum, err}
		}()
	}
	theirs, inPlace, err := r.agent.Blocks(e.Path, c.Temp, bs, e.Size, have.Size == e.Size && have.LinkTo == "")
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
	dst := r.agent.TempPath + "/" + c.Temp
	if inPlace {
		dst, c.InPlace = r.dstRoot+"/"+e.Path, true
	}
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
	const k = manifest.SumSize
	nblocks := len(mine.sums) / k
	for i := 0; i <= nblocks; i++ {
		off := int64(i) * int64(bs)
		same := false
		if i < nblocks {
			a := mine.sums[i*k : (i+1)*k]
			same = (i+1)*k <= len(theirs) && bytes.Equal(a, theirs[i*k:(i+1)*k])
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
	h := sha256.New()
	sums, n, err := manifest.ReadBlockSums(ctx, io.NewSectionReader(f, 0, size), bs, h)
	if err != nil || n < size {
		return sums, "", err // the file shrank
	}
	return sums, hex.EncodeToString(h.Sum(nil)), nil
}

// unchanged reports whether the source file of e is still as the walk saw
// it (same inode, size, mtime and ctime).
func (r *run) unchanged(e *manifest.Entry) bool {
	have, _, err := manifest.Stat(r.srcRoot+"/"+e.Path, e.Path)
	return err == nil && have.Ino == e.Ino && have.Size == e.Size && have.MtimeNS == e.MtimeNS && have.CtimeNS == e.CtimeNS
}

// aheadHasher hashes, while the target walks, the source's files that go by
// delta if the target has them in the same size: their hashes tell whether
// they differ, and the block checksums taken in the same read serve the
// delta. Without it the source would read them only once the target's
// manifest is known, after the target's own hashing.
type aheadHasher struct {
	// cancel abandons the file in hand.
	cancel context.CancelFunc
	done   chan struct{}
	// mu guards need and cur.
	mu sync.Mutex
	// need is set by stop; cur is the file in hand.
	need func(*manifest.Entry) bool
	cur  *manifest.Entry
}

// hashAhead starts hashing the files of m (the source's lazy manifest) that
// fit a delta transfer and have no hash, one at a time, in path order.
func (r *run) hashAhead(ctx context.Context, m *manifest.Manifest) *aheadHasher {
	hctx, cancel := context.WithCancel(ctx)
	a := &aheadHasher{cancel: cancel, done: make(chan struct{})}
	var todo []*manifest.Entry
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type == manifest.Regular && e.LinkTo == "" && e.SHA256 == "" && e.Size >= deltaMin && e.Blocks*512 >= e.Size {
			todo = append(todo, e)
		}
	}
	go func() {
		defer close(a.done)
		for _, e := range todo {
			a.mu.Lock()
			stopped := a.need != nil
			a.cur = e
			a.mu.Unlock()
			if stopped {
				return
			}
			// A file that cannot be hashed now (removed since the walk,
			// say) is left to HashWhere, which reports the error if the
			// file needs its hash; the next one is hashed all the same.
			if err := m.HashEntry(hctx, r.srcRoot, e); err != nil && hctx.Err() != nil {
				return
			}
		}
	}()
	return a
}

// stop ends the hashing once the target's manifest is known: the file in
// hand is finished if need says it needs its hash and abandoned otherwise,
// and no other file is started. It returns when the hashing has ended.
func (a *aheadHasher) stop(need func(*manifest.Entry) bool) {
	a.mu.Lock()
	a.need = need
	if a.cur != nil && !need(a.cur) {
		a.cancel()
	}
	a.mu.Unlock()
	<-a.done
	a.cancel()
}
