package keylock

import (
	"context"
	"errors"
	"sync"
	"testing"
)

func TestLock(t *testing.T) {
	var m Map
	unlock, err := m.Lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := m.Lock(ctx, "a"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Lock of a held key with a done context: %v", err)
	}
	u2, err := m.Lock(context.Background(), "b") // other keys are free
	if err != nil {
		t.Fatal(err)
	}
	u2()
	unlock()
	u3, err := m.Lock(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	u3()
	if n := m.Len(); n != 0 {
		t.Errorf("Len = %d after every unlock; want 0", n)
	}
}

func TestMutualExclusion(t *testing.T) {
	var m Map
	var wg sync.WaitGroup
	held := 0
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			unlock, err := m.Lock(context.Background(), "k")
			if err != nil {
				t.Error(err)
				return
			}
			held++ // the race detector reports a failure of the lock
			if held != 1 {
				t.Errorf("%d holders at once", held)
			}
			held--
			unlock()
		}()
	}
	wg.Wait()
	if n := m.Len(); n != 0 {
		t.Errorf("Len = %d; want 0", n)
	}
}
