// Package volumetest holds the conformance suite that every stowage provider
// runs, and Fake, an in-memory provider for tests of code that consumes the
// contract.
package volumetest

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/volume"
)

// Harness describes the provider under test to Run.
type Harness struct {
	// New returns a fresh provider for one subtest.
	New func(t *testing.T) volume.Provider
	// Parameters are two different valid parameter sets (either may be
	// empty but they must differ).
	Parameters [2]map[string]string
	// CapacityBytes is a capacity the provider accepts; 0 when the suite
	// should not ask for one.
	CapacityBytes int64
	// Invalid are parameter sets the provider must reject with ErrInvalid.
	Invalid []map[string]string
	// ReadOnlyEnforced is set when a read-only Publish must refuse writes.
	ReadOnlyEnforced bool
	// Lock, when set, makes another host take the write lock of the
	// volume (for a volume.Unlocker) and returns how Unlock describes that
	// host; the suite then checks that the lock keeps this host from
	// writing until Unlock breaks it.
	Lock func(t *testing.T, p volume.Provider, volumeID string) string
}

// Run runs the conformance suite against the provider h describes,
// including the checks of the optional abilities the provider has (see
// runAbilities).
func Run(t *testing.T, h Harness) {
	t.Helper()
	t.Run("Info", func(t *testing.T) {
		p := h.New(t)
		ctx := testContext(t)
		info, err := p.Info(ctx)
		if err != nil || info.Name == "" {
			t.Fatalf("Info() = %+v, %v; want a name", info, err)
		}
		if err := p.Probe(ctx); err != nil {
			t.Fatalf("Probe() = %v", err)
		}
		if _, err := p.Capabilities(ctx); err != nil {
			t.Fatalf("Capabilities() = %v", err)
		}
	})
	t.Run("CreateIdempotent", func(t *testing.T) {
		p := h.New(t)
		ctx := testContext(t)
		req := volume.CreateRequest{Name: "v1", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0]}
		a, err := p.Create(ctx, req)
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if a.ID == "" {
			t.Fatal("Create returned an empty ID")
		}
		b, err := p.Create(ctx, req)
		if err != nil || b.ID != a.ID {
			t.Fatalf("second Create = %+v, %v; want ID %q", b, err, a.ID)
		}
		other := req
		other.Parameters = h.Parameters[1]
		if _, err := p.Create(ctx, other); !errors.Is(err, volume.ErrExists) {
			t.Fatalf("Create with other parameters: err = %v; want ErrExists", err)
		}
		if err := p.Delete(ctx, a.ID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		if err := p.Delete(ctx, a.ID); err != nil {
			t.Fatalf("second Delete: %v", err)
		}
	})
	t.Run("CreateInvalid", func(t *testing.T) {
		p := h.New(t)
		ctx := testContext(t)
		for _, params := range append(h.Invalid, map[string]string{"no-such-option": "1"}) {
			_, err := p.Create(ctx, volume.CreateRequest{Name: "bad", CapacityBytes: h.CapacityBytes, Parameters: params})
			if !errors.Is(err, volume.ErrInvalid) {
				t.Errorf("Create(%v): err = %v; want ErrInvalid", params, err)
			}
		}
		if l, ok := p.(volume.Lister); ok {
			vols, err := l.List(ctx)
			if err != nil {
				t.Fatalf("List: %v", err)
			}
			if len(vols) != 0 {
				t.Errorf("rejected creates left volumes behind: %+v", vols)
			}
		}
	})
	t.Run("Lifecycle", func(t *testing.T) {
		p := h.New(t)
		ctx := testContext(t)
		caps, err := p.Capabilities(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v, err := p.Create(ctx, volume.CreateRequest{Name: "life", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0]})
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		if l, ok := p.(volume.Lister); ok {
			vols, err := l.List(ctx)
			if err != nil || len(vols) != 1 || vols[0].ID != v.ID {
				t.Fatalf("List = %+v, %v; want just %q", vols, err, v.ID)
			}
		}
		dir := t.TempDir()
		target := mount(t, ctx, p, caps, v, dir, "a", false)
		if err := os.WriteFile(filepath.Join(target, "f"), []byte("hello"), 0o644); err != nil {
			t.Fatalf("write through target: %v", err)
		}
		if caps.Stats {
			st, err := p.Stats(ctx, v.ID, target)
			if err != nil {
				t.Fatalf("Stats: %v", err)
			}
			if st.CapacityBytes <= 0 || st.UsedBytes < 0 || st.AvailableBytes < 0 || st.AvailableBytes > st.CapacityBytes {
				t.Errorf("Stats = %+v: implausible", st)
			}
			if h.CapacityBytes > 0 && st.CapacityBytes > h.CapacityBytes {
				t.Errorf("Stats capacity %d exceeds the requested %d", st.CapacityBytes, h.CapacityBytes)
			}
		} else if _, err := p.Stats(ctx, v.ID, target); !errors.Is(err, volume.ErrNotSupported) {
			t.Errorf("Stats without the capability: err = %v; want ErrNotSupported", err)
		}
		unmount(t, ctx, p, caps, v, dir, "a")
		unmount(t, ctx, p, caps, v, dir, "a") // idempotent

		target = mount(t, ctx, p, caps, v, dir, "b", false)
		got, err := os.ReadFile(filepath.Join(target, "f"))
		if err != nil || string(got) != "hello" {
			t.Fatalf("data after republish = %q, %v; want hello", got, err)
		}
		unmount(t, ctx, p, caps, v, dir, "b")

		if h.ReadOnlyEnforced {
			target = mount(t, ctx, p, caps, v, dir, "ro", true)
			if err := os.WriteFile(filepath.Join(target, "g"), []byte("x"), 0o644); err == nil {
				t.Error("write through a read-only publish succeeded")
			}
			if got, err := os.ReadFile(filepath.Join(target, "f")); err != nil || string(got) != "hello" {
				t.Errorf("read through a read-only publish = %q, %v", got, err)
			}
			unmount(t, ctx, p, caps, v, dir, "ro")
		}

		if err := p.Delete(ctx, v.ID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		err = p.Publish(ctx, volume.PublishRequest{VolumeID: v.ID, TargetPath: filepath.Join(dir, "gone"), StagingPath: filepath.Join(dir, "gone-stage")})
		if !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("Publish after Delete: err = %v; want ErrNotFound", err)
		}
		if _, err := p.Stats(ctx, v.ID, target); caps.Stats && !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("Stats after Delete: err = %v; want ErrNotFound", err)
		}
	})
	t.Run("CancelledContext", func(t *testing.T) {
		p := h.New(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := p.Create(ctx, volume.CreateRequest{Name: "late", CapacityBytes: h.CapacityBytes, Parameters: h.Parameters[0]}); err == nil {
			t.Error("Create with a cancelled context succeeded")
		}
	})
	runAbilities(t, h)
}

