package initproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/security"
)

// Main runs the process in mode (ModeInit, ModeExec or ModeReap) and
// never returns: it executes the command or exits with its code. Call it
// first thing in main, before anything starts goroutines that matter.
func Main(mode string) {
	switch mode {
	case ModeInit, ModeExec:
		run(mode)
	case ModeReap:
		reap()
	}
	fmt.Fprintf(os.Stderr, "stow-init: unknown %s=%q: stow starts this program, it is not run by hand\n", EnvMode, mode)
	os.Exit(CodeSetup)
}

// run prepares the container (in ModeInit) or joins it (ModeExec: the
// runtime has already entered its namespaces), drops privileges and
// executes the command in place of itself, or, with Config.Init, becomes
// the container's init in ModeReap.
func run(mode string) {
	// Capabilities, no_new_privs and seccomp are set per thread: all of it
	// and the exec happen on this one.
	runtime.LockOSThread()
	fail := statusFailer()
	var cfg Config
	cfgFile := os.NewFile(FDConfig, "config")
	dec := json.NewDecoder(cfgFile)
	if err := dec.Decode(&cfg); err != nil {
		fail(CodeSetup, fmt.Errorf("read init config: %w", err))
	}
	if cfg.Version != Version {
		fail(CodeSetup, fmt.Errorf("container init speaks protocol %d, the runtime %d: install stow and stow-init from one build", Version, cfg.Version))
	}
	if len(cfg.Args) == 0 {
		fail(CodeSetup, fmt.Errorf("%w: no command", volume.ErrInvalid))
	}
	// The init that stays as PID 1 is this program again, executed from
	// the host's file: it is opened before the host's root goes away.
	self := -1
	if cfg.Init && mode == ModeInit {
		fd, err := unix.Open("/proc/self/exe", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fail(CodeSetup, fmt.Errorf("open container init: %w", err))
		}
		self = fd
	}
	// All that prepares the command happens while the runtime puts this
	// process into the container's cgroup: that move of a whole process
	// waits for an RCU grace period, several milliseconds that would
	// otherwise add to every start. The command runs only after the move.
	// On cgroup v1 this thread moves itself instead, which does not wait:
	// it is the one that executes the command.
	switch mode {
	case ModeInit:
		if err := joinCgroup(cfg.Cgroup); err != nil {
			fail(CodeSetup, err)
		}
		if err := setupRoot(cfg); err != nil {
			fail(CodeSetup, err)
		}
	case ModeExec:
		// The runtime put this process into the container's other
		// namespaces. A thread of a multi-threaded process may join a
		// mount namespace once it has its own filesystem attributes;
		// from here on, this thread is in the container.
		if err := unix.Unshare(unix.CLONE_FS); err != nil {
			fail(CodeSetup, fmt.Errorf("enter container: %w", err))
		}
		if err := unix.Setns(FDMountNS, unix.CLONE_NEWNS); err != nil {
			fail(CodeSetup, fmt.Errorf("enter container's mount namespace: %w", err))
		}
		unix.Close(FDMountNS)
	}
	cwd := cfg.Cwd
	if cwd == "" {
		cwd = "/"
	}
	if mode == ModeInit {
		if err := os.MkdirAll(cwd, 0o755); err != nil {
			fail(CodeSetup, fmt.Errorf("make working directory: %w", err))
		}
	}
	if err := unix.Chdir(cwd); err != nil {
		fail(CodeNotRunnable, fmt.Errorf("chdir to %s: %w", cwd, err))
	}
	file, err := lookPath(cfg.Args[0], cfg.Env)
	if err != nil {
		fail(CodeNotFound, err)
	}
	uid, gid, err := lookupUser(cfg.User)
	if err != nil {
		fail(CodeSetup, err)
	}
	if !awaitGoAhead(io.MultiReader(dec.Buffered(), cfgFile)) {
		fail(CodeSetup, errors.New("container init: the runtime gave up before the command started"))
	}
	cfgFile.Close()
	if mode == ModeInit {
		// This process is now in the container's cgroup, which becomes
		// the root of the namespace.
		if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
			fail(CodeSetup, fmt.Errorf("make cgroup namespace: %w", err))
		}
	}
	if err := secure(uid, gid, cfg.Privileged, cfg.Seccomp); err != nil {
		fail(CodeSetup, err)
	}
	if self >= 0 {
		// The execution drops every other thread: the whole init runs with
		// the container's privileges from here on.
		fail(CodeSetup, becomeReaper(self, command{Path: file, Args: cfg.Args, Env: cfg.Env}))
	}
	err = unix.Exec(file, cfg.Args, cfg.Env)
	code := CodeNotRunnable
	if errors.Is(err, unix.ENOENT) {
		code = CodeNotFound
	}
	fail(code, fmt.Errorf("exec %s: %w", file, err))
}

