//go:build ceph && linux && cgo

package rbd

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	librbd "github.com/ceph/go-ceph/rbd"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/loopdev"
	"github.com/stowage/stowage/internal/testenv"

	"github.com/stowage/stowage/plugins/rbd/rbdtest"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
)

// env is the cluster of TestRBD and what its subtests share.
type env struct {
	c  *rbdtest.Cluster
	ns atomic.Int64
}

// newProvider returns a provider on the cluster in a namespace of its own,
// as host, closed when the test ends.
func (e *env) newProvider(t *testing.T, host string) *Provider {
	t.Helper()
	ns := e.c.Namespace(t, fmt.Sprintf("t%d", e.ns.Add(1)))
	return e.provider(t, Config{Namespace: ns, HostID: host})
}

// provider returns a provider with cfg completed by the cluster's
// defaults, closed when the test ends.
func (e *env) provider(t *testing.T, cfg Config) *Provider {
	t.Helper()
	if cfg.ConfFile == "" {
		cfg.ConfFile = e.c.Conf
	}
	if cfg.Keyring == "" {
		cfg.Keyring = e.c.Keyring
	}
	if cfg.Pool == "" {
		cfg.Pool = e.c.Pool
	}
	if cfg.RunDir == "" {
		cfg.RunDir = t.TempDir()
	}
	p, err := New(t.Context(), cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return p
}

// lockElsewhere stages the volume read-write through a provider of
// another host, in the same namespace as p, and returns how Unlock
// describes that host.
func (e *env) lockElsewhere(t *testing.T, p volume.Provider, id string) string {
	t.Helper()
	other := e.provider(t, Config{Namespace: p.(*Provider).cfg.Namespace, HostID: "elsewhere"})
	mustStage(t, other, id, volume.SingleNodeWriter)
	img, err := librbd.OpenImageReadOnly(other.ioctx, id, librbd.NoSnapshot)
	if err != nil {
		t.Fatal(err)
	}
	defer img.Close()
	_, lockers, err := img.ListLockers()
	if err != nil || len(lockers) != 1 {
		t.Fatalf("locks of %s = %+v, %v; want one", id, lockers, err)
	}
	return describeLockers(lockers)
}

// testWriter sends the provider's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// TestHandleField checks that go-ceph's rbd.Image has the field that
// holds librbd's handle, without which New refuses to start.
func TestHandleField(t *testing.T) {
	if !handleFound {
		t.Fatal(`rbd.Image has no unsafe.Pointer field "image"`)
	}
}

// TestRBD runs every test of the provider against one real cluster.
func TestRBD(t *testing.T) {
	e := &env{c: rbdtest.Start(t, rbdtest.Options{})}
	t.Run("Conformance", func(t *testing.T) {
		volumetest.Run(t, volumetest.Harness{
			New: func(t *testing.T) volume.Provider { return e.newProvider(t, "conformance") },
			// xfs first: the suite expands online, which ext4 can only with
			// CAP_SYS_RESOURCE (testExpand covers ext4).
			Parameters:       [2]map[string]string{{"fs": "xfs"}, {"fs": "ext4"}},
			CapacityBytes:    320 << 20,
			Invalid:          []map[string]string{{"fs": "btrfs"}, {"fs": ""}},
			ReadOnlyEnforced: true,
			Lock:             e.lockElsewhere,
		})
	})
	t.Run("DataSurvivesRestage", func(t *testing.T) { testRestage(t, e, "ext4", 64<<20) })
	t.Run("DataSurvivesRestageXFS", func(t *testing.T) { testRestage(t, e, "xfs", 320<<20) })
	t.Run("SnapshotClone", func(t *testing.T) { testSnapshotClone(t, e) })
	t.Run("Expand", func(t *testing.T) { testExpand(t, e) })
	t.Run("SingleWriter", func(t *testing.T) { testSingleWriter(t, e) })
	t.Run("BadInput", func(t *testing.T) { testBadInput(t, e) })
	t.Run("StaleMountNamespace", func(t *testing.T) { testStaleNamespace(t, e) })
	t.Run("RestartThroughOtherPath", func(t *testing.T) { testRestartOtherPath(t, e) })
	t.Run("ReadChunks", func(t *testing.T) { testReadChunks(t, e) })
}

// testReadChunks checks the reads that go past go-ceph on librbd's handle
// of an image it opened: the handle is the image's, and ReadChunks returns
// what go-ceph's ReadAt does, for a read inside an object (one chunk), one
// across an object's end (two), and one of a part never written (zeros).
func testReadChunks(t *testing.T, e *env) {
	p := e.newProvider(t, "chunks")
	const size, object = 3 << 22, 1 << 22
	img, err := librbd.Create(p.ioctx, "chunks", size, 22)
	if err != nil {
		t.Fatal(err)
	}
	if err := img.Open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := img.Close(); err != nil {
			t.Error(err)
		}
		if err := librbd.RemoveImage(p.ioctx, "chunks"); err != nil {
			t.Error(err)
		}
	})
	dev := imageDevice{img}
	data := randomData(t, 3<<20)
	if _, err := img.WriteAt(data, object-1<<20); err != nil {
		t.Fatal(err)
	}
	if err := img.Flush(); err != nil {
		t.Fatal(err)
	}
	if got, err := handleSize(img); err != nil || got != size {
		t.Fatalf("size through the handle = %d, %v; want %d: the handle is not this image's", got, err, size)
	}
	for _, r := range []struct {
		name      string
		off, n    int64
		chunks    int
		allZeroes bool
	}{
		{"in one object", object + 4096, 1 << 20, 1, false},
		{"across objects", object - 512<<10, 1 << 20, 2, false},
		{"never written", 2*object + 1<<20, 1 << 20, 1, true},
	} {
		want := make([]byte, r.n)
		if _, err := img.ReadAt(want, r.off); err != nil {
			t.Fatal(err)
		}
		var got []byte
		chunks := 0
		err := dev.ReadChunks(r.off, int(r.n), func(p []byte) {
			got = append(got, p...)
			chunks++
		})
		if err != nil {
			t.Errorf("%s: ReadChunks: %v", r.name, err)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: ReadChunks differs from ReadAt (first difference at %d)", r.name, firstDiff(got, want))
		}
		if chunks != r.chunks {
			t.Errorf("%s: %d chunks, want %d", r.name, chunks, r.chunks)
		}
		if zero := bytes.Count(got, []byte{0}) == len(got); zero != r.allZeroes {
			t.Errorf("%s: all zeros = %v, want %v", r.name, zero, r.allZeroes)
		}
	}
	if err := dev.ReadChunks(size-4096, 8192, func([]byte) {}); err == nil {
		t.Error("ReadChunks past the end succeeded")
	}
}

