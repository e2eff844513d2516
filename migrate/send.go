package migrate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sync/errgroup"

	"github.com/stowage/stowage/migrate/agent"
	"github.com/stowage/stowage/migrate/manifest"
	"github.com/stowage/stowage/migrate/plan"
)

// execute carries out p: removals, entries, file content (several files in
// flight over SFTP, committed in batches), hard links, directories.
func (r *run) execute(ctx context.Context, p *plan.Plan, m *meter) error {
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
		if err := r.send(ctx, p.Send, m); err != nil {
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
// keeps what it finished.
func (r *run) send(ctx context.Context, files []manifest.Entry, m *meter) error {
	g, gctx := errgroup.WithContext(ctx)
	work := make(chan int)
	done := make(chan agent.Commit)
	g.Go(func() error {
		defer close(work)
		for i := range files {
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
				if e := &files[i]; e.Size <= inlineMax && e.Blocks*512 >= e.Size {
					c.Inline = true
					c.Data, sent, err = r.readSmall(gctx, &files[i], m)
				} else {
					sent, err = r.sendFile(gctx, &files[i], c.Temp, m)
				}
				if err != nil {
					return err
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
	g.Go(func() error {
		var batch []agent.Commit
		inline := 0
		for c := range done {
			batch = append(batch, c)
			inline += len(c.Data)
			if len(batch) >= commitBatch || inline >= inlineBatch {
				if err := r.agent.Commit(batch); err != nil {
					return err
				}
				batch, inline = batch[:0], 0
			}
		}
		if gctx.Err() != nil {
			return gctx.Err()
		}
		return r.agent.Commit(batch)
	})
	return g.Wait()
}

// Small files go inline with their commit, in batches of up to inlineBatch
// bytes.
const (
	inlineMax   = 64 << 10
	inlineBatch = 4 << 20
)

// readSmall reads a small source file for an inline commit. A file that
// vanished since the walk is skipped.
func (r *run) readSmall(ctx context.Context, e *manifest.Entry, m *meter) ([]byte, bool, error) {
	f, err := os.Open(r.srcRoot + "/" + e.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("open source file: %w", err)
	}
	defer f.Close()
	// The commit sets the manifest's size; reading one byte more tells
	// nothing new, so a file that grew is cut and caught by the next round.
	data, err := io.ReadAll(io.LimitReader(f, e.Size))
	if err != nil {
		return nil, false, fmt.Errorf("read %s: %w", manifest.Quote(e.Path), err)
	}
	if err := r.lim.wait(ctx, len(data)); err != nil {
		return nil, false, err
	}
	m.bytes.Add(int64(len(data)))
	return data, true, nil
}

// sendFile writes the data regions of one source file to temp on the
// target; holes are left out (the commit sets the size). A file that
// vanished since the walk is skipped: the next round removes it.
func (r *run) sendFile(ctx context.Context, e *manifest.Entry, temp string, m *meter) (bool, error) {
	f, err := os.Open(r.srcRoot + "/" + e.Path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("open source file: %w", err)
	}
	defer f.Close()
	extents, err := manifest.Extents(f, e.Size)
	if err != nil {
		return false, err
	}
	dst := r.agent.TempPath + "/" + temp
	out, err := r.sftp.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC)
	if err != nil {
		return false, fmt.Errorf("send %s: create %s on the target: %w", manifest.Quote(e.Path), dst, err)
	}
	for _, x := range extents {
		if _, err := out.Seek(x[0], io.SeekStart); err != nil {
			out.Close()
			return false, fmt.Errorf("send %s: %w", manifest.Quote(e.Path), err)
		}
		in := &meteredReader{ctx: ctx, r: io.NewSectionReader(f, x[0], x[1]), lim: r.lim,
			count: func(n int) { m.bytes.Add(int64(n)) }}
		if _, err := out.ReadFrom(in); err != nil {
			out.Close()
			return false, fmt.Errorf("send %s: %w", manifest.Quote(e.Path), err)
		}
	}
	if err := out.Close(); err != nil {
		return false, fmt.Errorf("send %s: %w", manifest.Quote(e.Path), err)
	}
	return true, nil
}
