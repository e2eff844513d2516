package manager

import (
	"context"
	"sync"
)

// keyedLock is a set of mutexes, one per key, whose Lock honours ctx.
type keyedLock struct {
	mu    sync.Mutex // guards locks
	locks map[string]*keyEntry
}

type keyEntry struct {
	ch   chan struct{} // holds one token while the key is locked
	refs int           // holders and waiters; the entry goes when it drops to 0
}

// Lock locks key, or returns ctx's error if ctx is done first. On success the
// caller must call the returned unlock function.
func (l *keyedLock) Lock(ctx context.Context, key string) (unlock func(), err error) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*keyEntry{}
	}
	e := l.locks[key]
	if e == nil {
		e = &keyEntry{ch: make(chan struct{}, 1)}
		l.locks[key] = e
	}
	e.refs++
	l.mu.Unlock()

	release := func() {
		l.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(l.locks, key)
		}
		l.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
