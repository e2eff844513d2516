package manager

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/sidecar"
	"github.com/stowage/stowage/volumed/store"
)

// fakeStatus is a sidecar's supervisor as the manager sees it.
type fakeStatus struct {
	mu       sync.Mutex
	state    string
	lastErr  string
	restarts int
	changed  chan struct{}
}

func newFakeStatus(state string) *fakeStatus {
	return &fakeStatus{state: state, changed: make(chan struct{})}
}

func (f *fakeStatus) Status() (string, string, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, f.lastErr, f.restarts
}

func (f *fakeStatus) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

func (f *fakeStatus) set(state, lastErr string, restarts int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.state, f.lastErr, f.restarts = state, lastErr, restarts
	close(f.changed)
	f.changed = make(chan struct{})
}

// newSidecarEnv returns a manager whose provider "fake" is a sidecar with
// the status st.
func newSidecarEnv(t *testing.T, st ProviderStatus) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{root: root, fake: volumetest.NewFake(filepath.Join(root, "fake"), true)}
	s, err := store.Open(filepath.Join(root, "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	m, err := New(Options{
		Root:            root,
		Store:           s,
		Providers:       map[string]volume.Provider{"fake": e.fake},
		Kinds:           map[string]string{"fake": "sidecar"},
		Status:          map[string]ProviderStatus{"fake": st},
		DefaultProvider: "fake",
		IsMounted:       isLink,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.store, e.m = s, m
	return e
}

// TestProvidersMergesStatus: `stow provider ls` shows the supervisor's
// state while it brings a sidecar up, and the probe's once it is up.
func TestProvidersMergesStatus(t *testing.T) {
	tests := []struct {
		name              string
		state, lastErr    string
		restarts          int
		probeFails        bool
		wantState, wantEr string
	}{
		{"up", api.ProviderUp, "", 2, false, api.ProviderUp, ""},
		{"up but not answering", api.ProviderUp, "", 0, true, api.ProviderDown, "broken"},
		{"starting", api.ProviderStarting, "", 0, true, api.ProviderStarting, "broken"},
		{"restarting", api.ProviderRestarting, "sidecar exited with code 137", 3, true, api.ProviderRestarting, "sidecar exited with code 137"},
		{"failed", api.ProviderFailed, `stow run: image "x": not found`, 5, false, api.ProviderFailed, `stow run: image "x": not found`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newFakeStatus(tc.state)
			st.lastErr, st.restarts = tc.lastErr, tc.restarts
			e := newSidecarEnv(t, st)
			if tc.probeFails {
				e.fake.Fail(errors.New("broken"))
			}
			e.m.ProbeAll(ctxT(t))
			ps := e.m.Providers(ctxT(t))
			if len(ps) != 1 {
				t.Fatalf("Providers = %+v", ps)
			}
			p := ps[0]
			if p.Kind != "sidecar" || p.State != tc.wantState || p.Restarts != tc.restarts || !strings.Contains(p.LastError, tc.wantEr) || (tc.wantEr == "" && p.LastError != "") {
				t.Errorf("Providers = %+v; want kind sidecar, state %s, restarts %d, last error %q", p, tc.wantState, tc.restarts, tc.wantEr)
			}
		})
	}
}

// TestMountWaitsForRestart: a mount of a sidecar's volume while the sidecar
// restarts waits until it is up, then mounts; mounts already held only
// count and do not wait.
func TestMountWaitsForRestart(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStatus(api.ProviderUp)
		e := newSidecarEnv(t, st)
		ctx := ctxT(t)
		if _, err := e.m.Create(ctx, "held", nil); err != nil {
			t.Fatal(err)
		}
		if _, err := e.m.Mount(ctx, "held", "c1"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.m.Create(ctx, "v", nil); err != nil {
			t.Fatal(err)
		}
		st.set(api.ProviderRestarting, "sidecar exited with code 137", 1)

		if _, err := e.m.Mount(ctx, "held", "c2"); err != nil {
			t.Errorf("a further mount of a mounted volume while the sidecar restarts: %v", err)
		}
		type result struct {
			path string
			err  error
		}
		done := make(chan result, 1)
		go func() {
			p, err := e.m.Mount(ctx, "v", "c3")
			done <- result{p, err}
		}()
		synctest.Wait()
		select {
		case r := <-done:
			t.Fatalf("Mount returned while the sidecar restarts: %v, %v", r.path, r.err)
		default:
		}
		st.set(api.ProviderUp, "", 1)
		r := <-done
		if r.err != nil || r.path != e.m.Mountpoint("v") {
			t.Errorf("Mount after the sidecar came back = %q, %v", r.path, r.err)
		}
	})
}

