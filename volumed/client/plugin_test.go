package client_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/client"
	"github.com/stowage/stowage/volumed/control/controltest"
	"github.com/stowage/stowage/volumed/plugin"
)

// servePlugin serves volumed's plugin edge over a real manager with fake
// providers on a temporary socket and returns the socket's path.
func servePlugin(t *testing.T) (string, *controltest.Env) {
	t.Helper()
	e := controltest.New(t)
	dir, err := os.MkdirTemp("", "plugin-") // short: socket paths have a length limit
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "p.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	d := plugin.New(e.Manager, plugin.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return path, e
}

func TestPlugin(t *testing.T) {
	path, e := servePlugin(t)
	ctx := t.Context()
	if _, err := e.Manager.Create(ctx, "data", nil); err != nil {
		t.Fatal(err)
	}
	for _, socket := range []string{path, "unix://" + path} {
		t.Run(socket, func(t *testing.T) {
			p := client.NewPlugin(socket)
			mp, err := p.Mount(ctx, "data", "c1-0")
			if err != nil || mp == "" {
				t.Fatalf("Mount: %q %v", mp, err)
			}
			v, err := p.Get(ctx, "data")
			if err != nil || v.Name != "data" || v.Mountpoint != mp {
				t.Errorf("Get while mounted: %+v %v, want mount point %s", v, err, mp)
			}
			if err := p.Unmount(ctx, "data", "c1-0"); err != nil {
				t.Fatalf("Unmount: %v", err)
			}
			if err := p.Unmount(ctx, "data", "c1-0"); !errors.Is(err, volume.ErrNotFound) {
				t.Errorf("second Unmount: %v, want ErrNotFound", err)
			}
		})
	}
}

func TestPluginErrors(t *testing.T) {
	path, _ := servePlugin(t)
	p := client.NewPlugin(path)
	ctx := t.Context()
	tests := []struct {
		name  string
		call  func() error
		class error
		text  string
	}{
		{"mount unknown", func() error { _, err := p.Mount(ctx, "nope", "x"); return err }, volume.ErrNotFound, `"nope"`},
		{"get unknown", func() error { _, err := p.Get(ctx, "nope"); return err }, volume.ErrNotFound, `"nope"`},
		{"unmount unknown", func() error { return p.Unmount(ctx, "nope", "x") }, volume.ErrNotFound, `"nope"`},
		{"invalid name", func() error { _, err := p.Mount(ctx, "-bad", "x"); return err }, volume.ErrInvalid, "-bad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if !errors.Is(err, tt.class) || !strings.Contains(err.Error(), tt.text) {
				t.Errorf("got %v, want %v naming %s", err, tt.class, tt.text)
			}
		})
	}
}

func TestPluginNotReachable(t *testing.T) {
	p := client.NewPlugin(filepath.Join(t.TempDir(), "none.sock"))
	_, err := p.Mount(t.Context(), "data", "x")
	if !errors.Is(err, volume.ErrUnavailable) || !strings.Contains(err.Error(), "--plugin-socket") {
		t.Errorf("Mount without a socket: %v, want ErrUnavailable naming --plugin-socket", err)
	}
}