// joinCgroup moves the calling thread into the cgroup v1 groups whose
// tasks files are given.
func joinCgroup(tasks []string) error {
	for _, f := range tasks {
		fd, err := unix.Open(f, unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Write(fd, []byte("0"))
			unix.Close(fd)
		}
		if err != nil {
			return fmt.Errorf("join cgroup %s: %w", filepath.Dir(f), err)
		}
	}
	return nil
}

// statusFailer sets FDConfig and FDStatus to close on exec and returns a
// function that reports an Error on FDStatus and exits with its code.
func statusFailer() func(code int, err error) {
	unix.CloseOnExec(FDConfig)
	unix.CloseOnExec(FDStatus)
	status := os.NewFile(FDStatus, "status")
	return func(code int, err error) {
		json.NewEncoder(status).Encode(Error{Msg: err.Error(), Code: code})
		os.Exit(code)
	}
}

// secure drops the privileges of this thread before the command runs:
// no_new_privs, the default capability set, the user, and the seccomp
// filter of programs last. A privileged container keeps every capability
// and gets no seccomp filter.
func secure(uid, gid int, privileged bool, programs [][]byte) error {
	if err := security.NoNewPrivileges(); err != nil {
		return err
	}
	if !privileged {
		if err := security.DropCapabilities(security.DefaultCapabilities()); err != nil {
			return err
		}
	}
	if err := setUser(uid, gid); err != nil {
		return err
	}
	if privileged {
		return nil
	}
	return security.LoadSeccomp(programs)
}

// awaitGoAhead reads past the whitespace that ends the configuration and
// reports whether the next byte is goAhead.
func awaitGoAhead(r io.Reader) bool {
	var b [1]byte
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return false
		}
		switch b[0] {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return b[0] == GoAhead
	}
}

// lookPath finds the command name in the PATH of env, as a shell would.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	p, ok := lookupEnv(env, "PATH")
	if !ok {
		p = DefaultPath
	}
	for _, dir := range filepath.SplitList(p) {
		if dir == "" {
			dir = "."
		}
		file := filepath.Join(dir, name)
		if fi, err := os.Stat(file); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return file, nil
		}
	}
	return "", fmt.Errorf("exec: %q: executable file not found in $PATH", name)
}

