package manager

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
	"github.com/stowage/stowage/volumed/api"
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
func newSidecarEnv(t *testing.T, st *fakeStatus) *env {
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
