package local

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
)

// needRoot skips the test unless it runs as root, which mounting needs.
func needRoot(t *testing.T) {
	t.Helper()
	testenv.Require(t, "root")
}

// needLoop skips the test unless it can attach loop devices.
func needLoop(t *testing.T) {
	t.Helper()
	testenv.Require(t, "root", "loop")
}

// needMount skips the test unless it can mount volumes of type dir, or
// with mkfs set, of type fs with that file system.
func needMount(t *testing.T, mkfs string) {
	t.Helper()
	needRoot(t)
	if mkfs != "" {
		needLoop(t)
		needMkfs(t, mkfs)
	}
}

// mountedProvider returns a provider on a fresh root and makes sure that
// nothing of its volumes stays mounted after the test: it fails the test
// if something does (unless it failed already) and unmounts it either way.
func mountedProvider(t *testing.T) *Provider {
	t.Helper()
	root := t.TempDir()
	p := newProvider(t, root)
	t.Cleanup(func() {
		left := leftoverMounts(t, root)
		if len(left) > 0 && !t.Failed() {
			t.Errorf("left mounted: %v", left)
		}
		for _, m := range left {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				t.Errorf("clean up mount %s: %v", m, err)
			}
		}
	})
	return p
}

// leftoverMounts returns the mount points, deepest first, that show a
// volume under root: mounts of loop devices backed by an image under root,
// and bind mounts of a directory under root.
func leftoverMounts(t *testing.T, root string) []string {
	t.Helper()
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		t.Fatal(err)
	}
	loops := map[string]bool{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && within(strings.TrimSpace(string(b)), real) {
			loops["/dev/"+filepath.Base(filepath.Dir(filepath.Dir(f)))] = true
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(real, &st); err != nil {
		t.Fatal(err)
	}
	mounts, err := mountinfo.GetMounts(nil)
	if err != nil {
		t.Fatal(err)
	}
	sameDev := func(m *mountinfo.Info) bool {
		return m.Major == int(unix.Major(st.Dev)) && m.Minor == int(unix.Minor(st.Dev))
	}
	var host *mountinfo.Info
	for _, m := range mounts {
		if sameDev(m) && within(real, m.Mountpoint) && (host == nil || len(m.Mountpoint) > len(host.Mountpoint)) {
			host = m
		}
	}
	var left []string
	for _, m := range mounts {
		bound := host != nil && sameDev(m) && within(m.Root, filepath.Join(host.Root, strings.TrimPrefix(real, host.Mountpoint))) && m.Root != host.Root
		if loops[m.Source] || bound {
			left = append(left, m.Mountpoint)
		}
	}
	sort.Slice(left, func(i, j int) bool { return len(left[i]) > len(left[j]) })
	return left
}

func TestConformance(t *testing.T) {
	tests := []struct {
		name string
		mkfs string // empty for type dir
		h    volumetest.Harness
	}{
		{
			name: "dir",
			h: volumetest.Harness{
				Parameters:       [2]map[string]string{{}, {"type": "fs"}},
				Invalid:          []map[string]string{{"type": "block"}, {"fs": "ext4"}, {"type": "fs"}, {"type": "dir", "fs": "xfs"}},
				ReadOnlyEnforced: true,
			},
		},
		{
			name: "ext4",
			mkfs: fsExt4,
			h: volumetest.Harness{
				Parameters:       [2]map[string]string{{"type": "fs"}, {"fs": "xfs"}},
				CapacityBytes:    64 * mib,
				Invalid:          []map[string]string{{"type": "dir"}, {"fs": "btrfs"}, {"type": "block"}, {"fs": "xfs"}},
				ReadOnlyEnforced: true,
			},
		},
		{
			name: "xfs",
			mkfs: fsXFS,
			h: volumetest.Harness{
				Parameters:       [2]map[string]string{{"fs": "xfs"}, {"fs": "ext4"}},
				CapacityBytes:    300 * mib,
				Invalid:          []map[string]string{{"type": "dir"}, {"fs": "zfs"}},
				ReadOnlyEnforced: true,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			needMount(t, tt.mkfs)
			tt.h.New = func(t *testing.T) volume.Provider { return mountedProvider(t) }
			volumetest.Run(t, tt.h)
		})
	}
}

// stage stages and publishes v, and returns the staging and target paths.
func stage(t *testing.T, p *Provider, id string, readOnly bool) (staging, target string) {
	t.Helper()
	ctx := testContext(t)
	dir := t.TempDir()
	staging, target = filepath.Join(dir, "staging"), filepath.Join(dir, "target")
	if err := os.Mkdir(staging, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := p.Stage(ctx, volume.StageRequest{VolumeID: id, StagingPath: staging}); err != nil {
		t.Fatalf("Stage: %v", err)
	}
	if err := p.Publish(ctx, volume.PublishRequest{VolumeID: id, StagingPath: staging, TargetPath: target, ReadOnly: readOnly}); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	return staging, target
}

func unstage(t *testing.T, p *Provider, id, staging, target string) {
	t.Helper()
	ctx := testContext(t)
	if err := p.Unpublish(ctx, id, target); err != nil {
		t.Fatalf("Unpublish: %v", err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target after Unpublish: %v; want it gone", err)
	}
	if err := p.Unstage(ctx, id, staging); err != nil {
		t.Fatalf("Unstage: %v", err)
	}
}

func TestSizeEnforced(t *testing.T) {
	tests := []struct {
		fs   string
		size int64
	}{
		{fsExt4, 8 * mib},
		{fsXFS, 300 * mib},
	}
	for _, tt := range tests {
		t.Run(tt.fs, func(t *testing.T) {
			needMount(t, tt.fs)
			ctx := testContext(t)
			p := mountedProvider(t)
			v, err := p.Create(ctx, volume.CreateRequest{Name: "v", CapacityBytes: tt.size, Parameters: map[string]string{"fs": tt.fs}})
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			staging, target := stage(t, p, v.ID, false)
			st, err := p.Stats(ctx, v.ID, target)
			if err != nil {
				t.Fatalf("Stats: %v", err)
			}
			if st.CapacityBytes <= 0 || st.CapacityBytes > tt.size || st.Inodes <= 0 || st.InodesUsed+st.InodesFree != st.Inodes {
				t.Errorf("Stats = %+v: implausible for a %d byte volume", st, tt.size)
			}
			err = writePast(filepath.Join(target, "big"), tt.size)
			if !errors.Is(err, syscall.ENOSPC) {
				t.Errorf("writing %d bytes into a %d byte volume: %v; want ENOSPC", tt.size+mib, tt.size, err)
			}
			unstage(t, p, v.ID, staging, target)
			if err := p.Delete(ctx, v.ID); err != nil {
				t.Fatalf("Delete: %v", err)
			}
		})
	}
}

// writePast writes size plus 1MiB to a new file at path and syncs it.
func writePast(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, mib)
	for n := int64(0); n < size+mib; n += mib {
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Sync()
}

func TestInUse(t *testing.T) {
	tests := []struct {
		name string
		mkfs string // empty for type dir
		req  volume.CreateRequest
	}{
		{"dir", "", volume.CreateRequest{Name: "d"}},
		{"ext4", fsExt4, volume.CreateRequest{Name: "e", CapacityBytes: 8 * mib}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			needMount(t, tt.mkfs)
			ctx := testContext(t)
			p := mountedProvider(t)
			v, err := p.Create(ctx, tt.req)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			staging, target := stage(t, p, v.ID, false)
			if err := p.Delete(ctx, v.ID); !errors.Is(err, volume.ErrInUse) {
				t.Fatalf("Delete of a published volume: %v; want ErrInUse", err)
			}
			// The publish keeps the device busy: Unstage unmounts the staging
			// path but cannot see the loop device go; do not wait long for it.
			short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
			defer cancel()
			if err := p.Unstage(short, v.ID, staging); err != nil && !errors.Is(err, volume.ErrInUse) {
				t.Fatalf("Unstage under a publish: %v", err)
			}
			if err := p.Delete(ctx, v.ID); !errors.Is(err, volume.ErrInUse) {
				t.Fatalf("Delete of a volume published but not staged: %v; want ErrInUse", err)
			}
			unstage(t, p, v.ID, staging, target)
			if err := p.Delete(ctx, v.ID); err != nil {
				t.Fatalf("Delete after Unstage: %v", err)
			}
		})
	}
}

func TestUnstageDetachesLoop(t *testing.T) {
	needMount(t, fsExt4)
	ctx := testContext(t)
	p := mountedProvider(t)
	v, err := p.Create(ctx, volume.CreateRequest{Name: "v", CapacityBytes: 8 * mib})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	image, err := filepath.EvalSymlinks(filepath.Join(p.dir(v.ID), imageFile))
	if err != nil {
		t.Fatal(err)
	}
	staging, target := stage(t, p, v.ID, false)
	if devs, err := loopDevices(image); err != nil || len(devs) != 1 {
		t.Fatalf("loop devices of the staged image = %v, %v; want one", devs, err)
	}
	unstage(t, p, v.ID, staging, target)
	if devs, err := loopDevices(image); err != nil || len(devs) != 0 {
		t.Fatalf("loop devices after Unstage = %v, %v; want none", devs, err)
	}
	if err := p.Unstage(ctx, v.ID, staging); err != nil {
		t.Fatalf("second Unstage: %v", err)
	}
}

func TestPublishErrors(t *testing.T) {
	needRoot(t)
	ctx := testContext(t)
	p := mountedProvider(t)
	if _, err := p.Create(ctx, volume.CreateRequest{Name: "v"}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tests := []struct {
		name string
		req  volume.PublishRequest
		want error
	}{
		{"not staged", volume.PublishRequest{VolumeID: "v", StagingPath: dir, TargetPath: filepath.Join(dir, "t")}, volume.ErrInvalid},
		{"missing staging", volume.PublishRequest{VolumeID: "v", StagingPath: filepath.Join(dir, "none"), TargetPath: filepath.Join(dir, "t")}, volume.ErrInvalid},
		{"no staging path", volume.PublishRequest{VolumeID: "v", TargetPath: filepath.Join(dir, "t")}, volume.ErrInvalid},
		{"bad ID", volume.PublishRequest{VolumeID: "../v", StagingPath: dir, TargetPath: filepath.Join(dir, "t")}, volume.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := p.Publish(ctx, tt.req); !errors.Is(err, tt.want) {
				t.Errorf("Publish: %v; want %v", err, tt.want)
			}
		})
	}
	if err := p.Stage(ctx, volume.StageRequest{VolumeID: "v", StagingPath: filepath.Join(dir, "none")}); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("Stage on a missing path: %v; want ErrInvalid", err)
	}
	if err := p.Unpublish(ctx, "v", filepath.Join(dir, "never")); err != nil {
		t.Errorf("Unpublish of what was never published: %v", err)
	}
}

func TestUnknownVolume(t *testing.T) {
	ctx := testContext(t)
	p := newProvider(t, t.TempDir())
	dir := t.TempDir()
	if _, err := p.Stats(ctx, "nope", dir); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Stats: %v; want ErrNotFound", err)
	}
	if err := p.Stage(ctx, volume.StageRequest{VolumeID: "nope", StagingPath: dir}); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Stage: %v; want ErrNotFound", err)
	}
	if err := p.Publish(ctx, volume.PublishRequest{VolumeID: "nope", StagingPath: dir, TargetPath: filepath.Join(dir, "t")}); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Publish: %v; want ErrNotFound", err)
	}
}