// TestCreateWhileRestartingTimesOut: a Create while the sidecar does not
// come back fails within the request's deadline, leaving time for the
// reply, with an unavailable error that says why; and at once when the
// sidecar failed.
func TestCreateWhileRestartingTimesOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := newFakeStatus(api.ProviderRestarting)
		st.lastErr, st.restarts = "sidecar exited with code 137", 3
		e := newSidecarEnv(t, st)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Second)
		defer cancel()
		start := time.Now()
		_, err := e.m.Create(ctx, "v", nil)
		took := time.Since(start)
		want := `create volume "v": unavailable: provider "fake" is restarting (3 restarts; last error: sidecar exited with code 137)`
		if !errors.Is(err, volume.ErrUnavailable) || !strings.Contains(err.Error(), want) {
			t.Errorf("Create = %v; want %s", err, want)
		}
		if took != 85*time.Second {
			t.Errorf("Create waited %s, want 85s (100s less a reserve of 15s)", took)
		}
		if vols := mustList(t, e.m); len(vols) != 0 {
			t.Errorf("a failed Create left %+v", vols)
		}

		st.set(api.ProviderFailed, `stow run: image "x": not found`, 5)
		start = time.Now()
		_, err = e.m.Mount(ctx, "v", "c1")
		if !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("Mount of a volume never created = %v, want not found", err)
		}
		_, err = e.m.Create(ctx, "v", nil)
		want = `provider "fake" failed to start (5 restarts; last error: stow run: image "x": not found)`
		if !errors.Is(err, volume.ErrUnavailable) || !strings.Contains(err.Error(), want) || time.Since(start) != 0 {
			t.Errorf("Create with a failed sidecar = %v after %s; want at once %s", err, time.Since(start), want)
		}
	})
}

var _ checker = (*sidecar.Supervisor)(nil)

// checkingStatus is a supervisor that checks when asked: the test gives
// its verdict with set or, leaving the state up, with answer.
type checkingStatus struct {
	*fakeStatus
	asked   int
	pending chan struct{} // the channel CheckNow returned, until answered
}

func newCheckingStatus(state string) *checkingStatus {
	return &checkingStatus{fakeStatus: newFakeStatus(state)}
}

func (c *checkingStatus) CheckNow() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.asked++
	if c.pending == nil {
		c.pending = make(chan struct{})
	}
	return c.pending
}

// checks returns how often CheckNow was called.
func (c *checkingStatus) checks() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.asked
}

// answer ends the check asked for, finding the sidecar running.
func (c *checkingStatus) answer() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending != nil {
		close(c.pending)
		c.pending = nil
	}
}

func (c *checkingStatus) set(state, lastErr string, restarts int) {
	c.answer()
	c.fakeStatus.set(state, lastErr, restarts)
}

// TestAskSupervisorToCheck: a sidecar that does not answer the manager's
// probe, or a call, is checked by its supervisor at once; one that
// answers, or that the supervisor is bringing up anyway, is not.
func TestAskSupervisorToCheck(t *testing.T) {
	tests := []struct {
		name  string
		state string
		do    func(t *testing.T, e *env)
		asked bool
	}{
		{"probe fails", api.ProviderUp, func(t *testing.T, e *env) {
			e.fake.Fail(errors.New("connection refused"))
			e.m.ProbeAll(ctxT(t))
		}, true},
		{"probe answers", api.ProviderUp, func(t *testing.T, e *env) {
			e.m.ProbeAll(ctxT(t))
		}, false},
		{"probe fails while restarting", api.ProviderRestarting, func(t *testing.T, e *env) {
			e.fake.Fail(errors.New("connection refused"))
			e.m.ProbeAll(ctxT(t))
		}, false},
		{"call unavailable", api.ProviderUp, func(t *testing.T, e *env) {
			e.fake.Fail(fmt.Errorf("%w: connection refused", volume.ErrUnavailable))
			if _, err := e.m.Create(ctxT(t), "v", nil); !errors.Is(err, volume.ErrUnavailable) {
				t.Errorf("Create = %v, want unavailable", err)
			}
		}, true},
		{"call invalid", api.ProviderUp, func(t *testing.T, e *env) {
			e.fake.Fail(fmt.Errorf("%w: bad size", volume.ErrInvalid))
			if _, err := e.m.Create(ctxT(t), "v", nil); !errors.Is(err, volume.ErrInvalid) {
				t.Errorf("Create = %v, want invalid", err)
			}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newCheckingStatus(tc.state)
			e := newSidecarEnv(t, st)
			tc.do(t, e)
			if got := st.checks(); (got > 0) != tc.asked {
				t.Errorf("the supervisor was asked to check %d times; want asked: %v", got, tc.asked)
			}
		})
	}
}

