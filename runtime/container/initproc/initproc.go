// Package initproc is the part of a container that runs inside it: the
// process that the runtime starts in the new namespaces builds the root
// (overlay, /proc, /sys, /dev, volumes, pivot_root, masks), sets the
// hostname, brings up the loopback, drops privileges and executes the
// command in place of itself. With Config.Init it instead stays as the
// container's PID 1 (a minimal init, like `docker run --init`): it starts
// the command as a child, forwards signals to it, reaps every zombie and
// exits with the command's status.
//
// The package holds only that code and imports little, so that the
// stow-init binary (cmd/stow-init) that runs it starts in about a
// millisecond. The runtime (package container) speaks to it over the
// protocol below: it starts the process with EnvMode in its environment
// and FDConfig and FDStatus open, writes a Config as JSON on FDConfig and,
// once it has put the process into the container's cgroup (or, with
// Config.Cgroup, recorded it while the process joins by itself), the byte
// GoAhead. An Error comes back on FDStatus when the command cannot run;
// FDStatus closes on exec, so EOF without a message means the command
// runs.
package initproc

// EnvMode names the variable that tells the process what to be: ModeInit
// (a new container's PID 1), ModeExec (a process that `stow exec` starts in
// a running container) or ModeReap (the PID 1 that a ModeInit process with
// Config.Init becomes). Other values belong to the caller.
const EnvMode = "_STOWAGE_INIT"

// Modes of EnvMode.
const (
	ModeInit = "init"
	ModeExec = "exec"
	ModeReap = "reap"
)

// File descriptors of the process.
const (
	// FDConfig carries the Config, then GoAhead.
	FDConfig = 3
	// FDStatus carries an Error when the command cannot run.
	FDStatus = 4
	// FDMountNS is, in ModeExec, the container's mount namespace.
	FDMountNS = 5
)

// GoAhead follows the configuration on FDConfig when the process may go
// on to the command. EOF in its place means the runtime gave up.
const GoAhead = 'g'

// Version is the version of the protocol. A process that is given a
// Config of another version refuses it: stow and stow-init come from the
// same build.
const Version = 3

// Exit codes of a command that did not run, as Docker's.
const (
	CodeSetup       = 125
	CodeNotRunnable = 126
	CodeNotFound    = 127
)

// DefaultPath is the PATH of a container whose image sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Propagations of a BindMount other than the default, private.
const (
	// RShared: mounts propagate both ways between the source on the host
	// and the target, below them included.
	RShared = "rshared"
	// RSlave: mounts the host makes below the source propagate to the
	// target.
	RSlave = "rslave"
)

// BindMount is a host directory bound into the container. A source of
// RShared or RSlave propagation must be a shared mount on the host, or lie
// on one; the runtime arranges that.
type BindMount struct {
	Source   string `json:"source"`
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// Propagation is RShared, RSlave, or empty (or anything else) for
	// private.
	Propagation string `json:"propagation,omitempty"`
	// File is set when the source is a file: the target is then made an
	// empty file where it is missing, not a directory.
	File bool `json:"file,omitempty"`
}

// Config is what the process needs. The root fields are used in ModeInit
// only.
type Config struct {
	Version  int         `json:"version"`
	Rootfs   string      `json:"rootfs,omitempty"`
	Upper    string      `json:"upper,omitempty"`
	Work     string      `json:"work,omitempty"`
	Lowers   []string    `json:"lowers,omitempty"`
	Mounts   []BindMount `json:"mounts,omitempty"`
	Hostname string      `json:"hostname,omitempty"`
	// NewNet is set when the container has a network namespace of its
	// own, whose loopback the process brings up.
	NewNet bool     `json:"new_net,omitempty"`
	Args   []string `json:"args"`
	Env    []string `json:"env"`
	Cwd    string   `json:"cwd,omitempty"`
	User   string   `json:"user,omitempty"`
	// Init keeps the process as the container's PID 1 with the command as
	// its child (ModeInit only).
	Init bool `json:"init,omitempty"`
	// Privileged keeps every capability and skips the seccomp filter; in
	// ModeInit the container's /dev is also the host's.
	Privileged bool `json:"privileged,omitempty"`
	// Seccomp are the seccomp filter's programs, compiled by the runtime
	// (see security.LoadSeccomp); a container that is not Privileged
	// cannot run without them.
	Seccomp [][]byte `json:"seccomp,omitempty"`
	// Cgroup lists the cgroup v1 tasks files of the container's cgroup
	// (ModeInit only): the process joins it by itself, writing "0" to
	// each from the thread that executes the command, which moves that
	// thread at once. Empty means the runtime moves the process.
	Cgroup []string `json:"cgroup,omitempty"`
}

// Error is what the process reports on FDStatus when the command cannot
// run: a message for the user and the exit code to report.
type Error struct {
	Msg  string `json:"msg"`
	Code int    `json:"code"`
}
