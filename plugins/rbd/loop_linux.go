package rbd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/loopdev"
	"github.com/stowage/stowage/plugins/volume"
)

// loopDevice is a loop device attached to a volume's FUSE file. Its open
// descriptor keeps it attached until detach.
type loopDevice struct {
	*loopdev.Device
	path string // /dev/loopN
}

// attachLoop attaches file to a free loop device with direct I/O (reads
// and writes go straight to the file, without a second page cache), read
// only when readOnly is set.
func attachLoop(ctx context.Context, file string, readOnly bool) (*loopDevice, error) {
	mode := os.O_RDWR
	if readOnly {
		mode = os.O_RDONLY
	}
	f, err := os.OpenFile(file, mode|syscall.O_DIRECT, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", volume.ErrUnavailable, err)
	}
	defer f.Close()
	d, err := loopdev.Attach(ctx, f, loopdev.Options{ReadOnly: readOnly, DirectIO: true, BlockSize: 512})
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", volume.ErrUnavailable, err)
	}
	return &loopDevice{Device: d, path: d.Path}, nil
}

// directIO reports whether the kernel kept direct I/O on for the device;
// it falls back to buffered I/O when the file cannot do it.
func (l *loopDevice) directIO() bool { return l.DirectIO() }

// devNumber returns the device's major and minor number.
func (l *loopDevice) devNumber() (uint32, uint32, error) { return l.Number() }

// refreshSize makes the device take the file's new size after the image
// grew.
func (l *loopDevice) refreshSize() error {
	if err := l.SetCapacity(); err != nil {
		return fmt.Errorf("%w: %w", volume.ErrUnavailable, err)
	}
	return nil
}

// busy reports whether something other than the provider holds the device
// open exclusively, as a mounted file system does: a mount that another
// mount namespace copied keeps the file system alive after the unmount
// here.
func (l *loopDevice) busy() (bool, error) { return l.Busy() }

// busyWait bounds how long waitFree waits for other mount namespaces to
// drop their copies of a file system. A container runtime that sets up a
// container copies every mount of the host for a moment, until it
// switches to the container's root and detaches the rest.
const busyWait = 15 * time.Second

// waitFree waits until the device is no longer busy, up to busyWait, and
// reports whether it still is.
func (l *loopDevice) waitFree(ctx context.Context) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, busyWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		busy, err := l.busy()
		if err != nil || !busy {
			return busy, err
		}
		select {
		case <-ctx.Done():
			return true, nil
		case <-tick.C:
		}
	}
}

// detachWait bounds how long detach waits for the kernel to release the
// device.
const detachWait = loopdev.DetachWait

// detach detaches the device and waits until the kernel has released it,
// so that the FUSE file is no longer open.
func (l *loopDevice) detach(ctx context.Context) error {
	err := l.Detach(ctx)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w: %w", volume.ErrInUse, err)
	}
	return fmt.Errorf("%w: %w", volume.ErrUnavailable, err)
}

// detachStale detaches the loop device that an earlier run of the
// provider left under the file system it mounted at path, which the
// caller has just unmounted: name is what loopdev.MountedAt said before.
// It fails with ErrInUse while another mount namespace still mounts it.
func detachStale(ctx context.Context, id, name string) (string, error) {
	d, err := loopdev.Open(name)
	if err != nil {
		return "", fmt.Errorf("%w: %w", volume.ErrUnavailable, err)
	}
	l := &loopDevice{Device: d, path: d.Path}
	if busy, _ := l.busy(); busy {
		d.Close()
		return "", fmt.Errorf("%w: unstage volume %q: %s of an earlier run is still mounted", volume.ErrInUse, id, l.path)
	}
	if err := l.detach(ctx); err != nil {
		return "", fmt.Errorf("unstage volume %q: %w", id, err)
	}
	return l.path, nil
}

// staleFUSE returns the FUSE mounts below runDir, from an earlier run of
// the provider in this mount namespace: their volumes stay attached until
// unstaged. (A run in another mount namespace, as an earlier container of
// the provider, leaves none visible here.)
func staleFUSE(runDir string) ([]string, error) {
	dir, err := filepath.EvalSymlinks(runDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return !strings.HasPrefix(m.Mountpoint, dir+"/") || !strings.HasPrefix(m.FSType, "fuse"), false
	})
	if err != nil {
		return nil, err
	}
	var out []string
	for _, m := range mounts {
		out = append(out, m.Mountpoint)
	}
	return out, nil
}

// holders returns the processes (as "pid N (comm)") whose mount namespace
// mounts the device major:minor, at most one per namespace and at most
// five, to say who keeps a file system alive.
func holders(major, minor uint32) []string {
	want := fmt.Sprintf(" %d:%d ", major, minor)
	seen := map[string]bool{}
	var out []string
	procs, _ := os.ReadDir("/proc")
	for _, p := range procs {
		pid, err := strconv.Atoi(p.Name())
		if err != nil {
			continue
		}
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
		if err != nil || seen[ns] {
			continue
		}
		seen[ns] = true
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/mountinfo", pid))
		if err != nil || !strings.Contains(string(b), want) {
			continue
		}
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		out = append(out, fmt.Sprintf("pid %d (%s)", pid, strings.TrimSpace(string(comm))))
		if len(out) == 5 {
			break
		}
	}
	return out
}
