// Package controltest helps test code that talks to volumed's control API:
// an in-memory Backend and a control server on a temporary unix socket.
package controltest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/control"
)

// Backend is an in-memory control.Backend. Create accepts the options
// provider (one of Providers, default "local") and size, and keeps the
// others; Remove refuses a volume with mounts. Fail makes every call on a
// volume name return an error.
type Backend struct {
	mu        sync.Mutex // guards the fields below
	vols      map[string]api.Volume
	providers []api.Provider
	fail      map[string]error
}

var _ control.Backend = (*Backend)(nil)

// NewBackend returns a Backend with one provider, "local", that is up.
func NewBackend() *Backend {
	return &Backend{
		vols: map[string]api.Volume{},
		providers: []api.Provider{{
			Name: "local", Kind: "builtin", Driver: "stowage.local", Version: "test",
			State: api.ProviderUp, CheckedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		}},
		fail: map[string]error{},
	}
}

// Add stores v as it is.
func (b *Backend) Add(v api.Volume) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.vols[v.Name] = v
}

// SetProviders replaces the providers.
func (b *Backend) SetProviders(ps ...api.Provider) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.providers = ps
}

// Fail makes every later call naming volume name return err; nil restores
// normal behaviour. List fails with the error of any volume it would list.
func (b *Backend) Fail(name string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		delete(b.fail, name)
		return
	}
	b.fail[name] = err
}

// Create implements control.Backend.
func (b *Backend) Create(ctx context.Context, name string, opts map[string]string) (api.Volume, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.fail[name]; err != nil {
		return api.Volume{}, err
	}
	if name == "" || strings.ContainsAny(name, "/\\") || name == "." || name == ".." {
		return api.Volume{}, fmt.Errorf("create volume %q: %w: bad name", name, volume.ErrInvalid)
	}
	v := api.Volume{Name: name, Provider: "local", State: api.StateReady, ID: "id-" + name,
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	params := maps.Clone(opts)
	if p, ok := params["provider"]; ok {
		v.Provider = p
		delete(params, "provider")
	}
	if !slices.ContainsFunc(b.providers, func(p api.Provider) bool { return p.Name == v.Provider }) {
		return api.Volume{}, fmt.Errorf("create volume %s: %w: unknown provider %q", name, volume.ErrInvalid, v.Provider)
	}
	if s, ok := params["size"]; ok {
		n, err := volume.ParseSize(s)
		if err != nil {
			return api.Volume{}, fmt.Errorf("create volume %s: %w", name, err)
		}
		v.CapacityBytes = n
	}
	if len(params) > 0 {
		v.Options = params
	}
	if old, ok := b.vols[name]; ok {
		if old.Provider != v.Provider || old.CapacityBytes != v.CapacityBytes || !maps.Equal(old.Options, v.Options) {
			return api.Volume{}, fmt.Errorf("create volume %s: %w with other options", name, volume.ErrExists)
		}
		return old, nil
	}
	b.vols[name] = v
	return v, nil
}

// Remove implements control.Backend.
func (b *Backend) Remove(ctx context.Context, name string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.fail[name]; err != nil {
		return err
	}
	v, ok := b.vols[name]
	if !ok {
		return fmt.Errorf("remove volume %s: %w", name, volume.ErrNotFound)
	}
	if v.Mounts > 0 {
		return fmt.Errorf("remove volume %s: %w by %d mounts", name, volume.ErrInUse, v.Mounts)
	}
	delete(b.vols, name)
	return nil
}

// Get implements control.Backend.
func (b *Backend) Get(ctx context.Context, name string) (api.Volume, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if err := b.fail[name]; err != nil {
		return api.Volume{}, err
	}
	v, ok := b.vols[name]
	if !ok {
		return api.Volume{}, fmt.Errorf("get volume %s: %w", name, volume.ErrNotFound)
	}
	return v, nil
}

// List implements control.Backend. Volumes come sorted by name.
func (b *Backend) List(ctx context.Context) ([]api.Volume, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var errs []error
	vols := make([]api.Volume, 0, len(b.vols))
	for _, name := range slices.Sorted(maps.Keys(b.vols)) {
		if err := b.fail[name]; err != nil {
			errs = append(errs, err)
		}
		vols = append(vols, b.vols[name])
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return vols, nil
}

// Providers implements control.Backend. Each provider's Volumes is counted.
func (b *Backend) Providers(ctx context.Context) []api.Provider {
	b.mu.Lock()
	defer b.mu.Unlock()
	ps := slices.Clone(b.providers)
	for i := range ps {
		ps[i].Volumes = 0
		for _, v := range b.vols {
			if v.Provider == ps[i].Name {
				ps[i].Volumes++
			}
		}
	}
	return ps
}

// Serve serves the control API of b on a unix socket in a new temporary
// directory and returns the socket's path. The server stops at the end of
// the test.
func Serve(t testing.TB, b control.Backend, info control.Info) string {
	t.Helper()
	// Unix socket paths are short (108 bytes); t.TempDir may be too long.
	dir, err := os.MkdirTemp("", "stow")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "api.sock")
	l, err := control.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := &http.Server{Handler: control.New(b, info, log), ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		// Shutdown waits for running handlers, which log to t.
		if err := srv.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Error(err)
		}
	})
	return path
}

// testWriter sends log lines to the test's log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}