// TestMountWaitsForCheck: a mount right after a sidecar crashed, which the
// manager's probe saw before the supervisor did, waits for the
// supervisor's verdict: restarting, then up, mounts; found running
// mounts; no verdict in time is unavailable, saying the provider does not
// answer. A supervisor that cannot check fails the mount at once, as
// before.
func TestMountWaitsForCheck(t *testing.T) {
	type result struct {
		path string
		err  error
	}
	// crashed returns an env whose volume v is created and whose sidecar
	// the last probe found down while st still says up.
	crashed := func(t *testing.T, st ProviderStatus) *env {
		e := newSidecarEnv(t, st)
		if _, err := e.m.Create(ctxT(t), "v", nil); err != nil {
			t.Fatal(err)
		}
		e.fake.Fail(fmt.Errorf("%w: connection refused", volume.ErrUnavailable))
		e.m.ProbeAll(ctxT(t))
		return e
	}
	mount := func(ctx context.Context, e *env) <-chan result {
		done := make(chan result, 1)
		go func() {
			p, err := e.m.Mount(ctx, "v", "c1")
			done <- result{p, err}
		}()
		return done
	}
	waiting := func(t *testing.T, done <-chan result, when string) {
		t.Helper()
		synctest.Wait()
		select {
		case r := <-done:
			t.Fatalf("Mount returned %s: %q, %v", when, r.path, r.err)
		default:
		}
	}

	t.Run("restarted", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := newCheckingStatus(api.ProviderUp)
			e := crashed(t, st)
			asked := st.checks()
			done := mount(ctxT(t), e)
			waiting(t, done, "before the supervisor checked")
			if st.checks() != asked+1 {
				t.Errorf("Mount asked the supervisor to check %d times, want once", st.checks()-asked)
			}
			st.set(api.ProviderRestarting, "sidecar exited with code 137", 1)
			waiting(t, done, "while the sidecar restarts")
			e.fake.Fail(nil)
			st.set(api.ProviderUp, "", 1)
			if r := <-done; r.err != nil || r.path != e.m.Mountpoint("v") {
				t.Errorf("Mount after the sidecar came back = %q, %v", r.path, r.err)
			}
		})
	})
	t.Run("found running", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := newCheckingStatus(api.ProviderUp)
			e := crashed(t, st)
			done := mount(ctxT(t), e)
			waiting(t, done, "before the supervisor checked")
			e.fake.Fail(nil)
			st.answer()
			if r := <-done; r.err != nil || r.path != e.m.Mountpoint("v") {
				t.Errorf("Mount after the sidecar was found running = %q, %v", r.path, r.err)
			}
		})
	})
	t.Run("no verdict", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			st := newCheckingStatus(api.ProviderUp)
			e := crashed(t, st)
			ctx, cancel := context.WithTimeout(t.Context(), 100*time.Second)
			defer cancel()
			start := time.Now()
			_, err := e.m.Mount(ctx, "v", "c1")
			want := `mount volume "v": unavailable: provider "fake" is not answering (0 restarts; last error: provider "fake": probe: Info: unavailable: connection refused)`
			if !errors.Is(err, volume.ErrUnavailable) || !strings.Contains(err.Error(), want) {
				t.Errorf("Mount = %v; want %s", err, want)
			}
			if took := time.Since(start); took != 85*time.Second {
				t.Errorf("Mount waited %s, want 85s (100s less a reserve of 15s)", took)
			}
		})
	})
	t.Run("cannot check", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			e := crashed(t, newFakeStatus(api.ProviderUp))
			start := time.Now()
			_, err := e.m.Mount(ctxT(t), "v", "c1")
			if !errors.Is(err, volume.ErrUnavailable) || time.Since(start) != 0 {
				t.Errorf("Mount = %v after %s; want unavailable at once", err, time.Since(start))
			}
		})
	})
}
