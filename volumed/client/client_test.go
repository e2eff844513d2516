package client_test

import (
	"context"
	"errors"
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
	e := controltest.New(t)
	info := control.Info{Version: "1.2.3", PID: 7, StartedAt: time.Unix(1700000000, 0).UTC()}
	path := e.Serve(t, info)
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

// TestErrors brings about every error class for real and checks that the
// client's error is that class and no other, with volumed's message as its
// text. Each case starts with one volume, v, created with label=a.
func TestErrors(t *testing.T) {
	sentinels := []error{volume.ErrNotFound, volume.ErrExists, volume.ErrInUse, volume.ErrInvalid,
		volume.ErrUnavailable, volume.ErrNotSupported}
	createW := func(ctx context.Context, c *client.Client) error {
		_, err := c.CreateVolume(ctx, api.CreateRequest{Name: "w"})
		return err
	}
	removeV := func(ctx context.Context, c *client.Client) error {
		return c.RemoveVolume(ctx, "v")
	}
	tests := []struct {
		name  string
		setup func(*testing.T, *controltest.Env)
		call  func(context.Context, *client.Client) error
		want  error // nil for volumed's internal errors
		msg   string
	}{
		{"not found", nil, func(ctx context.Context, c *client.Client) error {
			_, err := c.Volume(ctx, "ghost")
			return err
		}, volume.ErrNotFound, `volume "ghost": not found`},
		{"exists", nil, func(ctx context.Context, c *client.Client) error {
			_, err := c.CreateVolume(ctx, api.CreateRequest{Name: "v", Options: map[string]string{"label": "b"}})
			return err
		}, volume.ErrExists, `create volume "v": already exists with other options (label=a)`},
		{"in use", func(t *testing.T, e *controltest.Env) {
			if _, err := e.Manager.Mount(t.Context(), "v", "M1"); err != nil {
				t.Fatal(err)
			}
		}, removeV, volume.ErrInUse, `remove volume "v": in use by 1 mount`},
		{"invalid", nil, func(ctx context.Context, c *client.Client) error {
			_, err := c.CreateVolume(ctx, api.CreateRequest{Name: "../x"})
			return err
		}, volume.ErrInvalid, `invalid argument: volume name "../x" has characters that are not allowed (names match [a-zA-Z0-9][a-zA-Z0-9_.-]*)`},
		{"unavailable", func(_ *testing.T, e *controltest.Env) { e.Provider.Fail(volume.ErrUnavailable) },
			createW, volume.ErrUnavailable, `create volume "w": provider "local": create: Create: unavailable`},
		{"not supported", func(_ *testing.T, e *controltest.Env) { e.Provider.Fail(volume.ErrNotSupported) },
			removeV, volume.ErrNotSupported, `remove volume "v": provider "local": delete: Delete: not supported`},
		{"internal", func(_ *testing.T, e *controltest.Env) { e.Provider.Fail(errors.New("disk on fire")) },
			createW, nil, `create volume "w": provider "local": create: Create: disk on fire`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := controltest.New(t)
			if _, err := e.Manager.Create(t.Context(), "v", map[string]string{"label": "a"}); err != nil {
				t.Fatal(err)
			}
			if tt.setup != nil {
				tt.setup(t, e)
			}
			c, err := client.New(e.Serve(t, control.Info{}))
			if err != nil {
				t.Fatal(err)
			}
			err = tt.call(t.Context(), c)
			if err == nil || err.Error() != tt.msg {
				t.Fatalf("got %v, want message %q", err, tt.msg)
			}
			for _, s := range sentinels {
				if s != tt.want && errors.Is(err, s) {
					t.Errorf("error is also %v", s)
				}
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("error is not %v", tt.want)
			}
		})
	}

	e := controltest.New(t)
	c, err := client.New(e.Serve(t, control.Info{}))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("name escaped", func(t *testing.T) {
		_, err := c.Volume(t.Context(), "a/b")
		if !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), `"a/b"`) {
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
	// The request's context bounds it: the hung provider is not waited for.
	t.Run("provider hangs", func(t *testing.T) {
		e.Provider.Hang(true)
		defer e.Provider.Hang(false)
		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		_, err := c.CreateVolume(ctx, api.CreateRequest{Name: "w"})
		if !errors.Is(err, context.DeadlineExceeded) || err.Error() != "POST /v1/volumes: context deadline exceeded" {
			t.Errorf("CreateVolume: %v, want context.DeadlineExceeded", err)
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
