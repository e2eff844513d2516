// Package controltest helps test code that talks to volumed's control API:
// a real volume manager over a bbolt store in a temporary directory, whose
// providers are volumetest fakes, and a control server on a temporary unix
// socket.
package controltest

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
	"github.com/stowage/stowage/volumed/control"
	"github.com/stowage/stowage/volumed/manager"
	"github.com/stowage/stowage/volumed/store"
)

// BasicSuffix ends the name of a provider that New makes without optional
// abilities.
const BasicSuffix = ":basic"

// Env is volumed's core as a test runs it: a manager with fake providers.
type Env struct {
	Manager *manager.Manager
	// Provider is the fake behind the default provider; its Hang and Fail
	// make the provider slow or broken.
	Provider *volumetest.Fake
	// Fakes holds the fake behind every provider by name, Provider's too.
	Fakes map[string]*volumetest.Fake
}

// New returns an Env whose manager has a fake provider for each name, or
// just "local" when none is given; the first name is the default provider.
// A fake has every optional ability (snapshots, copies, resize, unlock)
// unless its name ends in BasicSuffix, which is dropped: "local:basic" is a
// provider "local" without them.
// The manager is reconciled and its providers probed once, so they report
// up. Everything lives under t.TempDir and is closed at the end of the test.
func New(t testing.TB, providers ...string) *Env {
	t.Helper()
	if len(providers) == 0 {
		providers = []string{"local"}
	}
	root := t.TempDir()
	s, err := store.Open(filepath.Join(root, "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	e := &Env{Fakes: map[string]*volumetest.Fake{}}
	ps := map[string]volume.Provider{}
	providers = slices.Clone(providers)
	for i, name := range providers {
		name, basic := strings.CutSuffix(name, BasicSuffix)
		providers[i] = name
		f := volumetest.NewFake(filepath.Join(root, "provider", name), false)
		e.Fakes[name], ps[name] = f, f
		if basic {
			ps[name] = f.Basic()
		}
	}
	e.Provider = e.Fakes[providers[0]]
	e.Manager, err = manager.New(manager.Options{
		Root:            filepath.Join(root, "volumed"),
		Store:           s,
		Providers:       ps,
		DefaultProvider: providers[0],
		IsMounted:       isLink,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Manager.Reconcile(t.Context()); err != nil {
		t.Fatal(err)
	}
	e.Manager.ProbeAll(t.Context())
	return e
}

// isLink stands in for mountinfo.Mounted: a Fake publishes a volume by
// making its mount point a symbolic link.
func isLink(path string) (bool, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return false, err
	}
	return fi.Mode()&os.ModeSymlink != 0, nil
}

// Serve serves the control API over e.Manager on a unix socket in a new
// temporary directory and returns the socket's path. The server logs to t
// and stops at the end of the test.
func (e *Env) Serve(t testing.TB, info control.Info) string {
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
	srv := &http.Server{Handler: control.New(e.Manager, info, log), ReadHeaderTimeout: 10 * time.Second}
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
