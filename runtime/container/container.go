// Package container runs containers: each in its own mount, PID, UTS, IPC,
// cgroup and (unless it shares the host's) network namespace, on an overlayfs
// root made of image layers and a per-container upper directory, with a
// minimal /dev, masked /proc paths, volumes mounted through volumed's plugin
// protocol, cgroup limits and a reduced set of privileges.
//
// The container's PID 1 is its command itself, as with `docker run` without
// --init: it gets only the signals it handles, and it must reap the
// children it starts (a shell does). With Config.Init, as with `docker run
// --init`, a minimal init is PID 1 instead: it forwards every signal it can
// catch to the command, reaps every zombie and exits with the command's
// status. Either way the container's exit code is the command's; a
// command killed by signal N exits 128+N.
//
// A container is owned by a monitor: the stow process itself in the
// foreground, or a re-executed stow in monitor mode for a detached
// container. The monitor mounts the volumes, starts the container, waits for
// it, records its end in state.json and unmounts the volumes again.
//
// What runs inside the new namespaces until the command starts (package
// initproc) is the small program stow-init (cmd/stow-init), found beside
// the runtime's executable or in ../libexec/stowage/ from its directory:
// it starts in about a millisecond. Without it the runtime re-executes
// its own binary, so programs that start containers must call Init first
// thing in main (and tests in TestMain): Init runs that init, the detached
// monitor and the exec helper.
//
// On disk, under ROOT/containers/<id>/: config.json (what was asked),
// state.json (what happens, written by temp file + rename, without fsync:
// it does not outlive the host), upper/ and work/ (the overlay's writable
// layer), rootfs/ (the overlay's mount
// point, mounted only inside the container's mount namespace, so nothing is
// left on the host when it dies), log (standard output and error of a
// detached container) and monitor.log.
//
// The files /etc/hosts, /etc/hostname and /etc/resolv.conf are left as the
// image has them: the runtime writes none of them.
//
// Host directories can be bound into a container (Config.Binds, `stow run
// --mount type=bind,...`), each with a mount propagation. With
// PropagationRShared, mounts made below the target inside the container
// appear below the source on the host (and in every mount namespace that
// shares it), and the other way round; that is how a storage provider in a
// container makes mounts that the host and other containers use. The
// kernel propagates only between mounts of one peer group, so the runtime
// first makes sure the host side is a shared mount: when neither the
// source nor the mount that holds it is shared, the source becomes a bind
// mount of itself, marked shared (as runc and Docker require of an
// rshared bind's parent, and as Docker arranges). That bind stays on the
// host after the container. So do mounts the container made below an
// rshared target: they belong to the host once made, and a provider's
// mounts must outlive the provider so that its consumers keep working
// through a crash. The runtime never unmounts them; the one who mounted a
// thing unmounts it.
//
// A privileged container (Config.Privileged, `stow run --privileged`), as
// a storage provider needs, keeps every capability and runs without the
// seccomp filter, so it may mount; its /dev is the host's (device nodes
// the host adds later, as loop devices, appear in it too) with a devpts,
// shm and mqueue of its own. no_new_privs, the masked and read-only /proc
// paths and the read-only /sys stay.
package container

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/stowage/stowage/plugins/volume"
)

// Status is where a container is in its life.
type Status string

// Statuses.
const (
	// Created: the container is prepared but its command has not started.
	Created Status = "created"
	// Running: its command runs.
	Running Status = "running"
	// Exited: its command has ended.
	Exited Status = "exited"
)

// Network modes.
const (
	// NetNone gives the container a network namespace of its own with only
	// the loopback interface, up.
	NetNone = "none"
	// NetHost shares the host's network namespace.
	NetHost = "host"
)

// Volume is a named volume mounted into a container.
type Volume struct {
	// Name is the volume's name in volumed.
	Name string `json:"name"`
	// Target is the absolute path in the container.
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
}

// String returns the volume as the -v spec that makes it.
func (v Volume) String() string {
	s := v.Name + ":" + v.Target
	if v.ReadOnly {
		s += ":ro"
	}
	return s
}

// Mount propagations of a Bind.
const (
	// PropagationRPrivate: nothing propagates between the host and the
	// container, below the target included (the default).
	PropagationRPrivate = "rprivate"
	// PropagationRShared: mounts propagate both ways, below the target
	// included.
	PropagationRShared = "rshared"
	// PropagationRSlave: mounts the host makes below the source appear in
	// the container, not the other way round.
	PropagationRSlave = "rslave"
)