// staged is a volume staged and published by a test.
type staged struct {
	p       *Provider
	id      string
	staging string
	target  string
}

// stageAt stages and publishes id under dir; access says how.
func stageAt(t *testing.T, p *Provider, id, dir string, access volume.AccessMode) (*staged, error) {
	t.Helper()
	ctx := testContext(t)
	s := &staged{p: p, id: id, staging: filepath.Join(dir, "staging"), target: filepath.Join(dir, "target")}
	if err := os.MkdirAll(s.staging, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := p.Stage(ctx, volume.StageRequest{VolumeID: id, StagingPath: s.staging, Access: access}); err != nil {
		return nil, err
	}
	t.Cleanup(func() { s.release(t) })
	ro := access != volume.SingleNodeWriter
	if err := p.Publish(ctx, volume.PublishRequest{VolumeID: id, StagingPath: s.staging, TargetPath: s.target, ReadOnly: ro, Access: access}); err != nil {
		t.Fatalf("Publish %s: %v", id, err)
	}
	return s, nil
}

func mustStage(t *testing.T, p *Provider, id string, access volume.AccessMode) *staged {
	t.Helper()
	s, err := stageAt(t, p, id, t.TempDir(), access)
	if err != nil {
		t.Fatalf("Stage %s: %v", id, err)
	}
	return s
}

// release unpublishes and unstages; repeated calls succeed.
func (s *staged) release(t *testing.T) {
	t.Helper()
	// Also called from a cleanup, when the test's context is done.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := s.p.Unpublish(ctx, s.id, s.target); err != nil {
		t.Errorf("Unpublish %s: %v", s.id, err)
	}
	if err := s.p.Unstage(ctx, s.id, s.staging); err != nil {
		t.Errorf("Unstage %s: %v", s.id, err)
	}
}

func (s *staged) path(name string) string { return filepath.Join(s.target, name) }

func create(t *testing.T, p *Provider, req volume.CreateRequest) volume.Volume {
	t.Helper()
	v, err := p.Create(testContext(t), req)
	if err != nil {
		t.Fatalf("Create %s: %v", req.Name, err)
	}
	return v
}

func randomData(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeSynced(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func checkFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s has %d bytes that differ from the %d written", path, len(got), len(want))
	}
}

// testRestage writes data, unstages, stages again through a new provider
// (a restarted sidecar) and reads it back.
func testRestage(t *testing.T, e *env, fs string, size int64) {
	p := e.newProvider(t, "a")
	ctx := testContext(t)
	v := create(t, p, volume.CreateRequest{Name: "data", CapacityBytes: size, Parameters: map[string]string{"fs": fs}})
	if v.CapacityBytes != size {
		t.Errorf("Create: capacity %d, want %d", v.CapacityBytes, size)
	}
	s := mustStage(t, p, "data", volume.SingleNodeWriter)
	l := loopOf(t, p, "data")
	data := randomData(t, 8<<20)
	writeSynced(t, s.path("blob"), data)
	st, err := p.Stats(ctx, "data", s.target)
	if err != nil || st.CapacityBytes <= 0 || st.CapacityBytes > size || st.UsedBytes < 8<<20 {
		t.Errorf("Stats = %+v, %v; want a capacity up to %d with at least 8MiB used", st, err, size)
	}
	s.release(t)
	if l.attached(t) {
		t.Errorf("%s still attached after Unstage", l.name)
	}
	if ok, _ := mounted(filepath.Join(p.cfg.RunDir, "data")); ok {
		t.Error("FUSE file still mounted after Unstage")
	}

	// A new provider, as after a restart of the sidecar, on the same
	// namespace.
	q := e.provider(t, Config{Namespace: p.cfg.Namespace, HostID: "a"})
	s = mustStage(t, q, "data", volume.SingleNodeWriter)
	checkFile(t, s.path("blob"), data)
	s.release(t)
	if err := q.Delete(ctx, "data"); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if vols, err := q.List(ctx); err != nil || len(vols) != 0 {
		t.Errorf("List after Delete = %v, %v; want none", vols, err)
	}
}

