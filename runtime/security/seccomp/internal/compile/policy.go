// Package compile compiles the default seccomp filter of a container
// with go-seccomp-bpf. Package seccomp serves the programs: compiled at
// build time where it can (see its golden test), here at run time
// elsewhere.
package compile

// deniedSyscalls fail with EPERM under the default filter: what Docker's
// default profile denies to a container without extra capabilities. The
// container's init mounts and pivots before the filter is loaded, so the
// mount family is denied too. ptrace stays allowed, as in Docker on
// kernels from 4.8.
var deniedSyscalls = []string{
	// kernel and module loading, rebooting
	"kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
	"create_module", "query_module", "get_kernel_syms", "reboot",
	// raw I/O and swap
	"iopl", "ioperm", "swapon", "swapoff",
	// filesystems and namespaces
	"mount", "umount2", "pivot_root", "fsopen", "fsconfig", "fsmount", "fspick",
	"move_mount", "open_tree", "mount_setattr", "unshare", "setns",
	"open_by_handle_at", "name_to_handle_at", "quotactl", "quotactl_fd", "nfsservctl",
	// keyrings, BPF, perf, userfaultfd
	"keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
	// clock, accounting, kernel log, obsolete calls
	"settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "acct",
	"lookup_dcookie", "syslog", "vhangup", "uselib", "ustat", "sysfs", "_sysctl",
}

// allowedPersonalities are the personality(2) arguments Docker allows:
// PER_LINUX, PER_LINUX32, UNAME26 with either, and 0xffffffff (query).
var allowedPersonalities = []uint64{0x0, 0x8, 0x20000, 0x20008, 0xffffffff}
