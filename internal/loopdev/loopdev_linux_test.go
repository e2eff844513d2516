package loopdev

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
)

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// sparseFile creates a sparse file of size bytes in dir.
func sparseFile(t *testing.T, dir, name string, size int64) string {
	t.Helper()
	path := filepath.Join(dir, name)
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	return path
}

// attach attaches the file at path, opened with flag, and detaches the
// device when the test ends if it is still attached to that file.
func attach(t *testing.T, path string, flag int, opts Options) *Device {
	t.Helper()
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	d, err := Attach(testContext(t), f, opts)
	if err != nil {
		t.Fatalf("Attach %s: %v", path, err)
	}
	t.Cleanup(func() {
		d.Close()
		dev, ino, err := Backing(d.Name)
		if err != nil || ino != st.Ino || dev != uint64(st.Dev) {
			return // detached already, or someone else's by now
		}
		o, err := Open(d.Name)
		if err == nil {
			err = o.Detach(context.Background())
		}
		if err != nil {
			t.Errorf("clean up %s: %v", d.Path, err)
		}
	})
	return d
}

func sysfs(t *testing.T, d *Device, attr string) string {
	t.Helper()
	b, err := os.ReadFile("/sys/block/" + d.Name + "/" + attr)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func mustFind(t *testing.T, path string) []string {
	t.Helper()
	devs, err := Find(path)
	if err != nil {
		t.Fatalf("Find %s: %v", path, err)
	}
	return devs
}

// waitDetached waits until d, closed, is no longer attached to file.
func waitDetached(ctx context.Context, t *testing.T, file string, d *Device) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for len(mustFind(t, file)) != 0 {
		select {
		case <-ctx.Done():
			t.Fatalf("%s still attached after Close", d.Name)
		case <-tick.C:
		}
	}
}

