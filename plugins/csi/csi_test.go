package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
)

// socketDir returns a fresh directory with a path short enough for unix
// sockets (t.TempDir's can exceed 108 bytes).
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "csi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// serve serves p on a fresh socket until the test ends and returns the
// endpoint.
func serve(t *testing.T, p volume.Provider, opts ServerOptions) string {
	t.Helper()
	endpoint := "unix://" + filepath.Join(socketDir(t), "csi.sock")
	l, err := Listen(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- NewServer(p, opts).Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return endpoint
}

// dial returns a client of endpoint, closed when the test ends.
func dial(t *testing.T, endpoint string) *Client {
	t.Helper()
	c, err := Dial(endpoint, ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func testContext(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestSymmetry runs the conformance suite against a Client of a Server of
// the fake provider: what passes in process passes over CSI, with and
// without the optional abilities.
func TestSymmetry(t *testing.T) {
	for _, stage := range []bool{false, true} {
		for _, variant := range []string{"", "-basic", "-snapshots-only"} {
			name := map[bool]string{false: "publish-only", true: "staged"}[stage] + variant
			t.Run(name, func(t *testing.T) {
				var mu sync.Mutex
				fakes := map[volume.Provider]*volumetest.Fake{}
				volumetest.Run(t, volumetest.Harness{
					New: func(t *testing.T) volume.Provider {
						f := volumetest.NewFake(t.TempDir(), stage)
						var p volume.Provider = f
						switch variant {
						case "-basic":
							p = f.Basic()
						case "-snapshots-only":
							f.CopyVolumes(false)
						}
						c := dial(t, serve(t, p, ServerOptions{NodeID: "node-1"}))
						mu.Lock()
						fakes[c] = f
						mu.Unlock()
						return c
					},
					Parameters:    [2]map[string]string{{"label": "a"}, {"label": "b"}},
					CapacityBytes: 1 << 20,
					Lock: func(t *testing.T, p volume.Provider, volumeID string) string {
						mu.Lock()
						f := fakes[p]
						mu.Unlock()
						if err := f.SetLockHolder(volumeID, "host-b"); err != nil {
							t.Fatal(err)
						}
						return "host-b"
					},
				})
			})
		}
	}
}

// TestClientUnreachable checks that a missing endpoint fails fast with
// ErrUnavailable naming the endpoint.
func TestClientUnreachable(t *testing.T) {
	c := dial(t, filepath.Join(socketDir(t), "none.sock"))
	ctx := testContext(t, time.Minute)
	err := c.Probe(ctx)
	if !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("Probe = %v; want ErrUnavailable", err)
	}
	if want := "not reachable"; !strings.Contains(err.Error(), want) {
		t.Errorf("Probe error %q does not say %q", err, want)
	}
}

// TestClientNeverAnswers checks that an endpoint that accepts connections
// but never speaks makes every call fail with ErrUnavailable once the
// context's deadline passes.
func TestClientNeverAnswers(t *testing.T) {
	path := filepath.Join(socketDir(t), "mute.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	held := make(chan net.Conn, 16)
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			held <- c // never read, never written
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-accepted
		close(held)
		for c := range held {
			c.Close()
		}
	})
	c := dial(t, path)
	calls := map[string]func(context.Context) error{
		"Probe":  c.Probe,
		"Create": func(ctx context.Context) error { _, err := c.Create(ctx, volume.CreateRequest{Name: "v"}); return err },
		"Publish": func(ctx context.Context) error {
			return c.Publish(ctx, volume.PublishRequest{VolumeID: "v", TargetPath: "/nonexistent/t"})
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			const deadline = 300 * time.Millisecond
			ctx := testContext(t, deadline)
			start := time.Now()
			err := call(ctx)
			if !errors.Is(err, volume.ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err = %v; want ErrUnavailable and DeadlineExceeded", err)
			}
			if !strings.Contains(err.Error(), "did not answer") {
				t.Errorf("err = %v; want it to say the endpoint did not answer", err)
			}
			// Generous: the call must end with its context, not hang.
			if d := time.Since(start); d > deadline+10*time.Second {
				t.Errorf("call took %v with a deadline of %v", d, deadline)
			}
		})
	}
}

// TestServerHangingProvider checks that a provider that hangs makes the
// client's call fail with ErrUnavailable at its deadline.
func TestServerHangingProvider(t *testing.T) {
	f := volumetest.NewFake(t.TempDir(), false)
	c := dial(t, serve(t, f, ServerOptions{}))
	f.Hang(true)
	ctx := testContext(t, 300*time.Millisecond)
	_, err := c.Create(ctx, volume.CreateRequest{Name: "v"})
	if !errors.Is(err, volume.ErrUnavailable) {
		t.Fatalf("Create = %v; want ErrUnavailable", err)
	}
}

// TestClientErrors checks that a driver's failures reach the client with
// their class and message.
func TestClientErrors(t *testing.T) {
	f := volumetest.NewFake(t.TempDir(), true)
	c := dial(t, serve(t, f, ServerOptions{}))
	ctx := testContext(t, time.Minute)
	tests := []struct {
		name string
		err  error
	}{
		{"not found", volume.ErrNotFound},
		{"exists", volume.ErrExists},
		{"in use", volume.ErrInUse},
		{"invalid", volume.ErrInvalid},
		{"unavailable", volume.ErrUnavailable},
		{"not supported", volume.ErrNotSupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.Fail(fmt.Errorf("%w: cause %s", tt.err, tt.name))
			_, err := c.Create(ctx, volume.CreateRequest{Name: "v"})
			if !errors.Is(err, tt.err) {
				t.Errorf("Create = %v; want %v", err, tt.err)
			}
			if !strings.Contains(err.Error(), "cause "+tt.name) {
				t.Errorf("Create error %q lost the driver's message", err)
			}
		})
	}
	f.Fail(errors.New("boom"))
	if err := c.Probe(ctx); !errors.Is(err, volume.ErrUnavailable) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Probe with an unclassified failure = %v; want ErrUnavailable with the message", err)
	}
}