// lookupUser resolves USER[:GROUP], names or numbers, in the container's
// /etc/passwd and /etc/group. An empty spec is root.
func lookupUser(spec string) (uid, gid int, err error) {
	if spec == "" {
		return 0, 0, nil
	}
	user, group, hasGroup := strings.Cut(spec, ":")
	uid, gid = -1, -1
	if n, err := strconv.Atoi(user); err == nil && n >= 0 {
		uid = n
	}
	for _, fields := range readColonFile("/etc/passwd") {
		if len(fields) < 4 {
			continue
		}
		if fields[0] == user || (uid >= 0 && fields[2] == strconv.Itoa(uid)) {
			uid, _ = strconv.Atoi(fields[2])
			gid, _ = strconv.Atoi(fields[3])
			break
		}
	}
	if uid < 0 {
		return 0, 0, fmt.Errorf("%w: user %q: not in the container's /etc/passwd", volume.ErrNotFound, user)
	}
	if gid < 0 {
		gid = 0
	}
	if hasGroup {
		gid = -1
		if n, err := strconv.Atoi(group); err == nil && n >= 0 {
			gid = n
		}
		for _, fields := range readColonFile("/etc/group") {
			if len(fields) >= 3 && fields[0] == group {
				gid, _ = strconv.Atoi(fields[2])
				break
			}
		}
		if gid < 0 {
			return 0, 0, fmt.Errorf("%w: group %q: not in the container's /etc/group", volume.ErrNotFound, group)
		}
	}
	return uid, gid, nil
}

func readColonFile(file string) [][]string {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out [][]string
	for _, line := range strings.Split(string(b), "\n") {
		if line != "" && !strings.HasPrefix(line, "#") {
			out = append(out, strings.Split(line, ":"))
		}
	}
	return out
}

// setUser switches this thread to uid and gid with no supplementary groups.
func setUser(uid, gid int) error {
	if uid == 0 && gid == 0 {
		return nil
	}
	if err := unix.Setgroups(nil); err != nil {
		return fmt.Errorf("set groups: %w", err)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESGID, uintptr(gid), uintptr(gid), uintptr(gid)); e != 0 {
		return fmt.Errorf("set group %d: %w", gid, e)
	}
	if _, _, e := unix.RawSyscall(unix.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
		return fmt.Errorf("set user %d: %w", uid, e)
	}
	return nil
}

// maskedPaths are hidden from the container, as Docker hides them.
var maskedPaths = []string{
	"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
	"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
	"/sys/firmware", "/sys/devices/virtual/powercap",
}

// readOnlyPaths are read-only in the container, as in Docker.
var readOnlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}

// devices are the device nodes of the container's /dev.
var devices = []struct {
	name         string
	major, minor uint32
}{
	{"null", 1, 3}, {"zero", 1, 5}, {"full", 1, 7}, {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0},
}

// setupRoot builds the container's root in its new mount namespace and
// switches to it: overlay, /proc, /sys, /dev, volumes, pivot_root, masks,
// hostname and loopback.
func setupRoot(cfg Config) error {
	// The binds that propagate are cloned first, while this namespace's
	// copies of the host's mounts are still peers of the host's: a clone
	// of a shared mount joins its peer group. Once / is private, a bind
	// would only copy a private mount, and nothing would propagate.
	trees, err := cloneTrees(cfg.Mounts)
	defer func() {
		for _, fd := range trees {
			if fd >= 0 {
				unix.Close(fd)
			}
		}
	}()
	if err != nil {
		return err
	}
	// Nothing mounted here propagates back to the host, but for what the
	// clones carry.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := mountOverlay(cfg); err != nil {
		return err
	}
	root := cfg.Rootfs
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	procDir, err := mkdirIn(root, "/proc")
	if err != nil {
		return err
	}
	if err := mount("proc", procDir, "proc", flags, ""); err != nil {
		return err
	}
	sysDir, err := mkdirIn(root, "/sys")
	if err != nil {
		return err
	}
	if err := mount("sysfs", sysDir, "sysfs", flags|unix.MS_RDONLY, ""); err != nil {
		return err
	}
	if cfg.Privileged {
		err = bindHostDev(root)
	} else {
		err = setupDev(root)
	}
	if err != nil {
		return err
	}
	inside := make([]string, len(cfg.Mounts))
	for i, m := range cfg.Mounts {
		if inside[i], err = bindInto(root, m, trees[i]); err != nil {
			return err
		}
	}
	if err := pivotRoot(root); err != nil {
		return err
	}
	// The propagation is set on the binds in the new root, once the old
	// root (made a slave on its way out) is gone: recursive, so that what
	// the container mounts below them later propagates too.
	for i, m := range cfg.Mounts {
		if err := setPropagation(inside[i], m.Propagation); err != nil {
			return err
		}
	}
	for _, p := range maskedPaths {
		if err := mask(p); err != nil {
			return err
		}
	}
	for _, p := range readOnlyPaths {
		if err := readOnly(p, flags); err != nil {
			return err
		}
	}
	if err := unix.Sethostname([]byte(cfg.Hostname)); err != nil {
		return fmt.Errorf("set hostname: %w", err)
	}
	if cfg.NewNet {
		if err := loopbackUp(); err != nil {
			return err
		}
	}
	return nil
}