func testSnapshotClone(t *testing.T, e *env) {
	p := e.newProvider(t, "a")
	ctx := testContext(t)
	create(t, p, volume.CreateRequest{Name: "src", CapacityBytes: 64 << 20})
	s := mustStage(t, p, "src", volume.SingleNodeWriter)
	before := randomData(t, 4<<20)
	writeSynced(t, s.path("f"), before)

	// Taken while staged: the file system is frozen for it.
	snap, err := p.CreateSnapshot(ctx, "src", "snap1")
	if err != nil {
		t.Fatalf("CreateSnapshot: %v", err)
	}
	if snap.ID != "src@snap1" || snap.SourceVolumeID != "src" || snap.SizeBytes != 64<<20 || !snap.ReadyToUse || snap.CreatedAt.IsZero() {
		t.Errorf("CreateSnapshot = %+v", snap)
	}
	if again, err := p.CreateSnapshot(ctx, "src", "snap1"); err != nil || again.ID != snap.ID {
		t.Errorf("CreateSnapshot again = %+v, %v; want the same", again, err)
	}
	after := randomData(t, 4<<20)
	writeSynced(t, s.path("f"), after)

	create(t, p, volume.CreateRequest{Name: "other", CapacityBytes: 16 << 20})
	if _, err := p.CreateSnapshot(ctx, "other", "snap1"); !errors.Is(err, volume.ErrExists) {
		t.Errorf("CreateSnapshot of another volume with a taken name: %v; want ErrExists", err)
	}
	if _, err := p.CreateSnapshot(ctx, "nosuch", "x"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("CreateSnapshot of a missing volume: %v; want ErrNotFound", err)
	}
	if _, err := p.CreateSnapshot(ctx, "src", "bad@name"); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("CreateSnapshot with a bad name: %v; want ErrInvalid", err)
	}

	// A clone, larger than its snapshot, has the data of the snapshot and
	// a file system grown to its size.
	clone := create(t, p, volume.CreateRequest{Name: "copy", CapacityBytes: 128 << 20, Source: &volume.Source{SnapshotID: snap.ID}})
	if clone.CapacityBytes != 128<<20 {
		t.Errorf("clone capacity %d, want %d", clone.CapacityBytes, 128<<20)
	}
	if again, err := p.Create(ctx, volume.CreateRequest{Name: "copy", CapacityBytes: 128 << 20, Source: &volume.Source{SnapshotID: snap.ID}}); err != nil || again.ID != "copy" {
		t.Errorf("Create of the clone again = %+v, %v", again, err)
	}
	if _, err := p.Create(ctx, volume.CreateRequest{Name: "copy", CapacityBytes: 128 << 20}); !errors.Is(err, volume.ErrExists) {
		t.Errorf("Create of the clone's name without a source: %v; want ErrExists", err)
	}
	c := mustStage(t, p, "copy", volume.SingleNodeWriter)
	checkFile(t, c.path("f"), before)
	if st, err := p.Stats(ctx, "copy", c.target); err != nil || st.CapacityBytes <= 100<<20 {
		t.Errorf("clone Stats = %+v, %v; want the file system grown past 100MiB", st, err)
	}
	writeSynced(t, c.path("g"), []byte("clone only"))
	checkFile(t, s.path("f"), after) // the source is untouched
	if _, err := os.Stat(s.path("g")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file written to the clone shows in the source: %v", err)
	}

	for _, bad := range []struct {
		name string
		req  volume.CreateRequest
		want error
	}{
		{"missing snapshot", volume.CreateRequest{Name: "c2", Source: &volume.Source{SnapshotID: "src@nosuch"}}, volume.ErrNotFound},
		{"smaller than snapshot", volume.CreateRequest{Name: "c2", CapacityBytes: 32 << 20, Source: &volume.Source{SnapshotID: snap.ID}}, volume.ErrInvalid},
		{"other fs", volume.CreateRequest{Name: "c2", Source: &volume.Source{SnapshotID: snap.ID}, Parameters: map[string]string{"fs": "xfs"}}, volume.ErrInvalid},
		{"bad ID", volume.CreateRequest{Name: "c2", Source: &volume.Source{SnapshotID: "nosnap"}}, volume.ErrNotFound},
		{"missing volume", volume.CreateRequest{Name: "c2", Source: &volume.Source{VolumeID: "nosuch"}}, volume.ErrNotFound},
		{"volume and snapshot", volume.CreateRequest{Name: "c2", Source: &volume.Source{VolumeID: "src", SnapshotID: snap.ID}}, volume.ErrInvalid},
	} {
		if _, err := p.Create(ctx, bad.req); !errors.Is(err, bad.want) {
			t.Errorf("Create from %s: %v; want %v", bad.name, err, bad.want)
		}
	}

	// A copy of the staged source has its current data, taken frozen,
	// and is independent of it.
	create(t, p, volume.CreateRequest{Name: "dup", Source: &volume.Source{VolumeID: "src"}})
	d := mustStage(t, p, "dup", volume.SingleNodeWriter)
	checkFile(t, d.path("f"), after)
	d.release(t)
	if err := p.Delete(ctx, "dup"); err != nil {
		t.Fatalf("Delete copy: %v", err)
	}

	list, err := p.ListSnapshots(ctx, "")
	if err != nil || len(list) != 1 || list[0].ID != snap.ID {
		t.Errorf("ListSnapshots() = %+v, %v; want just %s", list, err, snap.ID)
	}
	if list, err := p.ListSnapshots(ctx, "other"); err != nil || len(list) != 0 {
		t.Errorf("ListSnapshots(other) = %+v, %v; want none", list, err)
	}
	if err := p.DeleteSnapshot(ctx, snap.ID); !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "copy") {
		t.Errorf("DeleteSnapshot with a clone: %v; want ErrInUse naming copy", err)
	}
	s.release(t)
	if err := p.Delete(ctx, "src"); !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "snap1") {
		t.Errorf("Delete of a volume with a snapshot: %v; want ErrInUse naming snap1", err)
	}
	c.release(t)
	if err := p.Delete(ctx, "copy"); err != nil {
		t.Fatalf("Delete clone: %v", err)
	}
	for range 2 { // idempotent
		if err := p.DeleteSnapshot(ctx, snap.ID); err != nil {
			t.Fatalf("DeleteSnapshot: %v", err)
		}
	}
	if list, err := p.ListSnapshots(ctx, "src"); err != nil || len(list) != 0 {
		t.Errorf("ListSnapshots after delete = %+v, %v", list, err)
	}
	for _, id := range []string{"src", "other"} {
		if err := p.Delete(ctx, id); err != nil {
			t.Errorf("Delete %s: %v", id, err)
		}
	}
}

