package security

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/moby/sys/capability"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
)

// DropCapabilities reduces the calling thread to the capabilities in keep:
// the bounding set loses every other one, the effective, permitted and
// inheritable sets become keep, and the ambient set is cleared. Unknown
// names fail with ErrInvalid before anything changes. Dropping the
// bounding set needs CAP_SETPCAP, so it runs before the other sets change.
func DropCapabilities(keep []string) error {
	caps, err := parseCapabilities(keep)
	if err != nil {
		return err
	}
	c, err := capability.NewPid2(0)
	if err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	if err := c.Load(); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	if !c.Get(capability.EFFECTIVE, capability.CAP_SETPCAP) {
		// Without it the library would skip the bounding set silently.
		return fmt.Errorf("drop capabilities: CAP_SETPCAP not effective: %w", unix.EPERM)
	}
	c.Clear(capability.BOUNDS | capability.CAPS | capability.AMBS)
	c.Set(capability.BOUNDING|capability.EFFECTIVE|capability.PERMITTED|capability.INHERITABLE, caps...)
	if err := c.Apply(capability.BOUNDS | capability.CAPS | capability.AMBS); err != nil {
		return fmt.Errorf("drop capabilities: %w", err)
	}
	return nil
}

// NoNewPrivileges sets no_new_privs on the calling thread, inherited by
// its children and kept across execve: setuid bits and file capabilities
// no longer raise privileges, and seccomp filters may be loaded without
// CAP_SYS_ADMIN.
func NoNewPrivileges() error {
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("set no_new_privs: %w", err)
	}
	return nil
}

// LoadSeccomp installs seccomp filters on every thread of the process
// (TSYNC), in the order given: raw BPF programs, each an array of struct
// sock_filter in the machine's byte order, as package seccomp compiles
// them. Without no_new_privs it needs CAP_SYS_ADMIN. No program, or one
// that is not a whole number of instructions, is ErrInvalid; a kernel
// without seccomp filters is ErrNotSupported.
func LoadSeccomp(programs [][]byte) error {
	if len(programs) == 0 {
		return fmt.Errorf("load seccomp filter: no program: %w", volume.ErrInvalid)
	}
	// All are checked before one is loaded.
	decoded := make([][]unix.SockFilter, len(programs))
	for i, p := range programs {
		n := len(p) / sockFilterSize
		if n == 0 || len(p)%sockFilterSize != 0 || n > unix.BPF_MAXINSNS {
			return fmt.Errorf("load seccomp filter: program of %d bytes: %w", len(p), volume.ErrInvalid)
		}
		decoded[i] = make([]unix.SockFilter, n)
		for j := range decoded[i] {
			b := p[j*sockFilterSize:]
			decoded[i][j] = unix.SockFilter{Code: binary.NativeEndian.Uint16(b), Jt: b[2], Jf: b[3], K: binary.NativeEndian.Uint32(b[4:])}
		}
	}
	for _, filters := range decoded {
		if err := loadProgram(filters); err != nil {
			return fmt.Errorf("load seccomp filter: %w", err)
		}
	}
	return nil
}

// sockFilterSize is the size of struct sock_filter.
const sockFilterSize = 8

func loadProgram(filters []unix.SockFilter) error {
	fprog := unix.SockFprog{Len: uint16(len(filters)), Filter: &filters[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER,
		unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	switch {
	case errno == unix.ENOSYS || errno == unix.EINVAL && !filtersSupported():
		return fmt.Errorf("%w: %w", errno, volume.ErrNotSupported)
	case errno != 0:
		return errno
	case r != 0:
		// TSYNC names the thread it could not synchronise.
		return fmt.Errorf("thread %d cannot take the filter", r)
	}
	return nil
}

// filtersSupported reports whether the kernel has seccomp filters: asking
// for the mode is EINVAL without CONFIG_SECCOMP.
func filtersSupported() bool {
	_, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0)
	return err == nil
}