// mount wraps unix.Mount with the target in its error.
func mount(source, target, fstype string, flags uintptr, data string) error {
	if err := unix.Mount(source, target, fstype, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", fstype+source, target, err)
	}
	return nil
}

// mountOverlay mounts the image's layers and the container's upper
// directory on the rootfs.
func mountOverlay(cfg Config) error {
	data, dir, err := overlayOptions(cfg, os.Getpagesize())
	if err != nil {
		return err
	}
	if dir != "" {
		if err := unix.Chdir(dir); err != nil {
			return fmt.Errorf("mount overlay: %w", err)
		}
	}
	if err := unix.Mount("overlay", cfg.Rootfs, "overlay", 0, data); err != nil {
		return fmt.Errorf("mount overlay on %s: %w", cfg.Rootfs, err)
	}
	return nil
}

// overlayOptions returns the overlay mount options of cfg, which must be
// shorter than a page (size). A long layer list names the layers in the
// directory that holds most of them (the image store's) by their base
// names, relative to that directory, which it returns to become the
// working directory for the mount.
func overlayOptions(cfg Config, size int) (data, dir string, err error) {
	opts := func(lowers []string) string {
		return "lowerdir=" + strings.Join(lowers, ":") + ",upperdir=" + cfg.Upper + ",workdir=" + cfg.Work
	}
	data = opts(cfg.Lowers)
	if len(data) < size {
		return data, "", nil
	}
	count := make(map[string]int)
	for _, l := range cfg.Lowers {
		count[filepath.Dir(l)]++
		if count[filepath.Dir(l)] > count[dir] {
			dir = filepath.Dir(l)
		}
	}
	short := make([]string, len(cfg.Lowers))
	for i, l := range cfg.Lowers {
		short[i] = l
		if filepath.Dir(l) == dir {
			short[i] = filepath.Base(l)
		}
	}
	if data = opts(short); len(data) >= size {
		return "", "", fmt.Errorf("mount overlay: %w: %d layers are too many", volume.ErrNotSupported, len(cfg.Lowers))
	}
	return data, dir, nil
}

