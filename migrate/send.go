package migrate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strconv"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/stowage/stowage/migrate/agent"
	"github.com/stowage/stowage/migrate/manifest"
	"github.com/stowage/stowage/migrate/plan"
)

// execute carries out p: removals, entries, file content (several files in
// flight over SFTP, committed in batches), hard links, directories.
// Hashes computed while sending go into the source's entries (src).
func (r *run) execute(ctx context.Context, p *plan.Plan, dst, src map[string]*manifest.Entry, m *meter) error {
	if err := r.agent.Remove(p.Remove); err != nil {
		return err
	}
	if err := r.agent.Apply(p.Apply); err != nil {
		return err
	}
	if len(p.Send) > 0 {
		if err := r.agent.Prepare(); err != nil {
			return err
		}
		if err := r.send(ctx, p.Send, dst, src, m); err != nil {
			return err
		}
	}
	if err := r.agent.Link(p.Link); err != nil {
		return err
	}
	return r.agent.Finish(p.Finish)
}

// send copies the content of files to temporary names on the target and
// commits them in batches as they complete, so that an interrupted round
// keeps what it finished. A large file that the target has in another
// version (dst) goes by delta.
func (r *run) send(ctx context.Context, files []manifest.Entry, dst, src map[string]*manifest.Entry, m *meter) error {
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan int)
	// Senders read ahead while the agent commits a batch.
	done := make(chan agent.Commit, commitBatch)
	g.Go(func() error {
		defer close(work)
		for _, i := range acrossDirs(files) {
			select {
			case work <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	var senders sync.WaitGroup
	for range r.opts.Workers {
		senders.Add(1)
		g.Go(func() error {
			defer senders.Done()
			for i := range work {
				c := agent.Commit{Temp: "f" + strconv.Itoa(i), Entry: files[i]}
				var sent bool
				var err error
				// A small file without holes goes inline.
				e := &files[i]
				// sum is the hash of what was read, "" when unknown.
				var sum string
				if e.Size <= inlineMax && e.Blocks*512 >= e.Size {
					c.Inline = true
					c.Data, sent, err = r.readSmall(gctx, &files[i], m)
					if int64(len(c.Data)) == e.Size {
						h := sha256.Sum256(c.Data)
						sum = hex.EncodeToString(h[:])
					}
				} else {
					delta := false
					if deltaFits(e, dst[e.Path]) {
						sent, delta, sum, err = r.sendDelta(gctx, e, dst[e.Path], &c, m)
					}
					if err == nil && !delta {
						sent, sum, err = r.sendFile(gctx, e, c.Temp, m)
					}
				}
				if err != nil {
					return err
				}
				if sent && sum != "" && (e.SHA256 == "" || e.SHA256 == sum) {
					// The hash of what was read, with the facts of the
					// walk: a change since shows in the next walk's
					// facts. What the target got is what was read, so
					// it keeps the hash too.
					c.Entry.SHA256, c.Hashed = sum, true
					if s := src[e.Path]; s != nil {
						s.SHA256, s.HashedAt = sum, r.walkAt
					}
				}
				m.files.Add(1)
				if !sent {
					continue
				}
				select {
				case done <- c:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	go func() {
		senders.Wait()
		close(done)
	}()
	// Batches are sent while the agent still commits earlier ones, so
	// that it never waits for the next: at most commitsAhead+2 requests
	// are unanswered (commitsAhead queued here, one whose answer is read,
	// one sent and waiting for a place in the queue), each holding its
	// batch's data.
	pending := make(chan func() error, commitsAhead)
	g.Go(func() error {
		for wait := range pending {
			if err := wait(); err != nil {
				// Every answer is read all the same: later requests
				// wait for their turn.
				go func() {
					for wait := range pending {
						_ = wait()
					}
				}()
				return err
			}
		}
		return nil
	})
	g.Go(func() error {
		defer close(pending)
		var batch []agent.Commit
		inline := 0
		for c := range done {
			batch = append(batch, c)
			inline += len(c.Data)
			if len(batch) >= commitBatch || inline >= inlineBatch {
				if err := gctx.Err(); err != nil {
					return err
				}
				pending <- r.agent.CommitAsync(batch)
				batch, inline = nil, 0
			}
		}
		if gctx.Err() != nil {
			return gctx.Err()
		}
		pending <- r.agent.CommitAsync(batch)
		return nil
	})
	return g.Wait()
}

// Small files go inline with their commit, in batches of up to inlineBatch
// bytes; commitsAhead commit requests may wait for their answers.
const (
	inlineMax    = 64 << 10
	inlineBatch  = 4 << 20
	commitsAhead = 2
)

// readSmall reads a small source file for an inline commit. A file that
// vanished since the walk is skipped.
func (r *run) readSmall(ctx context.Context, e *manifest.Entry, m *meter) ([]byte, bool, error) {
	// The commit sets the manifest's size; reading one byte more tells
	// nothing new, so a file that grew is cut and caught by the next round.
	data, err := readHead(r.srcRoot+"/"+e.Path, e.Size)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read source file %s: %w", manifest.Quote(e.Path), err)
	}
	if err := r.lim.wait(ctx, len(data)); err != nil {
		return nil, false, err
	}
	m.bytes.Add(int64(len(data)))
	return data, true, nil
}

// sendFile writes the data regions of one source file to temp on the
// target; holes are left out (the commit sets the size). It returns the
// hash of the content the target then has (what was read, zeros
// elsewhere). A file that vanished since the walk is skipped: the next
// round removes it.
func (r *run) sendFile(ctx context.Context, e *manifest.Entry, temp string, m *meter) (bool, string, error) {
	f, err := os.Open(r.srcRoot + "/" + e.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("open source file: %w", err)
	}
	defer f.Close()
	extents, err := manifest.Extents(f, e.Size)
	if err != nil {
		return false, "", err
	}
	dst := r.agent.TempPath + "/" + temp
	out, err := r.sftp.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return false, "", fmt.Errorf("send %s: create %s on the target: %w", manifest.Quote(e.Path), dst, err)
	}
	h := sha256.New()
	pos := int64(0) // what h has seen
	for _, x := range extents {
		if _, err := out.Seek(x[0], io.SeekStart); err != nil {
			out.Close()
			return false, "", fmt.Errorf("send %s: %w", manifest.Quote(e.Path), err)
		}
		hashZeros(h, x[0]-pos)
		in := &meteredReader{ctx: ctx, r: io.NewSectionReader(f, x[0], x[1]), lim: r.lim, h: h,
			count: func(n int) { m.bytes.Add(int64(n)) }}
		n, err := out.ReadFrom(in)
		if err != nil {
			out.Close()
			return false, "", fmt.Errorf("send %s: %w", manifest.Quote(e.Path), err)
		}
		pos = x[0] + n
	}
	if err := out.Close(); err != nil {
		return false, "", fmt.Errorf("send %s: %w", manifest.Quote(e.Path), err)
	}
	if pos > e.Size {
		return true, "", nil
	}
	hashZeros(h, e.Size-pos)
	return true, hex.EncodeToString(h.Sum(nil)), nil
}

var zeros [1 << 20]byte

// hashZeros writes n zero bytes to h.
func hashZeros(h hash.Hash, n int64) {
	for n > 0 {
		k := min(n, int64(len(zeros)))
		h.Write(zeros[:k])
		n -= k
	}
}

// acrossDirs returns the indices of files taking one of each directory's
// in turn: the target creates the files of a commit request several at a
// time, and those in one directory wait for each other on its lock.
func acrossDirs(files []manifest.Entry) []int {
	var dirs [][]int
	at := map[string]int{}
	for i := range files {
		d := path.Dir(files[i].Path)
		k, ok := at[d]
		if !ok {
			k = len(dirs)
			at[d] = k
			dirs = append(dirs, nil)
		}
		dirs[k] = append(dirs[k], i)
	}
	out := make([]int, 0, len(files))
	for len(dirs) > 0 {
		for k, d := range dirs {
			out = append(out, d[0])
			dirs[k] = d[1:]
		}
		// An emptied directory leaves the rotation: one large directory
		// among many small ones costs no pass over them all per file.
		dirs = slices.DeleteFunc(dirs, func(d []int) bool { return len(d) == 0 })
	}
	return out
}