// Bind is a host directory bound into a container, with what is mounted
// below it (MS_BIND|MS_REC).
type Bind struct {
	// Source is the absolute path of the directory on the host.
	Source string `json:"source"`
	// Target is the absolute path in the container.
	Target   string `json:"target"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// Propagation is PropagationRPrivate, PropagationRShared or
	// PropagationRSlave; empty means PropagationRPrivate.
	Propagation string `json:"propagation,omitempty"`
}

// String returns the bind as the --mount spec that makes it.
func (b Bind) String() string {
	s := "type=bind,source=" + b.Source + ",target=" + b.Target
	if b.ReadOnly {
		s += ",readonly"
	}
	if b.Propagation != "" && b.Propagation != PropagationRPrivate {
		s += ",propagation=" + b.Propagation
	}
	return s
}

// Resources are a container's cgroup limits; a zero field means no limit.
type Resources struct {
	MemoryBytes int64   `json:"memory_bytes,omitempty"`
	CPUs        float64 `json:"cpus,omitempty"`
	PidsMax     int64   `json:"pids_max,omitempty"`
}

// Config is what a container was created with. It does not change.
type Config struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Image and ImageID name the image the container was made from.
	Image   string `json:"image"`
	ImageID string `json:"image_id,omitempty"`
	// Lowers are the image's layer directories, top first.
	Lowers []string `json:"lowers"`
	// Args is the command: the image's entrypoint and command, or the
	// command given.
	Args       []string `json:"args"`
	Env        []string `json:"env,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
	Hostname   string   `json:"hostname"`
	Network    string   `json:"network"`
	Volumes    []Volume `json:"volumes,omitempty"`
	// Binds are host directories bound into the container.
	Binds     []Bind    `json:"binds,omitempty"`
	Resources Resources `json:"resources"`
	// Privileged keeps every capability, skips the seccomp filter and
	// gives the container the host's /dev (see the package doc).
	Privileged bool `json:"privileged,omitempty"`
	// Init runs a minimal init as PID 1 with the command as its child.
	Init bool `json:"init,omitempty"`
	// AutoRemove removes the container when it exits.
	AutoRemove bool      `json:"auto_remove,omitempty"`
	Detach     bool      `json:"detach,omitempty"`
	Created    time.Time `json:"created"`
}

// MountedVolume is a volume mount a container holds in volumed.
type MountedVolume struct {
	Name string `json:"name"`
	// ID is the mount ID given to volumed: the container's ID, "-" and
	// the volume's index in Config.Volumes.
	ID string `json:"id"`
	// Source is the host path volumed returned.
	Source string `json:"source"`
}

// State is what happened to a container so far.
type State struct {
	Status Status `json:"status"`
	// PID is the host's process ID of the container's PID 1 while it runs;
	// PIDStart is its start time in clock ticks after boot, which tells a
	// reused process ID apart.
	PID      int    `json:"pid,omitempty"`
	PIDStart uint64 `json:"pid_start,omitempty"`
	// MonitorPID is the process that owns the container, with its start
	// time.
	MonitorPID   int    `json:"monitor_pid,omitempty"`
	MonitorStart uint64 `json:"monitor_start,omitempty"`
	ExitCode     int    `json:"exit_code"`
	OOMKilled    bool   `json:"oom_killed,omitempty"`
	// Error says why the container did not start, or that its monitor
	// died.
	Error      string          `json:"error,omitempty"`
	StartedAt  time.Time       `json:"started_at,omitzero"`
	FinishedAt time.Time       `json:"finished_at,omitzero"`
	Mounts     []MountedVolume `json:"mounts,omitempty"`
}

// Container is a container's configuration and state.
type Container struct {
	Config Config `json:"config"`
	State  State  `json:"state"`
	// Dir is the container's directory.
	Dir string `json:"dir"`
}

// ID returns the container's ID.
func (c Container) ID() string { return c.Config.ID }

// StatusText describes the state as `stow ps` shows it, relative to now.
func (c Container) StatusText(now time.Time) string {
	st := c.State
	switch st.Status {
	case Running:
		return "Up " + humanDuration(now.Sub(st.StartedAt))
	case Exited:
		s := fmt.Sprintf("Exited (%d)", st.ExitCode)
		switch {
		case st.OOMKilled:
			return s + " OOM killed"
		case st.FinishedAt.IsZero():
			return s
		}
		return s + " " + humanDuration(now.Sub(st.FinishedAt)) + " ago"
	}
	return "Created"
}

