package loopdev

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// control is the loop device allocator.
const control = "/dev/loop-control"

// Options says how Attach sets up a device.
type Options struct {
	// ReadOnly opens the device read-only and marks it so; the backing
	// file may then be open read-only.
	ReadOnly bool
	// DirectIO asks for direct I/O: reads and writes go straight to the
	// file, without a second page cache. The kernel falls back to
	// buffered I/O when the file cannot do it (see Device.DirectIO).
	DirectIO bool
	// Autoclear detaches the device when its last user closes it: the
	// file system mounted on it, or, before the mount, Device.Close.
	Autoclear bool
	// BlockSize is the device's logical block size; 0 is the kernel's
	// default.
	BlockSize uint32
}

// Device is an attached loop device, open. Its descriptor keeps it
// attached until Detach, or, with autoclear, until Close and the last
// other user are gone.
type Device struct {
	Path string // /dev/loopN
	Name string // loopN
	fd   int
}

// Attach attaches the open file backing to a free loop device and returns
// it open. The caller may close backing afterwards: the device holds the
// file. When ctx ends first it returns ctx's error as it is.
func Attach(ctx context.Context, backing *os.File, opts Options) (*Device, error) {
	ctl, err := unix.Open(control, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: control, Err: err}
	}
	defer unix.Close(ctl)
	mode := unix.O_RDWR
	if opts.ReadOnly {
		mode = unix.O_RDONLY
	}
	raw, err := backing.SyscallConn()
	if err != nil {
		return nil, err
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
			return nil, fmt.Errorf("get free loop device: %w", err)
		}
		path := fmt.Sprintf("/dev/loop%d", n)
		fd, err := unix.Open(path, mode|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: path, Err: err}
		}
		var cerr error
		if err := raw.Control(func(b uintptr) { cerr = configure(fd, int(b), backing.Name(), opts) }); err != nil {
			cerr = err
		}
		if cerr == nil {
			return &Device{Path: path, Name: filepath.Base(path), fd: fd}, nil
		}
		unix.Close(fd)
		if !errors.Is(cerr, unix.EBUSY) {
			return nil, fmt.Errorf("attach %s to %s: %w", backing.Name(), path, cerr)
		}
	}
	return nil, fmt.Errorf("attach loop device: every free device was taken by others (%d attempts)", attempts)
}

// configure binds backing to the loop device fd, with LOOP_CONFIGURE
// (Linux 5.8) or else LOOP_SET_FD and LOOP_SET_STATUS64.
func configure(fd, backing int, name string, opts Options) error {
	var flags uint32
	if opts.Autoclear {
		flags |= unix.LO_FLAGS_AUTOCLEAR
	}
	if opts.ReadOnly {
		flags |= unix.LO_FLAGS_READ_ONLY
	}
	if opts.DirectIO {
		flags |= unix.LO_FLAGS_DIRECT_IO
	}
	info := unix.LoopInfo64{Flags: flags}
	copy(info.File_name[:len(info.File_name)-1], name)
	err := unix.IoctlLoopConfigure(fd, &unix.LoopConfig{Fd: uint32(backing), Size: opts.BlockSize, Info: info})
	if err == nil || !(errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY)) {
		return err
	}
	return setFD(fd, backing, info, opts)
}

// setFD does what configure does for kernels before 5.8, in steps.
// LOOP_SET_FD takes read-only from the file's mode, and LOOP_SET_STATUS64
// only the autoclear flag.
func setFD(fd, backing int, info unix.LoopInfo64, opts Options) error {
	if err := unix.IoctlSetInt(fd, unix.LOOP_SET_FD, backing); err != nil {
		return err
	}
	info.Flags &= unix.LO_FLAGS_AUTOCLEAR
	if err := unix.IoctlLoopSetStatus64(fd, &info); err != nil {
		return errors.Join(err, unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0))
	}
	if opts.DirectIO {
		// As LOOP_CONFIGURE does, keep buffered I/O where direct I/O
		// cannot be had.
		_ = unix.IoctlSetInt(fd, unix.LOOP_SET_DIRECT_IO, 1)
	}
	if opts.BlockSize != 0 {
		if err := unix.IoctlSetInt(fd, unix.LOOP_SET_BLOCK_SIZE, int(opts.BlockSize)); err != nil {
			return errors.Join(err, unix.IoctlSetInt(fd, unix.LOOP_CLR_FD, 0))
		}
	}
	return nil
}

// Open opens the loop device named name ("loop3"), attached or not, to
// detach it or ask about it.
func Open(name string) (*Device, error) {
	path := "/dev/" + name
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return &Device{Path: path, Name: name, fd: fd}, nil
}

// Close closes the device. It stays attached unless it was set to
// autoclear and nothing else uses it. Repeated calls do nothing.
func (d *Device) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	if err != nil {
		return &os.PathError{Op: "close", Path: d.Path, Err: err}
	}
	return nil
}

// DetachWait bounds how long Detach waits for the kernel to release the
// device.
const DetachWait = 10 * time.Second