func testExpand(t *testing.T, e *env) {
	p := e.newProvider(t, "a")
	ctx := testContext(t)
	for _, fs := range []string{"ext4", "xfs"} {
		size := int64(64 << 20)
		if fs == "xfs" {
			size = 320 << 20
		}
		// Online: staged here.
		online := "online-" + fs
		create(t, p, volume.CreateRequest{Name: online, CapacityBytes: size, Parameters: map[string]string{"fs": fs}})
		s := mustStage(t, p, online, volume.SingleNodeWriter)
		data := randomData(t, 1<<20)
		writeSynced(t, s.path("f"), data)
		before, err := p.Stats(ctx, online, s.target)
		if err != nil {
			t.Fatal(err)
		}
		got, err := p.Expand(ctx, volume.ExpandRequest{VolumeID: online, CapacityBytes: 2 * size, StagingPath: s.staging, TargetPath: s.target})
		if err != nil || got != 2*size {
			t.Fatalf("Expand %s = %d, %v; want %d", online, got, err, 2*size)
		}
		if !canGrowOnline(fs) {
			// The file system grows at the next Stage.
			t.Logf("%s: this process lacks CAP_SYS_RESOURCE: ext4 grows when staged again", online)
			s.release(t)
			s = mustStage(t, p, online, volume.SingleNodeWriter)
		}
		after, err := p.Stats(ctx, online, s.target)
		if err != nil || after.CapacityBytes < before.CapacityBytes+size*9/10 {
			t.Errorf("%s: file system %d bytes after Expand, %d before; want it grown by about %d", online, after.CapacityBytes, before.CapacityBytes, size)
		}
		checkFile(t, s.path("f"), data)
		if got, err := p.Expand(ctx, volume.ExpandRequest{VolumeID: online, CapacityBytes: 2 * size}); err != nil || got != 2*size {
			t.Errorf("Expand to the same size = %d, %v", got, err)
		}
		if _, err := p.Expand(ctx, volume.ExpandRequest{VolumeID: online, CapacityBytes: size}); !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("Expand to less: %v; want ErrInvalid", err)
		}
		// A create of the name (another host taking the volume over) asks
		// for its size now; the size it was created with no longer matches.
		params := map[string]string{"fs": fs}
		if v, err := p.Create(ctx, volume.CreateRequest{Name: online, CapacityBytes: 2 * size, Parameters: params}); err != nil || v.CapacityBytes != 2*size {
			t.Errorf("Create %s with its new size = %+v, %v; want the existing volume", online, v, err)
		}
		if _, err := p.Create(ctx, volume.CreateRequest{Name: online, CapacityBytes: size, Parameters: params}); !errors.Is(err, volume.ErrExists) {
			t.Errorf("Create %s with its old size: %v; want ErrExists", online, err)
		}
		s.release(t)

		// Offline: the next Stage grows the file system.
		offline := "offline-" + fs
		create(t, p, volume.CreateRequest{Name: offline, CapacityBytes: size, Parameters: map[string]string{"fs": fs}})
		s = mustStage(t, p, offline, volume.SingleNodeWriter)
		writeSynced(t, s.path("f"), data)
		s.release(t)
		if got, err := p.Expand(ctx, volume.ExpandRequest{VolumeID: offline, CapacityBytes: 2 * size}); err != nil || got != 2*size {
			t.Fatalf("Expand %s = %d, %v", offline, got, err)
		}
		s = mustStage(t, p, offline, volume.SingleNodeWriter)
		st, err := p.Stats(ctx, offline, s.target)
		if err != nil || st.CapacityBytes < before.CapacityBytes+size*9/10 {
			t.Errorf("%s: file system %d bytes after Expand and Stage; want about %d", offline, st.CapacityBytes, 2*size)
		}
		checkFile(t, s.path("f"), data)
		s.release(t)
		for _, id := range []string{online, offline} {
			if err := p.Delete(ctx, id); err != nil {
				t.Errorf("Delete %s: %v", id, err)
			}
		}
	}
	if _, err := p.Expand(ctx, volume.ExpandRequest{VolumeID: "nosuch", CapacityBytes: 1 << 30}); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Expand of a missing volume: %v; want ErrNotFound", err)
	}
}