// humanDuration says d roughly, as Docker does: "3 seconds", "2 minutes".
func humanDuration(d time.Duration) string {
	s := int64(d.Seconds())
	switch {
	case s < 1:
		return "Less than a second"
	case s == 1:
		return "1 second"
	case s < 60:
		return fmt.Sprintf("%d seconds", s)
	case s < 120:
		return "About a minute"
	case s < 3600:
		return fmt.Sprintf("%d minutes", s/60)
	case s < 7200:
		return "About an hour"
	case s < 48*3600:
		return fmt.Sprintf("%d hours", s/3600)
	}
	return fmt.Sprintf("%d days", s/86400)
}

// NewID returns a new container ID: 64 random hex digits.
func NewID() string {
	var b [32]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// isID reports whether s is a container ID: 64 lowercase hex digits.
// The rules here are checked by hand, not with regular expressions, which
// every stow process would compile at its start.
func isID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// ValidateName checks a container name: Docker's rule,
// [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters, and not 64 hex
// digits (which would read as an ID).
func ValidateName(name string) error {
	if !volume.ValidName(name) || len(name) > 128 {
		return fmt.Errorf("%w: container name %q: use letters, digits, '_', '.' and '-', starting with a letter or digit", volume.ErrInvalid, name)
	}
	if isID(name) {
		return fmt.Errorf("%w: container name %q looks like a container ID", volume.ErrInvalid, name)
	}
	return nil
}

// ParseVolume parses a -v spec NAME:/PATH[:ro|:rw]. Only named volumes are
// supported: a host path as the source is rejected.
func ParseVolume(spec string) (Volume, error) {
	bad := func(why string) (Volume, error) {
		return Volume{}, fmt.Errorf("%w: volume spec %q: %s (use NAME:/PATH[:ro])", volume.ErrInvalid, spec, why)
	}
	parts := strings.Split(spec, ":")
	if len(parts) < 2 || len(parts) > 3 {
		return bad("want NAME:/PATH with an optional :ro or :rw")
	}
	v := Volume{Name: parts[0], Target: parts[1]}
	switch {
	case v.Name == "":
		return bad("the volume name is empty")
	case strings.HasPrefix(v.Name, "/") || strings.HasPrefix(v.Name, "."):
		return bad("only named volumes are supported, not host paths")
	case !volume.ValidName(v.Name):
		return bad("the volume name must match " + volume.NameRule)
	case v.Target == "":
		return bad("the container path is empty")
	case !path.IsAbs(v.Target):
		return bad("the container path must be absolute")
	case path.Clean(v.Target) == "/":
		return bad("the container path must not be /")
	}
	v.Target = path.Clean(v.Target)
	if len(parts) == 3 {
		switch parts[2] {
		case "ro":
			v.ReadOnly = true
		case "rw":
		default:
			return bad(fmt.Sprintf("unknown mode %q: use ro or rw", parts[2]))
		}
	}
	return v, nil
}

// ParseVolumes parses -v specs and rejects two volumes on one path.
func ParseVolumes(specs []string) ([]Volume, error) {
	var vols []Volume
	for _, s := range specs {
		v, err := ParseVolume(s)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(vols, func(o Volume) bool { return o.Target == v.Target }) {
			return nil, fmt.Errorf("%w: volume spec %q: %s is mounted twice", volume.ErrInvalid, s, v.Target)
		}
		vols = append(vols, v)
	}
	return vols, nil
}

// mountKeys says what a --mount spec accepts, for error messages.
const mountKeys = "type=bind, source|src=/HOST/DIR, target|dst|destination=/PATH, readonly|ro[=true|false], " +
	"propagation|bind-propagation=rprivate|private|rshared|rslave"

// ParseMount parses a --mount spec, the part of Docker's syntax that binds
// a host directory: comma-separated KEY=VALUE fields, see mountKeys. The
// source must be an absolute path of an existing directory; it is checked
// here, on the host that parses. "private" is taken as "rprivate": a bind
// always carries what is mounted below its source.
func ParseMount(spec string) (Bind, error) {
	bad := func(why string) (Bind, error) {
		return Bind{}, fmt.Errorf("%w: mount spec %q: %s (accepted: %s)", volume.ErrInvalid, spec, why, mountKeys)
	}
	var b Bind
	var typ string
	seen := map[string]bool{}
	for _, field := range strings.Split(spec, ",") {
		key, value, hasValue := strings.Cut(field, "=")
		key = strings.ToLower(strings.TrimSpace(key))
		name := key
		switch key {
		case "src":
			name = "source"
		case "dst", "destination":
			name = "target"
		case "ro":
			name = "readonly"
		case "bind-propagation":
			name = "propagation"
		}
		if seen[name] {
			return bad(fmt.Sprintf("%s is given twice", name))
		}
		seen[name] = true
		if !hasValue && name != "readonly" {
			if key == "" {
				return bad("empty field")
			}
			return bad(fmt.Sprintf("%s needs a value", key))
		}
		switch name {
		case "type":
			typ = value
		case "source":
			b.Source = value
		case "target":
			b.Target = value
		case "readonly":
			switch {
			case !hasValue:
				b.ReadOnly = true
			case value == "true" || value == "1":
				b.ReadOnly = true
			case value == "false" || value == "0":
			default:
				return bad(fmt.Sprintf("readonly=%q: use true or false", value))
			}
		case "propagation":
			switch value {
			case PropagationRPrivate, "private":
				b.Propagation = PropagationRPrivate
			case PropagationRShared, PropagationRSlave:
				b.Propagation = value
			default:
				return bad(fmt.Sprintf("unknown propagation %q", value))
			}
		default:
			return bad(fmt.Sprintf("unknown key %q", key))
		}
	}
	switch {
	case typ == "":
		return bad("type=bind is required")
	case typ != "bind":
		return bad(fmt.Sprintf("type %q is not supported: only bind (named volumes: -v NAME:/PATH)", typ))
	case b.Source == "":
		return bad("source is required")
	case !path.IsAbs(b.Source):
		return bad("the source must be an absolute path")
	case b.Target == "":
		return bad("target is required")
	case !path.IsAbs(b.Target):
		return bad("the target must be an absolute path")
	case path.Clean(b.Target) == "/":
		return bad("the target must not be /")
	}
	b.Source, b.Target = path.Clean(b.Source), path.Clean(b.Target)
	if b.Propagation == "" {
		b.Propagation = PropagationRPrivate
	}
	fi, err := os.Stat(b.Source)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return bad(fmt.Sprintf("the source %s does not exist", b.Source))
	case err != nil:
		return bad(err.Error())
	case !fi.IsDir():
		return bad(fmt.Sprintf("the source %s is not a directory", b.Source))
	}
	return b, nil
}

