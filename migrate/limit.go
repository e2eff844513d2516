package migrate

import (
	"context"
	"hash"
	"io"
	"sync"
	"time"
)

// limiter paces reads to a rate in bytes per second, shared by every file
// in flight.
type limiter struct {
	rate int64
	mu   sync.Mutex // guards next
	next time.Time
}

// wait blocks until n more bytes fit the rate, or ctx is done.
func (l *limiter) wait(ctx context.Context, n int) error {
	if l == nil || l.rate <= 0 {
		return nil
	}
	l.mu.Lock()
	now := time.Now()
	if l.next.Before(now) {
		l.next = now
	}
	at := l.next
	l.next = l.next.Add(time.Duration(float64(n) / float64(l.rate) * float64(time.Second)))
	l.mu.Unlock()
	d := time.Until(at)
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// meteredReader reads a section of a file, counts the bytes and keeps to
// the limiter. It has Size, so that sftp's ReadFrom pipelines its writes.
type meteredReader struct {
	ctx   context.Context
	r     *io.SectionReader
	count func(int)
	lim   *limiter
	// h, when set, sees every byte read.
	h hash.Hash
}

func (m *meteredReader) Size() int64 { return m.r.Size() }

func (m *meteredReader) Read(p []byte) (int, error) {
	if err := m.lim.wait(m.ctx, len(p)); err != nil {
		return 0, err
	}
	n, err := m.r.Read(p)
	m.count(n)
	if m.h != nil {
		m.h.Write(p[:n])
	}
	return n, err
}