// testSingleWriter uses two providers with different host IDs, as two
// hosts of one cluster.
func testSingleWriter(t *testing.T, e *env) {
	a := e.newProvider(t, "host-a")
	b := e.provider(t, Config{Namespace: a.cfg.Namespace, HostID: "host-b"})
	ctx := testContext(t)
	create(t, a, volume.CreateRequest{Name: "shared", CapacityBytes: 64 << 20})

	sa := mustStage(t, a, "shared", volume.SingleNodeWriter)
	synced := randomData(t, 1<<20)
	writeSynced(t, sa.path("f"), synced)
	for _, access := range []volume.AccessMode{volume.SingleNodeWriter, volume.MultiNodeReaderOnly} {
		_, err := stageAt(t, b, "shared", t.TempDir(), access)
		if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), `host "host-a"`) {
			t.Errorf("Stage %s on host-b while host-a writes: %v; want ErrInUse naming host-a", access, err)
		}
	}
	if _, err := a.Unlock(ctx, "shared"); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("Unlock by the holder itself: %v; want ErrInUse", err)
	}
	if err := b.Delete(ctx, "shared"); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("Delete on host-b while host-a has it staged: %v; want ErrInUse", err)
	}

	// Readers share; a writer waits for them all.
	sa.release(t)
	ra := mustStage(t, a, "shared", volume.MultiNodeReaderOnly)
	rb := mustStage(t, b, "shared", volume.SingleNodeReaderOnly)
	checkFile(t, ra.path("f"), synced)
	checkFile(t, rb.path("f"), synced)
	if err := os.WriteFile(rb.path("g"), []byte("x"), 0o644); err == nil {
		t.Error("a write to a read-only stage succeeded")
	}
	ra.release(t)
	if _, err := stageAt(t, a, "shared", t.TempDir(), volume.SingleNodeWriter); !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), `host "host-b"`) {
		t.Errorf("Stage read-write on host-a while host-b reads: %v; want ErrInUse naming host-b", err)
	}
	rb.release(t)

	// host-a dies holding the write lock: host-b unlocks and takes over;
	// host-a can no longer write.
	sa = mustStage(t, a, "shared", volume.SingleNodeWriter)
	la := loopOf(t, a, "shared")
	writeSynced(t, sa.path("f"), synced)
	holder, err := b.Unlock(ctx, "shared")
	if err != nil || !strings.Contains(holder, `host "host-a"`) {
		t.Fatalf("Unlock = %q, %v; want host-a named", holder, err)
	}
	if holder, err := b.Unlock(ctx, "shared"); err != nil || holder != "" {
		t.Errorf("second Unlock = %q, %v; want nothing to unlock", holder, err)
	}
	sb := mustStage(t, b, "shared", volume.SingleNodeWriter)
	checkFile(t, sb.path("f"), synced)
	writeSynced(t, sb.path("h"), []byte("from b"))
	// The fenced host's writes fail, and so does every fsync after them,
	// as `dd conv=fsync` does it: its client is blocklisted, and the
	// flush that the file system sends down to the FUSE file reaches
	// librbd and fails there.
	fenced := randomData(t, 1<<20)
	if err := overwriteSynced(sa.path("f"), fenced); err == nil {
		t.Error("host-a overwrote a file and fsynced it after it was fenced")
	} else {
		t.Logf("fsync on the fenced host: %v", err)
	}
	if err := overwriteSynced(sa.path("f"), fenced); err == nil {
		t.Error("a second fsync on the fenced host succeeded")
	}
	if err := overwriteSynced(sa.path("zombie"), randomData(t, 64<<10)); err == nil {
		t.Error("host-a created a file and fsynced it after it was fenced")
	}
	// Below the file system: a write to the FUSE file fails, and so does
	// every flush after it. (Were librbd to acknowledge it early, in one
	// of its caches, it would fail later, unseen, and the next flush
	// succeed.)
	ff, err := os.OpenFile(a.stagedAt("shared").file.path(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		_, err := ff.WriteAt(randomData(t, 4096), int64(i)<<20)
		if err == nil {
			err = ff.Sync()
		}
		if err == nil {
			t.Errorf("write %d to the fenced host's FUSE file and its flush succeeded", i)
		} else if !errors.Is(err, eBlocklisted) && !errors.Is(err, syscall.EPERM) && !errors.Is(err, syscall.EIO) {
			t.Errorf("write %d to the fenced host's FUSE file: %v; want ESHUTDOWN (blocklisted), EPERM or EIO", i, err)
		}
	}
	if err := ff.Sync(); err == nil {
		t.Error("a flush of the fenced host's FUSE file succeeded")
	}
	ff.Close()
	sb.release(t)
	// host-a's unstage releases what it can locally.
	sa.release(t)
	if la.attached(t) {
		t.Errorf("host-a keeps %s after its Unstage", la.name)
	}
	sb = mustStage(t, b, "shared", volume.SingleNodeWriter)
	checkFile(t, sb.path("h"), []byte("from b"))
	checkFile(t, sb.path("f"), synced) // not what the fenced host wrote
	if _, err := os.Stat(sb.path("zombie")); err == nil {
		t.Error("the fenced host's file reached the volume")
	}
	sb.release(t)
	if err := b.Delete(ctx, "shared"); err != nil {
		t.Errorf("Delete: %v", err)
	}
}