func TestAttachFindDetach(t *testing.T) {
	testenv.Require(t, "root", "loop")
	ctx := testContext(t)
	dir := t.TempDir()
	file := sparseFile(t, dir, "image", 8<<20)
	d := attach(t, file, os.O_RDWR, Options{})
	if got := mustFind(t, file); !slices.Equal(got, []string{d.Name}) {
		t.Fatalf("Find = %v; want [%s]", got, d.Name)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, err := FindFile(f); err != nil || !slices.Equal(got, []string{d.Name}) {
		t.Errorf("FindFile = %v, %v; want [%s]", got, err, d.Name)
	}
	if got := sysfs(t, d, "size"); got != "16384" { // 512-byte sectors
		t.Errorf("size of %s = %s sectors; want 16384", d.Name, got)
	}
	if got := sysfs(t, d, "loop/autoclear"); got != "0" {
		t.Errorf("autoclear = %s; want 0", got)
	}
	// Another file of the same name is not the image.
	other := sparseFile(t, t.TempDir(), "image", 8<<20)
	if got := mustFind(t, other); len(got) != 0 {
		t.Errorf("Find of another file named image = %v; want none", got)
	}
	if got := mustFind(t, filepath.Join(dir, "missing")); len(got) != 0 {
		t.Errorf("Find of a missing file = %v; want none", got)
	}

	// The file grows; the device follows on SetCapacity.
	if err := os.Truncate(file, 16<<20); err != nil {
		t.Fatal(err)
	}
	if err := d.SetCapacity(); err != nil {
		t.Fatalf("SetCapacity: %v", err)
	}
	if got := sysfs(t, d, "size"); got != "32768" {
		t.Errorf("size after SetCapacity = %s sectors; want 32768", got)
	}

	if err := d.Detach(ctx); err != nil {
		t.Fatalf("Detach: %v", err)
	}
	if got := mustFind(t, file); len(got) != 0 {
		t.Errorf("Find after Detach = %v; want none", got)
	}
	if err := d.Detach(ctx); !errors.Is(err, os.ErrClosed) {
		t.Errorf("second Detach: %v; want os.ErrClosed", err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("Close after Detach: %v", err)
	}
}

func TestAttachOptions(t *testing.T) {
	testenv.Require(t, "root", "loop")
	dir := t.TempDir()
	t.Run("ReadOnly", func(t *testing.T) {
		file := sparseFile(t, dir, "ro", 1<<20)
		d := attach(t, file, os.O_RDONLY, Options{ReadOnly: true})
		if got := sysfs(t, d, "ro"); got != "1" {
			t.Errorf("ro = %s; want 1", got)
		}
		f, err := os.OpenFile(d.Path, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.Write(make([]byte, 4096))
			f.Close()
		}
		if err == nil {
			t.Errorf("a write to %s succeeded", d.Path)
		}
	})
	t.Run("DirectIO", func(t *testing.T) {
		file := sparseFile(t, dir, "dio", 1<<20)
		d := attach(t, file, os.O_RDWR|unix.O_DIRECT, Options{DirectIO: true, BlockSize: 4096})
		// The kernel may fall back to buffered I/O, but not on the
		// local file systems tests run on.
		if !d.DirectIO() {
			t.Errorf("direct I/O is off on %s (backed by a file on %s)", d.Name, dir)
		}
		if got := sysfs(t, d, "queue/logical_block_size"); got != "4096" {
			t.Errorf("logical block size = %s; want 4096", got)
		}
	})
	t.Run("Autoclear", func(t *testing.T) {
		ctx := testContext(t)
		file := sparseFile(t, dir, "auto", 1<<20)
		d := attach(t, file, os.O_RDWR, Options{Autoclear: true})
		if got := sysfs(t, d, "loop/autoclear"); got != "1" {
			t.Errorf("autoclear = %s; want 1", got)
		}
		if d.DirectIO() {
			t.Errorf("direct I/O is on without asking")
		}
		if err := d.Close(); err != nil {
			t.Fatal(err)
		}
		// The kernel detaches it when its last user is gone.
		waitDetached(ctx, t, file, d)
	})
	t.Run("WithoutLoopConfigure", func(t *testing.T) {
		ctx := testContext(t)
		file := sparseFile(t, dir, "legacy", 1<<20)
		f, err := os.OpenFile(file, os.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		ctl, err := os.OpenFile(control, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer ctl.Close()
		opts := Options{ReadOnly: true, DirectIO: true, Autoclear: true, BlockSize: 4096}
		info := unix.LoopInfo64{Flags: unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_READ_ONLY | unix.LO_FLAGS_DIRECT_IO}
		var d *Device
		for d == nil { // another process may take the free device first
			n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
			if err != nil {
				t.Fatal(err)
			}
			if d, err = Open(fmt.Sprintf("loop%d", n)); err != nil {
				t.Fatal(err)
			}
			err = setFD(d.fd, int(f.Fd()), info, opts)
			if errors.Is(err, unix.EBUSY) && ctx.Err() == nil {
				d.Close()
				d = nil
				continue
			}
			if err != nil {
				d.Close()
				t.Fatalf("setFD: %v", err)
			}
		}
		defer d.Close()
		for attr, want := range map[string]string{"ro": "1", "loop/autoclear": "1", "loop/dio": "1", "queue/logical_block_size": "4096"} {
			if got := sysfs(t, d, attr); got != want {
				t.Errorf("%s = %s; want %s", attr, got, want)
			}
		}
		if got := mustFind(t, file); !slices.Equal(got, []string{d.Name}) {
			t.Errorf("Find = %v; want [%s]", got, d.Name)
		}
		// Autoclear: it goes with its last user.
		d.Close()
		waitDetached(ctx, t, file, d)
	})
	t.Run("Canceled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		f, err := os.OpenFile(sparseFile(t, dir, "canceled", 1<<20), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if d, err := Attach(ctx, f, Options{}); !errors.Is(err, context.Canceled) {
			if d != nil {
				d.Detach(context.Background())
			}
			t.Errorf("Attach with a canceled context: %v; want context.Canceled", err)
		}
	})
}

// TestFindThroughBindMount: the file is found by its device and inode
// through a path that is not the one it was attached by, and a file that
// has that path's old meaning is not taken for it.
func TestFindThroughBindMount(t *testing.T) {
	testenv.Require(t, "root", "loop")
	dir, other := t.TempDir(), t.TempDir()
	file := sparseFile(t, dir, "image", 1<<20)
	d := attach(t, file, os.O_RDWR, Options{})
	if err := unix.Mount(dir, other, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("bind %s on %s: %v", dir, other, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(other, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", other, err)
		}
	})
	if got := mustFind(t, filepath.Join(other, "image")); !slices.Equal(got, []string{d.Name}) {
		t.Errorf("Find through the bind mount = %v; want [%s]", got, d.Name)
	}
	// The path the kernel shows is the one attached by; a new file there
	// is another file.
	if err := os.Rename(file, filepath.Join(dir, "old")); err != nil {
		t.Fatal(err)
	}
	sparseFile(t, dir, "image", 1<<20)
	if got := mustFind(t, file); len(got) != 0 {
		t.Errorf("Find of a new file at the attached path = %v; want none", got)
	}
	if got := mustFind(t, filepath.Join(other, "old")); !slices.Equal(got, []string{d.Name}) {
		t.Errorf("Find of the renamed file = %v; want [%s]", got, d.Name)
	}
}

func TestMount(t *testing.T) {
	testenv.Require(t, "root", "loop", "mkfs.ext4")
	ctx := testContext(t)
	dir := t.TempDir()
	file := sparseFile(t, dir, "image", 16<<20)
	d := attach(t, file, os.O_RDWR, Options{})
	mkfs, _ := testenv.LookPath("mkfs.ext4")
	if out, err := exec.CommandContext(ctx, mkfs, "-q", "-F", d.Path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	target := filepath.Join(dir, "mnt")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	if ok, err := Mounted(target); err != nil || ok {
		t.Fatalf("Mounted before the mount = %v, %v; want false", ok, err)
	}
	if name, err := MountedAt(target); err != nil || name != "" {
		t.Errorf("MountedAt a plain directory = %q, %v; want none", name, err)
	}
	if err := Mount(d.Path, target, "ext4", unix.MS_NOATIME, "errors=remount-ro"); err != nil {
		t.Fatalf("Mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(target, unix.MNT_DETACH) })
	if ok, err := Mounted(target); err != nil || !ok {
		t.Errorf("Mounted = %v, %v; want true", ok, err)
	}
	if name, err := MountedAt(target); err != nil || name != d.Name {
		t.Errorf("MountedAt = %q, %v; want %s", name, err, d.Name)
	}
	if busy, err := d.Busy(); err != nil || !busy {
		t.Errorf("Busy while mounted = %v, %v; want true", busy, err)
	}
	if err := os.WriteFile(filepath.Join(target, "f"), make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	u, err := Statfs(target)
	if err != nil || u.CapacityBytes <= 8<<20 || u.CapacityBytes > 16<<20 || u.UsedBytes < 1<<20 ||
		u.AvailableBytes > u.CapacityBytes-u.UsedBytes || u.Inodes == 0 || u.InodesUsed < 12 || u.InodesFree != u.Inodes-u.InodesUsed {
		t.Errorf("Statfs = %+v, %v; want up to 16MiB with 1MiB and 12 inodes used", u, err)
	}
	if _, err := Statfs(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Statfs of a missing path: %v; want ErrNotExist", err)
	}
	// A bind mount of a directory is a mount, but of no loop device.
	plain := t.TempDir()
	if err := unix.Mount(dir, plain, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	if ok, err := Mounted(plain); err != nil || !ok {
		t.Errorf("Mounted of a bind mount = %v, %v; want true", ok, err)
	}
	if name, err := MountedAt(plain); err != nil || name != "" {
		t.Errorf("MountedAt a bind mount = %q, %v; want none", name, err)
	}
	if err := Unmount(plain); err != nil {
		t.Errorf("Unmount bind mount: %v", err)
	}
	if err := Mount(d.Path, filepath.Join(dir, "missing"), "ext4", 0, ""); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Mount on a missing path: %v; want ErrNotExist", err)
	}

	if err := Unmount(target); err != nil {
		t.Fatalf("Unmount: %v", err)
	}
	if ok, err := Mounted(target); err != nil || ok {
		t.Errorf("Mounted after Unmount = %v, %v; want false", ok, err)
	}
	if busy, err := d.Busy(); err != nil || busy {
		t.Errorf("Busy after Unmount = %v, %v; want false", busy, err)
	}
	for _, p := range []string{target, filepath.Join(dir, "missing")} {
		if err := Unmount(p); err != nil {
			t.Errorf("Unmount of %s, not mounted: %v", p, err)
		}
	}
	if _, err := Mounted(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Mounted of a missing path: %v; want ErrNotExist", err)
	}
	if err := d.Detach(ctx); err != nil {
		t.Errorf("Detach: %v", err)
	}
}