// TestLoopFoundThroughOtherPath: a provider that reaches its root by another
// path than the one the image was attached through (as a sidecar does after
// a restart, or with its own view of the host's paths) still knows the
// image is attached, refuses to delete it, and waits for its loop device
// to go when it unstages; no loop device is left.
func TestLoopFoundThroughOtherPath(t *testing.T) {
	needMount(t, fsExt4)
	ctx := testContext(t)
	p := mountedProvider(t)
	v, err := p.Create(ctx, volume.CreateRequest{Name: "v", CapacityBytes: 8 * mib})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	// The same root through a bind mount, by a second provider.
	other := t.TempDir()
	if err := unix.Mount(p.root, other, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s on %s: %v", p.root, other, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(other, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", other, err)
		}
	})
	q := newProvider(t, other)
	image := filepath.Join(p.dir(v.ID), imageFile)
	staging, target := stage(t, p, v.ID, false)
	devs, err := loopDevices(filepath.Join(q.dir(v.ID), imageFile))
	if err != nil || len(devs) != 1 {
		t.Fatalf("loop devices of the staged image through the other path = %v, %v; want one", devs, err)
	}
	if err := q.Delete(ctx, v.ID); !errors.Is(err, volume.ErrInUse) {
		t.Fatalf("Delete of a staged volume through the other path: %v; want ErrInUse", err)
	}
	unstage(t, q, v.ID, staging, target)
	// Unstage waited for the device to detach.
	if devs, err := loopDevices(image); err != nil || len(devs) != 0 {
		t.Fatalf("loop devices of the image after Unstage through the other path = %v, %v; want none", devs, err)
	}
	if err := q.Delete(ctx, v.ID); err != nil {
		t.Fatalf("Delete after Unstage: %v", err)
	}
}