func testBadInput(t *testing.T, e *env) {
	ctx := testContext(t)
	key := e.c.AdminKey(t)
	dir := t.TempDir()
	wrongKeyring := filepath.Join(dir, "wrong.keyring")
	// A well-formed key that is not the user's.
	wrong := e.c.Run(t, "ceph-authtool", "--gen-print-key")
	if err := os.WriteFile(wrongKeyring, []byte("[client.admin]\n\tkey = "+wrong+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	base := Config{ConfFile: e.c.Conf, Keyring: e.c.Keyring, Pool: e.c.Pool, RunDir: dir, HostID: "a"}
	with := func(f func(*Config)) Config { c := base; f(&c); return c }
	for _, tc := range []struct {
		name string
		cfg  Config
		want error
		says string
	}{
		{"missing pool", with(func(c *Config) { c.Pool = "nosuch" }), volume.ErrNotFound, `pool "nosuch" does not exist`},
		{"no pool", with(func(c *Config) { c.Pool = "" }), volume.ErrInvalid, "--pool"},
		{"wrong key", with(func(c *Config) { c.Keyring = wrongKeyring }), volume.ErrUnavailable, "key"},
		{"missing keyring", with(func(c *Config) { c.Keyring = filepath.Join(dir, "nosuch") }), volume.ErrInvalid, "keyring"},
		{"missing ceph.conf", with(func(c *Config) { c.ConfFile = filepath.Join(dir, "nosuch.conf") }), volume.ErrInvalid, "ceph.conf"},
		{"bad host ID", with(func(c *Config) { c.HostID = "a b" }), volume.ErrInvalid, "host ID"},
		{"missing namespace", with(func(c *Config) { c.Namespace = "nosuch" }), volume.ErrNotFound, "namespace"},
	} {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			p, err := New(ctx, tc.cfg, nil)
			if err == nil {
				p.Close()
				t.Fatalf("New succeeded")
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Errorf("New: %v; want %v saying %q", err, tc.want, tc.says)
			}
			for _, secret := range []string{key, wrong} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("the error shows a key: %v", err)
				}
			}
			t.Logf("New with %s: %v", tc.name, err)
		})
	}

	p := e.newProvider(t, "a")
	create(t, p, volume.CreateRequest{Name: "taken", CapacityBytes: 64 << 20})
	e.c.Run(t, "rbd", "create", "--pool", e.c.Pool, "--namespace", p.cfg.Namespace, "--size", "16M", "foreign")
	for _, tc := range []struct {
		name string
		req  volume.CreateRequest
		want error
	}{
		{"negative size", volume.CreateRequest{Name: "v", CapacityBytes: -1}, volume.ErrInvalid},
		{"size below ext4's minimum", volume.CreateRequest{Name: "v", CapacityBytes: 1 << 20}, volume.ErrInvalid},
		{"size below xfs's minimum", volume.CreateRequest{Name: "v", CapacityBytes: 64 << 20, Parameters: map[string]string{"fs": "xfs"}}, volume.ErrInvalid},
		{"unknown option", volume.CreateRequest{Name: "v", CapacityBytes: 64 << 20, Parameters: map[string]string{"size": "1G"}}, volume.ErrInvalid},
		{"bad name", volume.CreateRequest{Name: "a/b", CapacityBytes: 64 << 20}, volume.ErrInvalid},
		{"name collision", volume.CreateRequest{Name: "taken", CapacityBytes: 128 << 20}, volume.ErrExists},
		{"foreign image", volume.CreateRequest{Name: "foreign", CapacityBytes: 16 << 20}, volume.ErrExists},
	} {
		if _, err := p.Create(ctx, tc.req); !errors.Is(err, tc.want) {
			t.Errorf("Create with %s: %v; want %v", tc.name, err, tc.want)
		} else {
			t.Logf("Create with %s: %v", tc.name, err)
		}
	}
	if _, err := volume.ParseSize("0"); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("size=0: %v; want ErrInvalid", err)
	}
	vols, err := p.List(ctx)
	if err != nil || len(vols) != 1 || vols[0].ID != "taken" {
		t.Errorf("List = %+v, %v; want just taken (foreign images are not listed, failed creates leave nothing)", vols, err)
	}
	if err := p.Delete(ctx, "foreign"); err != nil {
		t.Errorf("Delete of a foreign image: %v", err)
	}
	if out := e.c.Run(t, "rbd", "ls", "--pool", e.c.Pool, "--namespace", p.cfg.Namespace); !strings.Contains(out, "foreign") {
		t.Errorf("Delete removed an image the provider did not create: rbd ls = %q", out)
	}
	if err := p.Stage(ctx, volume.StageRequest{VolumeID: "nosuch", StagingPath: t.TempDir()}); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Stage of a missing volume: %v; want ErrNotFound", err)
	}
	if err := p.Stage(ctx, volume.StageRequest{VolumeID: "taken", StagingPath: t.TempDir(), Access: volume.MultiNodeMultiWriter}); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("Stage multi-writer: %v; want ErrInvalid", err)
	}
	if err := p.Stage(ctx, volume.StageRequest{VolumeID: "taken", StagingPath: t.TempDir(), Access: volume.SingleNodeReaderOnly}); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("read-only Stage of a volume without a file system: %v; want ErrInvalid", err)
	}
	if err := p.Delete(ctx, "taken"); err != nil {
		t.Errorf("Delete: %v", err)
	}
}