// mount stages (when needed) and publishes v under dir/name.
func mount(t *testing.T, ctx context.Context, p volume.Provider, caps volume.Capabilities, v volume.Volume, dir, name string, ro bool) string {
	t.Helper()
	staging := filepath.Join(dir, name+"-staging")
	target := filepath.Join(dir, name)
	if caps.Stage {
		if err := os.MkdirAll(staging, 0o755); err != nil {
			t.Fatal(err)
		}
		req := volume.StageRequest{VolumeID: v.ID, StagingPath: staging, Context: v.Context}
		for i := 0; i < 2; i++ { // idempotent
			if err := p.Stage(ctx, req); err != nil {
				t.Fatalf("Stage #%d: %v", i+1, err)
			}
		}
	} else {
		staging = ""
	}
	req := volume.PublishRequest{VolumeID: v.ID, StagingPath: staging, TargetPath: target, ReadOnly: ro, Context: v.Context}
	for i := 0; i < 2; i++ { // idempotent
		if err := p.Publish(ctx, req); err != nil {
			t.Fatalf("Publish #%d: %v", i+1, err)
		}
	}
	return target
}

func unmount(t *testing.T, ctx context.Context, p volume.Provider, caps volume.Capabilities, v volume.Volume, dir, name string) {
	t.Helper()
	if err := p.Unpublish(ctx, v.ID, filepath.Join(dir, name)); err != nil {
		t.Fatalf("Unpublish: %v", err)
	}
	if caps.Stage {
		if err := p.Unstage(ctx, v.ID, filepath.Join(dir, name+"-staging")); err != nil {
			t.Fatalf("Unstage: %v", err)
		}
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