// ParseMounts parses --mount specs and rejects a target used twice, by
// two binds or by a bind and one of vols.
func ParseMounts(specs []string, vols []Volume) ([]Bind, error) {
	var binds []Bind
	for _, s := range specs {
		b, err := ParseMount(s)
		if err != nil {
			return nil, err
		}
		if slices.ContainsFunc(binds, func(o Bind) bool { return o.Target == b.Target }) ||
			slices.ContainsFunc(vols, func(v Volume) bool { return v.Target == b.Target }) {
			return nil, fmt.Errorf("%w: mount spec %q: %s is mounted twice", volume.ErrInvalid, s, b.Target)
		}
		binds = append(binds, b)
	}
	return binds, nil
}

// ParseEnv checks -e entries KEY=VALUE and merges them over base: a key
// given again replaces the earlier value in place.
func ParseEnv(base, entries []string) ([]string, error) {
	env := slices.Clone(base)
	for _, e := range entries {
		k, _, ok := strings.Cut(e, "=")
		if !ok || k == "" || strings.ContainsRune(k, 0) {
			return nil, fmt.Errorf("%w: environment entry %q: use KEY=VALUE", volume.ErrInvalid, e)
		}
		env = setEnv(env, e)
	}
	return env, nil
}

// setEnv sets the entry KEY=VALUE in env, replacing an entry of that key.
func setEnv(env []string, entry string) []string {
	k, _, _ := strings.Cut(entry, "=")
	for i, e := range env {
		if ek, _, _ := strings.Cut(e, "="); ek == k {
			env[i] = entry
			return env
		}
	}
	return append(env, entry)
}

// lookupEnv returns the value of key in env.
func lookupEnv(env []string, key string) (string, bool) {
	for _, e := range env {
		if k, v, ok := strings.Cut(e, "="); ok && k == key {
			return v, true
		}
	}
	return "", false
}

// ParseCPUs parses --cpus: a positive decimal number of CPUs, at least 0.01.
func ParseCPUs(s string) (float64, error) {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || !(f >= 0.01 && f <= 1024) {
		return 0, fmt.Errorf("%w: --cpus %q: use a number of CPUs from 0.01, e.g. 0.5 or 2", volume.ErrInvalid, s)
	}
	return f, nil
}

// ParseNetwork checks --net.
func ParseNetwork(s string) (string, error) {
	if s != NetNone && s != NetHost {
		return "", fmt.Errorf("%w: --net %q: use none or host", volume.ErrInvalid, s)
	}
	return s, nil
}