// resolveIn returns the host path of p inside root, following symbolic
// links as if root were /, so that a link in the image cannot lead a mount
// out of the rootfs. Components that do not exist are taken as they are.
func resolveIn(root, p string) (string, error) {
	resolved := "/"
	rest := strings.Split(p, "/")
	links := 0
	for len(rest) > 0 {
		c := rest[0]
		rest = rest[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			resolved = path.Dir(resolved)
			continue
		}
		next := path.Join(resolved, c)
		fi, err := os.Lstat(filepath.Join(root, next))
		if errors.Is(err, os.ErrNotExist) {
			resolved = next
			continue
		}
		if err != nil {
			return "", err
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			resolved = next
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("resolve %s: %w", p, unix.ELOOP)
		}
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil {
			return "", err
		}
		if path.IsAbs(target) {
			resolved = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, resolved), nil
}

// mkdirIn makes the directory p inside root and returns its host path.
func mkdirIn(root, p string) (string, error) {
	dir, err := resolveIn(root, p)
	if err != nil {
		return "", fmt.Errorf("make %s in the container: %w", p, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("make %s in the container: %w", p, err)
	}
	return dir, nil
}

// mkfileIn makes the file p inside root, empty, unless something is
// there, with the directories above it, and returns its host path.
func mkfileIn(root, p string) (string, error) {
	file, err := resolveIn(root, p)
	if err != nil {
		return "", fmt.Errorf("make %s in the container: %w", p, err)
	}
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return "", fmt.Errorf("make %s in the container: %w", p, err)
	}
	fd, err := unix.Open(file, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC|unix.O_NOFOLLOW, 0o644)
	switch {
	case err == nil:
		unix.Close(fd)
	case !errors.Is(err, unix.EEXIST):
		return "", fmt.Errorf("make %s in the container: %w", p, err)
	}
	return file, nil
}

// setupDev mounts a tmpfs on /dev with the basic devices, a private
// devpts, shm and mqueue, and the usual links.
func setupDev(root string) error {
	dev, err := mkdirIn(root, "/dev")
	if err != nil {
		return err
	}
	if err := mount("tmpfs", dev, "tmpfs", unix.MS_NOSUID|unix.MS_STRICTATIME, "mode=755,size=65536k"); err != nil {
		return err
	}
	for _, d := range devices {
		file := filepath.Join(dev, d.name)
		if err := unix.Mknod(file, unix.S_IFCHR|0o666, int(unix.Mkdev(d.major, d.minor))); err != nil {
			return fmt.Errorf("make /dev/%s: %w", d.name, err)
		}
		if err := os.Chmod(file, 0o666); err != nil {
			return fmt.Errorf("make /dev/%s: %w", d.name, err)
		}
	}
	for _, m := range devFilesystems {
		dir := filepath.Join(dev, m.name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("make /dev/%s: %w", m.name, err)
		}
		if err := mount(m.fstype, dir, m.fstype, m.flags, m.data); err != nil {
			return err
		}
	}
	for name, target := range map[string]string{
		"ptmx": "pts/ptmx", "fd": "/proc/self/fd",
		"stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2",
	} {
		if err := os.Symlink(target, filepath.Join(dev, name)); err != nil {
			return fmt.Errorf("make /dev/%s: %w", name, err)
		}
	}
	return nil
}

// devFilesystems are the file systems mounted below a container's /dev,
// its own also in a privileged container's, over the host's /dev.
var devFilesystems = []struct {
	name, fstype string
	flags        uintptr
	data         string
}{
	{"pts", "devpts", unix.MS_NOSUID | unix.MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5"},
	{"shm", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, "mode=1777,size=65536k"},
	{"mqueue", "mqueue", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
}

// bindHostDev binds the host's /dev, without what is mounted below it, on
// the container's /dev, as for `docker run --privileged`: every device,
// also those the host adds later (loop devices that /dev/loop-control
// allocates). The container gets its own devpts, shm and mqueue on the
// host's directories for them; a directory the host lacks is skipped,
// since the container must not change the host's /dev.
func bindHostDev(root string) error {
	dev, err := mkdirIn(root, "/dev")
	if err != nil {
		return err
	}
	if err := mount("/dev", dev, "bind", unix.MS_BIND, ""); err != nil {
		return err
	}
	for _, m := range devFilesystems {
		dir := filepath.Join(dev, m.name)
		if fi, err := os.Lstat(dir); err != nil || !fi.IsDir() {
			continue
		}
		if err := mount(m.fstype, dir, m.fstype, m.flags, m.data); err != nil {
			return err
		}
	}
	return nil
}

// bindInto binds a volume or host directory into the rootfs, read-only if
// asked, and returns the target's path in the container. tree is the
// clone of the source that cloneTrees took, or -1 for a plain bind.
func bindInto(root string, m BindMount, tree int) (string, error) {
	mkTarget := mkdirIn
	if m.File {
		mkTarget = mkfileIn
	}
	target, err := mkTarget(root, m.Target)
	if err != nil {
		return "", err
	}
	if tree >= 0 {
		if err := unix.MoveMount(tree, "", unix.AT_FDCWD, target, unix.MOVE_MOUNT_F_EMPTY_PATH); err != nil {
			return "", fmt.Errorf("mount %s on %s: %w", m.Source, target, err)
		}
	} else if err := mount(m.Source, target, "bind", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return "", err
	}
	if m.ReadOnly {
		if err := mount("", target, "bind", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return "", err
		}
	}
	rel, err := filepath.Rel(root, target)
	if err != nil {
		return "", fmt.Errorf("mount %s: %w", m.Target, err)
	}
	return "/" + rel, nil
}

// propagates says whether a bind of propagation p keeps a tie to the
// host's mount.
func propagates(p string) bool { return p == RShared || p == RSlave }

// cloneTrees returns, for each mount that propagates, a detached clone of
// its source with everything mounted below it (open_tree with
// OPEN_TREE_CLONE and AT_RECURSIVE), and -1 for the others. A clone of a
// shared mount is a peer of it; one of a slave is a slave of the same
// master.
func cloneTrees(mounts []BindMount) ([]int, error) {
	trees := make([]int, len(mounts))
	for i, m := range mounts {
		trees[i] = -1
		if !propagates(m.Propagation) {
			continue
		}
		fd, err := unix.OpenTree(unix.AT_FDCWD, m.Source, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
		if errors.Is(err, unix.ENOSYS) {
			return trees, fmt.Errorf("%w: %s propagation of %s needs Linux 5.2 or later (open_tree)", volume.ErrNotSupported, m.Propagation, m.Source)
		}
		if err != nil {
			return trees, fmt.Errorf("clone mount %s: %w", m.Source, err)
		}
		trees[i] = fd
	}
	return trees, nil
}

// setPropagation gives the bind at target (a path in the container) and
// the mounts below it propagation p: shared, so that mounts made below it
// on either side appear on the other, or slave, so that only the host's
// appear in the container. Other values leave it private.
func setPropagation(target, p string) error {
	var flag uintptr
	switch p {
	case RShared:
		flag = unix.MS_SHARED
	case RSlave:
		flag = unix.MS_SLAVE
	default:
		return nil
	}
	if err := unix.Mount("", target, "", flag|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("make %s %s: %w", target, p, err)
	}
	return nil
}

// pivotRoot makes root the root directory and drops the old one, without
// a directory for it: pivot_root(".", ".") stacks the old root on the new,
// and a lazy unmount takes it away. The old root is made a slave first, so
// that its unmount cannot propagate, and only the old root: the working
// directory after pivot_root is the new root, so "." names the old root
// only from a descriptor of it (as runc does), and the new root keeps the
// propagation of its binds.
func pivotRoot(root string) error {
	old, err := unix.Open("/", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	defer unix.Close(old)
	if err := unix.Chdir(root); err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	if err := unix.Fchdir(old); err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	if err := unix.Mount("", ".", "", unix.MS_SLAVE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("pivot root: %w", err)
	}
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return fmt.Errorf("unmount old root: %w", err)
	}
	return unix.Chdir("/")
}

// mask hides p: an empty read-only tmpfs over a directory, /dev/null over
// a file. A path the kernel does not have is skipped.
func mask(p string) error {
	fi, err := os.Stat(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mask %s: %w", p, err)
	}
	if fi.IsDir() {
		return mount("tmpfs", p, "tmpfs", unix.MS_RDONLY, "size=0")
	}
	return mount("/dev/null", p, "bind", unix.MS_BIND, "")
}

// readOnly makes p read-only with a bind mount on itself.
func readOnly(p string, flags uintptr) error {
	if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := mount(p, p, "bind", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	return mount("", p, "bind", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY|flags, "")
}

// loopbackUp brings up "lo" in the container's network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
	if err := unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr); err != nil {
		return fmt.Errorf("bring up lo: %w", err)
	}
	return nil
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
