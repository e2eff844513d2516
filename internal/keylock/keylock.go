// Package keylock provides a set of mutexes, one per key, whose Lock honours
// a context: a caller waiting for a key held across slow I/O gives up when
// its deadline passes instead of hanging.
package keylock

import (
	"context"
	"sync"
)

// Map is a set of mutexes keyed by string. The zero value is ready to use.
// Entries exist only while a key is held or awaited.
type Map struct {
	mu    sync.Mutex // guards locks
	locks map[string]*entry
}

type entry struct {
	ch   chan struct{} // holds one token while the key is locked
	refs int           // holders and waiters, guarded by Map.mu
}

// Lock locks key, or returns ctx's error if ctx is done first. On success
// the caller must call the returned unlock function once.
func (m *Map) Lock(ctx context.Context, key string) (unlock func(), err error) {
	m.mu.Lock()
	if m.locks == nil {
		m.locks = map[string]*entry{}
	}
	e := m.locks[key]
	if e == nil {
		e = &entry{ch: make(chan struct{}, 1)}
		m.locks[key] = e
	}
	e.refs++
	m.mu.Unlock()

	release := func() {
		m.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(m.locks, key)
		}
		m.mu.Unlock()
	}
	select {
	case e.ch <- struct{}{}:
		return func() { <-e.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}

// Len returns the number of keys held or awaited.
func (m *Map) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.locks)
}
