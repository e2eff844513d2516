package client_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/client"
	"github.com/stowage/stowage/volumed/control"
	"github.com/stowage/stowage/volumed/control/controltest"
)

func TestNew(t *testing.T) {
	tests := []struct {
		host string
		ok   bool
	}{
		{"unix:///run/stowage/volumed.sock", true},
		{"/run/stowage/volumed.sock", true},
		{"unix://run/volumed.sock", false},
		{"tcp://127.0.0.1:80", false},
		{"volumed.sock", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			_, err := client.New(tt.host)
			if tt.ok != (err == nil) {
				t.Fatalf("New(%q): %v", tt.host, err)
			}
			if err != nil && (!errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), "unix:///PATH")) {
				t.Errorf("New(%q): %v, want ErrInvalid naming unix:///PATH", tt.host, err)
			}
		})
	}
}

func TestClient(t *testing.T) {
	b := controltest.NewBackend()
	info := control.Info{Version: "1.2.3", PID: 7, StartedAt: time.Unix(1700000000, 0).UTC()}
	path := controltest.Serve(t, b, info)
	for _, host := range []string{"unix://" + path, path} {
		t.Run(host, func(t *testing.T) {
			c, err := client.New(host)
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			v, err := c.CreateVolume(ctx, api.CreateRequest{Name: "data", Options: map[string]string{"size": "1G"}})
			if err != nil || v.Name != "data" || v.CapacityBytes != 1<<30 {
				t.Fatalf("CreateVolume: %+v %v", v, err)
			}
			if v, err := c.Volume(ctx, "data"); err != nil || v.Name != "data" {
				t.Errorf("Volume: %+v %v", v, err)
			}
			if vs, err := c.Volumes(ctx); err != nil || len(vs) != 1 {
				t.Errorf("Volumes: %+v %v", vs, err)
			}
			if ps, err := c.Providers(ctx); err != nil || len(ps) != 1 || ps[0].Volumes != 1 {
				t.Errorf("Providers: %+v %v", ps, err)
			}
			if st, err := c.Status(ctx); err != nil || st.Version != "1.2.3" || st.Volumes != 1 || !st.StartedAt.Equal(info.StartedAt) {
				t.Errorf("Status: %+v %v", st, err)
			}
			if err := c.RemoveVolume(ctx, "data"); err != nil {
				t.Errorf("RemoveVolume: %v", err)
			}
			if vs, err := c.Volumes(ctx); err != nil || vs == nil || len(vs) != 0 {
				t.Errorf("Volumes after remove: %#v %v", vs, err)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	b := controltest.NewBackend()
	c, err := client.New(controltest.Serve(t, b, control.Info{}))
	if err != nil {
		t.Fatal(err)
	}
	sentinels := []error{volume.ErrNotFound, volume.ErrExists, volume.ErrInUse, volume.ErrInvalid,
		volume.ErrUnavailable, volume.ErrNotSupported}
	for _, want := range sentinels {
		t.Run(want.Error(), func(t *testing.T) {
			name := strings.ReplaceAll(want.Error(), " ", "-")
			b.Fail(name, fmt.Errorf("get volume %s: %w: because", name, want))
			_, err := c.Volume(t.Context(), name)
			if !errors.Is(err, want) {
				t.Fatalf("Volume: %v, want errors.Is %v", err, want)
			}
			if msg := fmt.Sprintf("get volume %s: %s: because", name, want); err.Error() != msg {
				t.Errorf("message %q, want %q", err, msg)
			}
			for _, other := range sentinels {
				if other != want && errors.Is(err, other) {
					t.Errorf("error also is %v", other)
				}
			}
		})
	}
	t.Run("internal", func(t *testing.T) {
		b.Fail("broken", errors.New("disk on fire"))
		_, err := c.Volume(t.Context(), "broken")
		if err == nil || err.Error() != "disk on fire" {
			t.Fatalf("Volume: %v", err)
		}
		for _, s := range sentinels {
			if errors.Is(err, s) {
				t.Errorf("internal error is %v", s)
			}
		}
	})
	t.Run("name escaped", func(t *testing.T) {
		_, err := c.Volume(t.Context(), "a/b")
		if !errors.Is(err, volume.ErrNotFound) || !strings.Contains(err.Error(), "a/b") {
			t.Errorf("Volume(a/b): %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, err := c.Volumes(ctx); !errors.Is(err, context.Canceled) {
			t.Errorf("Volumes: %v, want context.Canceled", err)
		}
	})
}

func TestNotReachable(t *testing.T) {
	dir, err := os.MkdirTemp("", "stow")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "none.sock")
	c, err := client.New("unix://" + path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Status(t.Context())
	if !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("Status: %v, want ErrUnavailable", err)
	}
	for _, want := range []string{"volumed is not reachable at " + path, "start volumed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