// testStaleNamespace keeps a copy of the mount alive in another mount
// namespace: Unstage must refuse to detach, naming it, and succeed once it
// is gone, and the image is never attached twice.
func testStaleNamespace(t *testing.T, e *env) {
	p := e.newProvider(t, "a")
	ctx := testContext(t)
	create(t, p, volume.CreateRequest{Name: "pinned", CapacityBytes: 64 << 20})
	s := mustStage(t, p, "pinned", volume.SingleNodeWriter)
	writeSynced(t, s.path("f"), []byte("x"))
	if err := p.Unpublish(ctx, "pinned", s.target); err != nil {
		t.Fatal(err)
	}
	pin := startPinner(t)
	err := p.Unstage(ctx, "pinned", s.staging)
	if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", pin.Process.Pid)) {
		t.Errorf("Unstage while another namespace mounts it: %v; want ErrInUse naming pid %d", err, pin.Process.Pid)
	}
	if err := p.Stage(ctx, volume.StageRequest{VolumeID: "pinned", StagingPath: filepath.Join(t.TempDir()), Access: volume.SingleNodeWriter}); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("Stage elsewhere while half unstaged: %v; want ErrInUse", err)
	}
	stopPinner(t, pin)
	if err := p.Unstage(ctx, "pinned", s.staging); err != nil {
		t.Fatalf("Unstage after the other namespace ended: %v", err)
	}
	s = mustStage(t, p, "pinned", volume.SingleNodeWriter)
	checkFile(t, s.path("f"), []byte("x"))
	s.release(t)
	if err := p.Delete(ctx, "pinned"); err != nil {
		t.Errorf("Delete: %v", err)
	}
}

// startPinner starts a process in a new mount namespace, which copies
// every mount of ours, and waits until it runs there. A cleanup stops it.
func startPinner(t *testing.T) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatalf("start unshare: %v", err)
	}
	t.Cleanup(func() { stopPinner(t, cmd) })
	self, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.After(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", cmd.Process.Pid))
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", cmd.Process.Pid))
		if ns != "" && ns != self && strings.TrimSpace(string(comm)) == "sleep" {
			return cmd
		}
		select {
		case <-deadline:
			t.Fatalf("unshare did not enter a new mount namespace within 30s")
		case <-tick.C:
		}
	}
}

// stopPinner kills the pinning process and waits for it; repeated calls
// are fine.
func stopPinner(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
}

