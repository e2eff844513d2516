package security

import (
	"fmt"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
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

// LoadSeccomp installs the default filter on every thread of the process
// (TSYNC): all system calls are allowed except deniedSyscalls and
// personality with arguments Docker does not allow, which fail with
// EPERM; the x32 ABI fails with ENOSYS. On x86_64 a second filter denies
// the same calls through the i386 ABI. Without no_new_privs it needs
// CAP_SYS_ADMIN.
func LoadSeccomp() error {
	if !seccomp.Supported() {
		return fmt.Errorf("load seccomp filter: %w", volume.ErrNotSupported)
	}
	if err := seccomp.LoadFilter(defaultFilter()); err != nil {
		return fmt.Errorf("load seccomp filter: %w", err)
	}
	if native, err := arch.GetInfo(""); err == nil && native.ID == arch.X86_64.ID {
		if err := loadCompatFilter(); err != nil {
			return fmt.Errorf("load seccomp filter for the i386 ABI: %w", err)
		}
	}
	return nil
}

func defaultFilter() seccomp.Filter {
	var notAllowed seccomp.ArgumentConditions
	for _, p := range allowedPersonalities {
		notAllowed = append(notAllowed, seccomp.Condition{Argument: 0, Operation: seccomp.NotEqual, Value: p})
	}
	return seccomp.Filter{
		Flag: seccomp.FilterFlagTSync,
		Policy: seccomp.Policy{
			DefaultAction: seccomp.ActionAllow,
			Syscalls: []seccomp.SyscallGroup{{
				Action: seccomp.ActionErrno,
				Names:  deniedSyscalls,
				NamesWithCondtions: []seccomp.NameWithConditions{
					{Name: "personality", Conditions: notAllowed},
				},
			}},
		},
	}
}
