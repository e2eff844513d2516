package rbd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
)

// loopControl is the loop device allocator.
const loopControl = "/dev/loop-control"

// loopDevice is a loop device attached to a file. Its open descriptor
// keeps it attached until detach.
type loopDevice struct {
	path string // /dev/loopN
	name string // loopN
	fd   int
}

// attachLoop attaches file to a free loop device with direct I/O (reads
// and writes go straight to the file, without a second page cache), read
// only when readOnly is set.
func attachLoop(ctx context.Context, file string, readOnly bool) (*loopDevice, error) {
	mode := unix.O_RDWR
	if readOnly {
		mode = unix.O_RDONLY
	}
	backing, err := unix.Open(file, mode|unix.O_CLOEXEC|unix.O_DIRECT, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", volume.ErrUnavailable, &os.PathError{Op: "open", Path: file, Err: err})
	}
	defer unix.Close(backing)
	ctl, err := unix.Open(loopControl, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", volume.ErrUnavailable, &os.PathError{Op: "open", Path: loopControl, Err: err})
	}
	defer unix.Close(ctl)
	flags := uint32(unix.LO_FLAGS_DIRECT_IO)
	if readOnly {
		flags |= unix.LO_FLAGS_READ_ONLY
	}
	// Another process may take the free device between asking for it and
	// configuring it; then the kernel says EBUSY and we ask again.
	const attempts = 32
	for range attempts {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		n, err := unix.IoctlRetInt(ctl, unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("%w: get free loop device: %w", volume.ErrUnavailable, err)
		}
		dev := fmt.Sprintf("/dev/loop%d", n)
		fd, err := unix.Open(dev, mode|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", volume.ErrUnavailable, &os.PathError{Op: "open", Path: dev, Err: err})
		}
		cfg := unix.LoopConfig{Fd: uint32(backing), Size: 512, Info: unix.LoopInfo64{Flags: flags}}
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], file)
		err = unix.IoctlLoopConfigure(fd, &cfg)
		if err == nil {
			return &loopDevice{path: dev, name: filepath.Base(dev), fd: fd}, nil
		}
		unix.Close(fd)
		if !errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("%w: attach %s to %s: %w", volume.ErrUnavailable, file, dev, err)
		}
	}
	return nil, fmt.Errorf("%w: attach loop device: every free device was taken by others (%d attempts)", volume.ErrUnavailable, attempts)
}

// directIO reports whether the kernel kept direct I/O on for the device;
// it falls back to buffered I/O when the file cannot do it.
func (l *loopDevice) directIO() bool {
	b, err := os.ReadFile("/sys/block/" + l.name + "/loop/dio")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// devNumber returns the device's major and minor number.
func (l *loopDevice) devNumber() (uint32, uint32, error) {
	var st unix.Stat_t
	if err := unix.Fstat(l.fd, &st); err != nil {
		return 0, 0, err
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev), nil
}

// refreshSize makes the device take the file's new size after the image
// grew.
func (l *loopDevice) refreshSize() error {
	if err := unix.IoctlSetInt(l.fd, unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("%w: resize %s: %w", volume.ErrUnavailable, l.path, err)
	}
	return nil
}

// busy reports whether something other than the provider holds the device
// open exclusively, as a mounted file system does: a mount that another
// mount namespace copied keeps the file system alive after the unmount
// here.
func (l *loopDevice) busy() (bool, error) {
	fd, err := unix.Open(l.path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return true, nil
	}
	if err != nil {
		return false, &os.PathError{Op: "open", Path: l.path, Err: err}
	}
	unix.Close(fd)
	return false, nil
}

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
const detachWait = 10 * time.Second

// detach detaches the device and waits until the kernel has released it,
// so that the FUSE file is no longer open.
func (l *loopDevice) detach(ctx context.Context) error {
	err := unix.IoctlSetInt(l.fd, unix.LOOP_CLR_FD, 0)
	unix.Close(l.fd)
	l.fd = -1
	if err != nil && !errors.Is(err, unix.ENXIO) { // ENXIO: not attached
		return fmt.Errorf("%w: detach %s: %w", volume.ErrUnavailable, l.path, err)
	}
	ctx, cancel := context.WithTimeout(ctx, detachWait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		_, err := os.Stat("/sys/block/" + l.name + "/loop/backing_file")
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %s still attached: %w", volume.ErrInUse, l.path, ctx.Err())
		case <-tick.C:
		}
	}
}

// loopsBacking returns the loop devices (e.g. "loop3") whose backing file
// is below dir.
func loopsBacking(dir string) ([]string, error) {
	files, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	var devs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue // detached meanwhile
		}
		if err != nil {
			return nil, err
		}
		if p := strings.TrimSuffix(string(b), "\n"); p == dir || strings.HasPrefix(p, dir+"/") {
			devs = append(devs, filepath.Base(filepath.Dir(filepath.Dir(f))))
		}
	}
	return devs, nil
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