// Detach detaches the device, closes it, and waits (up to 10s, less when
// ctx ends first) until the kernel has released it and its backing file.
// A device attached to nothing detaches at once. Detaching a device that
// something else holds open (a mounted file system) leaves it to detach
// when that goes; Detach then fails with a wrapped unix.EBUSY when the
// wait ends.
func (d *Device) Detach(ctx context.Context) error {
	if d.fd < 0 {
		return fmt.Errorf("detach %s: %w", d.Path, os.ErrClosed)
	}
	err := unix.IoctlSetInt(d.fd, unix.LOOP_CLR_FD, 0)
	d.Close()
	if err != nil && !errors.Is(err, unix.ENXIO) { // ENXIO: not attached
		return fmt.Errorf("detach %s: %w", d.Path, err)
	}
	ctx, cancel := context.WithTimeout(ctx, DetachWait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if !attached(d.Name) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("detach %s: still attached: %w (%v)", d.Path, unix.EBUSY, ctx.Err())
		case <-tick.C:
		}
	}
}

// attached reports whether the loop device named name has a backing file.
func attached(name string) bool {
	_, err := os.Stat("/sys/block/" + name + "/loop/backing_file")
	return !errors.Is(err, fs.ErrNotExist)
}

// DirectIO reports whether the kernel kept direct I/O on for the device;
// it falls back to buffered I/O when the file cannot do it.
func (d *Device) DirectIO() bool {
	b, err := os.ReadFile("/sys/block/" + d.Name + "/loop/dio")
	return err == nil && strings.TrimSpace(string(b)) == "1"
}

// Number returns the device's major and minor number.
func (d *Device) Number() (major, minor uint32, err error) {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return 0, 0, &os.PathError{Op: "stat", Path: d.Path, Err: err}
	}
	return unix.Major(st.Rdev), unix.Minor(st.Rdev), nil
}

// SetCapacity makes the device take its file's size, after the file grew.
func (d *Device) SetCapacity() error {
	if err := unix.IoctlSetInt(d.fd, unix.LOOP_SET_CAPACITY, 0); err != nil {
		return fmt.Errorf("resize %s: %w", d.Path, err)
	}
	return nil
}

// Busy reports whether something holds the device open exclusively, as a
// mounted file system does (in this mount namespace or any other).
func (d *Device) Busy() (bool, error) {
	fd, err := unix.Open(d.Path, unix.O_RDONLY|unix.O_EXCL|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.EBUSY) {
		return true, nil
	}
	if err != nil {
		return false, &os.PathError{Op: "open", Path: d.Path, Err: err}
	}
	unix.Close(fd)
	return false, nil
}

// Find returns the names of the loop devices (e.g. "loop3") backed by the
// file at path, matched by device and inode. A missing file has none.
func Find(path string) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, nil
		}
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	return find(&st, filepath.Base(path))
}

// FindFile returns the names of the loop devices backed by the open file f,
// matched by device and inode.
func FindFile(f *os.File) ([]string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return nil, &os.PathError{Op: "stat", Path: f.Name(), Err: err}
	}
	return find(&st, filepath.Base(f.Name()))
}

// find returns the loop devices whose backing file is st. Only devices
// whose backing file has the base name base are opened to ask, so that a
// device of someone else's that hangs (one backed by a stuck FUSE file,
// say) does not hang this.
func find(st *unix.Stat_t, base string) ([]string, error) {
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
		backing := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), " (deleted)")
		if filepath.Base(backing) != base {
			continue
		}
		name := filepath.Base(filepath.Dir(filepath.Dir(f)))
		dev, ino, err := Backing(name)
		if err != nil {
			return nil, err
		}
		if ino != 0 && dev == uint64(st.Dev) && ino == st.Ino {
			devs = append(devs, name)
		}
	}
	return devs, nil
}

// Backing returns the device and inode of the file backing the loop
// device named name; 0, 0 when it has none, is gone, or its file no
// longer answers (a FUSE file whose server is gone), since such a file is
// no file that can be looked up either.
func Backing(name string) (dev, ino uint64, err error) {
	path := "/dev/" + name
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV) {
		return 0, 0, nil // removed meanwhile, or no device node for it
	}
	if err != nil {
		return 0, 0, &os.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)
	info, err := unix.IoctlLoopGetStatus64(fd)
	if errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENOTCONN) {
		return 0, 0, nil // not attached; or its FUSE server is gone
	}
	if err != nil {
		return 0, 0, &os.PathError{Op: "get loop status", Path: path, Err: err}
	}
	return info.Device, info.Inode, nil
}

// MountedAt returns the name of the loop device whose file system is
// mounted at path, or "" when path is no mount point or its file system is
// not on a loop device. It asks the mount itself, not the loop device's
// backing file, so it works when that file no longer answers (the FUSE
// file of a provider that died) and in whatever mount namespace the device
// was attached.
func MountedAt(path string) (string, error) {
	st, err := statx(path)
	if err != nil {
		return "", err
	}
	if !mountRoot(path, st) {
		return "", nil
	}
	link, err := os.Readlink(fmt.Sprintf("/sys/dev/block/%d:%d", st.Dev_major, st.Dev_minor))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil // not a block device
	}
	if err != nil {
		return "", err
	}
	name := filepath.Base(link)
	if _, err := os.Stat("/sys/block/" + name + "/loop"); err != nil {
		return "", nil // another kind of block device
	}
	return name, nil
}