// overwriteSynced writes data at the start of the file at path, creating
// it if need be, and fsyncs it, as `dd conv=notrunc,fsync` does; it returns
// the first error.
func overwriteSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(data, 0)
	if err == nil {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

// loop is the loop device of a staged volume and the file it is attached
// to: the device and inode of the FUSE file, and the path sysfs shows.
type loop struct {
	name     string
	dev, ino uint64
	backing  string
}

// loopOf returns the loop device on which p staged id.
func loopOf(t *testing.T, p *Provider, id string) loop {
	t.Helper()
	st := p.stagedAt(id)
	if st == nil || st.loop == nil {
		t.Fatalf("%s is not staged", id)
	}
	l := loop{name: st.loop.Name, backing: backingPath(st.loop.Name)}
	var err error
	if l.dev, l.ino, err = loopdev.Backing(l.name); err != nil || l.ino == 0 || l.backing == "" {
		t.Fatalf("backing file of %s: %d:%d at %q, %v", l.name, l.dev, l.ino, l.backing, err)
	}
	return l
}

// backingPath returns the path of the file backing the loop device named
// name, as sysfs shows it, or "" when it has none.
func backingPath(name string) string {
	b, err := os.ReadFile("/sys/block/" + name + "/loop/backing_file")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// attached reports whether l is still attached to its file: by device and
// inode while that file answers, else (its FUSE server is gone) by path.
// A device that someone else attached meanwhile to another file is not.
func (l loop) attached(t *testing.T) bool {
	t.Helper()
	dev, ino, err := loopdev.Backing(l.name)
	if err != nil {
		t.Fatalf("backing file of %s: %v", l.name, err)
	}
	if ino != 0 {
		return dev == l.dev && ino == l.ino
	}
	return backingPath(l.name) == l.backing
}

// testRestartOtherPath: a provider dies with a volume staged, leaving its
// loop device on a FUSE file that no longer answers. The restarted
// provider reaches its run directory by another path than the dead one
// did (a bind mount, as a container has its own view of the host's
// paths). Unstaging the volume must find and detach exactly that loop
// device, and leave alone the live one of another provider that has a
// volume of the same name staged; the data that was synced survives.
func testRestartOtherPath(t *testing.T, e *env) {
	ctx := testContext(t)
	real, other := t.TempDir(), t.TempDir()
	// real becomes a shared mount and other a bind mount of it, in its
	// peer group: a FUSE file mounted under either shows under both.
	bind(t, real, real, unix.MS_BIND)
	if err := unix.Mount("", real, "", unix.MS_SHARED, ""); err != nil {
		t.Fatalf("make %s shared: %v", real, err)
	}
	bind(t, real, other, unix.MS_BIND)

	a := e.provider(t, Config{Namespace: e.c.Namespace(t, fmt.Sprintf("t%d", e.ns.Add(1))), HostID: "a", RunDir: other})
	create(t, a, volume.CreateRequest{Name: "v", CapacityBytes: 64 << 20})
	s, err := stageAt(t, a, "v", t.TempDir(), volume.SingleNodeWriter)
	if err != nil {
		t.Fatalf("Stage: %v", err)
	}
	data := randomData(t, 1<<20)
	writeSynced(t, s.path("f"), data)
	dead := loopOf(t, a, "v")

	// Another provider has a volume of the same name staged.
	c := e.newProvider(t, "c")
	create(t, c, volume.CreateRequest{Name: "v", CapacityBytes: 64 << 20})
	sc := mustStage(t, c, "v", volume.SingleNodeWriter)
	live := loopOf(t, c, "v")
	kept := randomData(t, 64<<10)
	writeSynced(t, sc.path("g"), kept)

	crash(t, a, "v")
	if !dead.attached(t) {
		t.Fatalf("%s detached by the crash", dead.name)
	}

	// The restarted provider, on this host, through the other path.
	b := e.provider(t, Config{Namespace: a.cfg.Namespace, HostID: "a", RunDir: real})
	if err := b.Unpublish(ctx, "v", s.target); err != nil {
		t.Fatalf("Unpublish after the restart: %v", err)
	}
	if err := b.Unstage(ctx, "v", s.staging); err != nil {
		t.Fatalf("Unstage after the restart: %v", err)
	}
	if dead.attached(t) {
		t.Errorf("%s of the dead provider still attached after Unstage", dead.name)
	}
	for _, dir := range []string{filepath.Join(real, "v"), filepath.Join(other, "v")} {
		if ok, err := mounted(dir); ok || (err != nil && !errors.Is(err, os.ErrNotExist)) {
			t.Errorf("FUSE file of the dead provider still mounted at %s (%v)", dir, err)
		}
	}
	if !live.attached(t) {
		t.Errorf("%s of the other provider's volume v was detached", live.name)
	}
	checkFile(t, sc.path("g"), kept)

	s = mustStage(t, b, "v", volume.SingleNodeWriter)
	checkFile(t, s.path("f"), data)
	s.release(t)
	if err := b.Delete(ctx, "v"); err != nil {
		t.Errorf("Delete: %v", err)
	}
}

// bind mounts source on target with flags, until the test ends.
func bind(t *testing.T, source, target string, flags uintptr) {
	t.Helper()
	if err := unix.Mount(source, target, "", flags, ""); err != nil {
		t.Fatalf("bind %s on %s: %v", source, target, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(target, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", target, err)
		}
	})
}

// crash makes p as good as dead for the staged volume id: its FUSE
// connection is aborted and its loop device closed (as when the process
// exits), its image closed without unlocking, and p forgets the volume. The loop device and the
// file system mounted on it stay, as they do after a crash.
func crash(t *testing.T, p *Provider, id string) {
	t.Helper()
	st := p.stagedAt(id)
	p.mu.Lock()
	delete(p.staged, id)
	p.mu.Unlock()
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, st.file.dir, 0, unix.STATX_INO, &sx); err != nil {
		t.Fatal(err)
	}
	const conns = "/sys/fs/fuse/connections"
	abort := fmt.Sprintf("%s/%d/abort", conns, sx.Dev_minor)
	if _, err := os.Stat(abort); errors.Is(err, os.ErrNotExist) {
		if err := unix.Mount("fusectl", conns, "fusectl", 0, ""); err != nil {
			testenv.Unavailable(t, "mount fusectl on %s, to abort a FUSE connection: %v", conns, err)
		}
		t.Cleanup(func() { _ = unix.Unmount(conns, unix.MNT_DETACH) })
	}
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
		t.Fatalf("abort FUSE connection: %v", err)
	}
	st.file.srv.Wait()
	if err := st.loop.Close(); err != nil {
		t.Fatal(err)
	}
	_ = st.img.Close()
}
