package cgroup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
)

// DefaultRoot is where cgroupfs is mounted.
const DefaultRoot = "/sys/fs/cgroup"

// v1Controllers are the v1 hierarchies a group joins; cpuacct is optional
// (it only accounts) and is skipped when it is not mounted or shares a
// hierarchy with cpu.
var v1Controllers = []string{"memory", "cpu", "cpuacct", "pids", "freezer"}

// v2Controllers are enabled in every ancestor's cgroup.subtree_control.
var v2Controllers = []string{"memory", "cpu", "pids"}

const (
	// pollInterval is how often Freeze, Thaw and Kill look at the state.
	pollInterval = 5 * time.Millisecond
	// killTimeout bounds how long Kill waits for the group to empty.
	killTimeout = 10 * time.Second
)

// Group is a control group, present in every controller it needs.
type Group struct {
	tree tree
	name string
	// dirs maps a v1 controller to its directory; in v2 the only key is "".
	dirs map[string]string
}

// tree is a mounted cgroupfs: its root directory and version. Tests point
// it at a fake tree in a temporary directory.
type tree struct {
	root    string
	version int
}

// New creates the group name (such as "stowage/<id>") in every controller
// it needs and applies r. A group that already exists is reused and gets
// r. It fails with ErrInvalid for a bad name or limit and ErrNotSupported
// when a controller is missing.
func New(name string, r Resources) (*Group, error) {
	t, err := detect(DefaultRoot)
	if err != nil {
		return nil, err
	}
	return t.create(name, r)
}

// Load returns the existing group name, or ErrNotFound.
func Load(name string) (*Group, error) {
	t, err := detect(DefaultRoot)
	if err != nil {
		return nil, err
	}
	return t.load(name)
}

// detect tells cgroup v2 (root is a cgroup2 mount) from v1 (anything else,
// normally a tmpfs with one mount per controller; a hybrid host's cgroup2
// at root/unified holds no controllers we use).
func detect(root string) (tree, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(root, &st); err != nil {
		return tree{}, fmt.Errorf("stat cgroup root %s: %w: %w", root, err, volume.ErrNotSupported)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return tree{root: root, version: 2}, nil
	}
	return tree{root: root, version: 1}, nil
}

// controllerDirs lists the directories of group name in each controller
// hierarchy, without touching the group itself.
func (t tree) controllerDirs(name string) (map[string]string, error) {
	if t.version == 2 {
		return map[string]string{"": filepath.Join(t.root, name)}, nil
	}
	dirs := make(map[string]string)
	// A hierarchy's root directory is one inode, whichever of its names
	// (such as the links cpu and cpuacct to cpu,cpuacct) leads to it.
	type inode struct{ dev, ino uint64 }
	seen := make(map[inode]bool)
	for _, c := range v1Controllers {
		mnt := filepath.Join(t.root, c)
		var st unix.Stat_t
		if err := unix.Stat(mnt, &st); err != nil {
			if c == "cpuacct" {
				continue
			}
			return nil, fmt.Errorf("find %s controller: stat %s: %w: %w", c, mnt, err, volume.ErrNotSupported)
		}
		id := inode{uint64(st.Dev), uint64(st.Ino)}
		if seen[id] {
			continue // cpu,cpuacct mounted together
		}
		seen[id] = true
		dirs[c] = filepath.Join(mnt, name)
	}
	return dirs, nil
}

func (t tree) create(name string, r Resources) (*Group, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	dirs, err := t.controllerDirs(name)
	if err != nil {
		return nil, err
	}
	g := &Group{tree: t, name: name, dirs: dirs}
	// A group made here starts without limits: only the limits r sets are
	// written. One that existed gets every limit, to clear old ones.
	fresh := true
	if t.version == 2 {
		// It makes the group's one directory.
		if fresh, err = g.enableControllers(); err != nil {
			return nil, err
		}
	} else {
		for _, d := range dirs {
			made, err := mkdir(d)
			if err != nil {
				return nil, fmt.Errorf("create cgroup %s: %w", name, err)
			}
			fresh = fresh && made
		}
	}
	if err := g.apply(r, fresh); err != nil {
		return nil, fmt.Errorf("limit cgroup %s: %w", name, err)
	}
	return g, nil
}

// mkdir makes directory d and its parents, and reports whether d itself
// was made rather than found.
func mkdir(d string) (bool, error) {
	err := os.Mkdir(d, 0o755)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(filepath.Dir(d), 0o755); err != nil {
			return false, err
		}
		err = os.Mkdir(d, 0o755)
	}
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	return err == nil, err
}

func (t tree) load(name string) (*Group, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	dirs, err := t.controllerDirs(name)
	if err != nil {
		return nil, err
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			return &Group{tree: t, name: name, dirs: dirs}, nil
		}
	}
	return nil, fmt.Errorf("cgroup %s: %w", name, volume.ErrNotFound)
}

// enableControllers makes memory, cpu and pids available to the group: top
// down, each ancestor must have them in cgroup.controllers (given by its
// parent) and gets them in cgroup.subtree_control. It makes the group's
// directory and reports whether it was made rather than found.
func (g *Group) enableControllers() (made bool, err error) {
	dir := g.tree.root
	for _, part := range strings.Split(g.name, "/") {
		avail, err := readFields(filepath.Join(dir, "cgroup.controllers"))
		if err != nil {
			return false, fmt.Errorf("read controllers of %s: %w", dir, err)
		}
		enabled, err := readFields(filepath.Join(dir, "cgroup.subtree_control"))
		if err != nil {
			return false, fmt.Errorf("read subtree controllers of %s: %w", dir, err)
		}
		var add []string
		for _, c := range v2Controllers {
			if !slices.Contains(avail, c) {
				return false, fmt.Errorf("controller %s not available in %s: %w", c, dir, volume.ErrNotSupported)
			}
			if !slices.Contains(enabled, c) {
				add = append(add, "+"+c)
			}
		}
		if len(add) > 0 {
			if err := writeFile(filepath.Join(dir, "cgroup.subtree_control"), strings.Join(add, " ")); err != nil {
				return false, fmt.Errorf("enable controllers in %s: %w", dir, err)
			}
		}
		dir = filepath.Join(dir, part)
		err = os.Mkdir(dir, 0o755)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return false, fmt.Errorf("create cgroup %s: %w", dir, err)
		}
		made = err == nil
	}
	return made, nil
}

// apply writes r. Unless the group is fresh (made just now, so without
// limits), zero fields are written as "no limit", so that a reused group
// loses limits it had before.
func (g *Group) apply(r Resources, fresh bool) error {
	// A fresh group needs only the limits it gets: every control file
	// written is a few system calls more for each container start.
	set := func(dir, file, value string, needed bool) error {
		if fresh && !needed {
			return nil
		}
		return g.set(dir, file, value, needed)
	}
	if g.tree.version == 2 {
		return g.applyV2(r, set)
	}
	return g.applyV1(r, set)
}

// setFunc writes a control file as Group.set does.
type setFunc func(dir, file, value string, needed bool) error

func (g *Group) applyV1(r Resources, set setFunc) error {
	mem := g.dirs["memory"]
	limit := strconv.FormatInt(r.MemoryBytes, 10)
	if r.MemoryBytes == 0 {
		limit = "-1"
	}
	// memory.memsw.limit_in_bytes (memory+swap) may never be below
	// memory.limit_in_bytes, so raise it first and lower it last. It is
	// absent when the kernel does not account swap.
	memsw := filepath.Join(mem, "memory.memsw.limit_in_bytes")
	hasMemsw := exists(memsw)
	order := []string{"memory.limit_in_bytes", "memory.memsw.limit_in_bytes"}
	if r.MemoryBytes == 0 {
		slices.Reverse(order)
	}
	for _, f := range order {
		if f == "memory.memsw.limit_in_bytes" && !hasMemsw {
			continue
		}
		if err := set(mem, f, limit, r.MemoryBytes != 0); err != nil {
			return err
		}
	}
	cpu := g.dirs["cpu"]
	if r.CPUs != 0 {
		if err := set(cpu, "cpu.cfs_period_us", strconv.Itoa(cpuPeriod), true); err != nil {
			return err
		}
	}
	if err := set(cpu, "cpu.cfs_quota_us", strconv.FormatInt(r.cpuQuota(), 10), r.CPUs != 0); err != nil {
		return err
	}
	return set(g.dirs["pids"], "pids.max", pidsValue(r.PidsMax), r.PidsMax != 0)
}

func (g *Group) applyV2(r Resources, set setFunc) error {
	dir := g.dirs[""]
	mem, swap := "max", "max"
	if r.MemoryBytes != 0 {
		mem, swap = strconv.FormatInt(r.MemoryBytes, 10), "0"
	}
	if err := set(dir, "memory.max", mem, r.MemoryBytes != 0); err != nil {
		return err
	}
	// memory.swap.max is absent when the kernel does not account swap.
	if f := filepath.Join(dir, "memory.swap.max"); exists(f) {
		if err := set(dir, "memory.swap.max", swap, r.MemoryBytes != 0); err != nil {
			return err
		}
	}
	cpu := "max " + strconv.Itoa(cpuPeriod)
	if r.CPUs != 0 {
		cpu = strconv.FormatInt(r.cpuQuota(), 10) + " " + strconv.Itoa(cpuPeriod)
	}
	if err := set(dir, "cpu.max", cpu, r.CPUs != 0); err != nil {
		return err
	}
	return set(dir, "pids.max", pidsValue(r.PidsMax), r.PidsMax != 0)
}

// set writes value to dir/file. A missing file is ErrNotSupported when the
// limit is needed and ignored when it only clears a limit.
func (g *Group) set(dir, file, value string, needed bool) error {
	f := filepath.Join(dir, file)
	err := writeFile(f, value)
	if errors.Is(err, fs.ErrNotExist) {
		if !needed {
			return nil
		}
		return fmt.Errorf("%w: %w", err, volume.ErrNotSupported)
	}
	return err
}

func pidsValue(n int64) string {
	if n == 0 {
		return "max"
	}
	return strconv.FormatInt(n, 10)
}

// Version returns the cgroup version of the group, 1 or 2.
func (g *Group) Version() int { return g.tree.version }

// Name returns the group's name relative to the cgroup root.
func (g *Group) Name() string { return g.name }

// Add moves process pid into the group in every controller.
func (g *Group) Add(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("add pid %d to cgroup %s: %w", pid, g.name, volume.ErrInvalid)
	}
	for _, c := range g.controllers() {
		if err := writeFile(filepath.Join(g.dirs[c], "cgroup.procs"), strconv.Itoa(pid)); err != nil {
			if errors.Is(err, unix.ESRCH) {
				err = fmt.Errorf("%w: %w", err, volume.ErrNotFound)
			}
			return fmt.Errorf("add pid %d to cgroup %s: %w", pid, g.name, err)
		}
	}
	return nil
}

// ThreadFiles returns, on cgroup v1, the tasks file of the group in each
// controller. A thread that writes "0" to each moves itself into the group
// at once, where moving a whole process (Add) waits in the kernel for an
// RCU grace period, several milliseconds. The other threads of its process
// stay where they are; once the thread has executed a program, the
// process is that thread alone, in the group. On cgroup v2, where every
// thread of a process is in the same group, it returns nil.
func (g *Group) ThreadFiles() []string {
	if g.tree.version == 2 {
		return nil
	}
	var files []string
	for _, c := range g.controllers() {
		files = append(files, filepath.Join(g.dirs[c], "tasks"))
	}
	return files
}

// Procs returns the processes in the group, sorted. In v1 it is the union
// over the controllers, so a process that only partly joined is listed.
func (g *Group) Procs() ([]int, error) {
	var pids []int
	for _, c := range g.controllers() {
		got, err := ReadProcs(g.dirs[c])
		if errors.Is(err, fs.ErrNotExist) {
			continue // not created in this controller, or deleted
		}
		if err != nil {
			return nil, fmt.Errorf("list processes of cgroup %s: %w", g.name, err)
		}
		pids = append(pids, got...)
	}
	slices.Sort(pids)
	return slices.Compact(pids), nil
}

// ReadProcs returns the processes listed in the cgroup.procs file of the
// cgroup directory dir, which may belong to another manager (such as
// dockerd's).
func ReadProcs(dir string) ([]int, error) {
	file := filepath.Join(dir, "cgroup.procs")
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("parse %q in %s: %w", f, file, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Freeze stops every process in the group and waits until all are frozen.
// If ctx ends first it thaws the group again and returns ctx's error.
func (g *Group) Freeze(ctx context.Context) error {
	if err := g.setFrozen(ctx, true); err != nil {
		if ctx.Err() != nil {
			// Do not leave the group half frozen; thawing is quick, so it
			// gets a fresh short deadline of its own.
			tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			err = errors.Join(err, g.setFrozen(tctx, false))
		}
		return fmt.Errorf("freeze cgroup %s: %w", g.name, err)
	}
	return nil
}

// Thaw resumes the processes of a frozen group and waits until it is
// thawed. Thawing a group that is not frozen does nothing.
func (g *Group) Thaw(ctx context.Context) error {
	if err := g.setFrozen(ctx, false); err != nil {
		return fmt.Errorf("thaw cgroup %s: %w", g.name, err)
	}
	return nil
}

func (g *Group) setFrozen(ctx context.Context, frozen bool) error {
	var file, value string
	var done func() (bool, error)
	if g.tree.version == 2 {
		file = filepath.Join(g.dirs[""], "cgroup.freeze")
		value = "0"
		if frozen {
			value = "1"
		}
		events := filepath.Join(g.dirs[""], "cgroup.events")
		done = func() (bool, error) {
			v, err := keyedValue(events, "frozen")
			return v == value, err
		}
	} else {
		dir, ok := g.dirs["freezer"]
		if !ok {
			return fmt.Errorf("no freezer controller: %w", volume.ErrNotSupported)
		}
		file = filepath.Join(dir, "freezer.state")
		value = "THAWED"
		if frozen {
			value = "FROZEN"
		}
		done = func() (bool, error) {
			b, err := os.ReadFile(file)
			// While freezing the state reads FREEZING; writing FROZEN
			// again retries tasks that could not be frozen yet.
			if err == nil && frozen && strings.TrimSpace(string(b)) != value {
				err = writeFile(file, value)
			}
			return strings.TrimSpace(string(b)) == value, err
		}
	}
	if err := writeFile(file, value); err != nil {
		return err
	}
	return poll(ctx, done)
}

// OOMKilled reports whether the kernel's OOM killer has killed a process
// of the group because of its memory limit.
func (g *Group) OOMKilled() (bool, error) {
	var file string
	if g.tree.version == 2 {
		file = filepath.Join(g.dirs[""], "memory.events")
	} else {
		file = filepath.Join(g.dirs["memory"], "memory.oom_control")
	}
	v, err := keyedValue(file, "oom_kill")
	if err != nil {
		return false, fmt.Errorf("read oom kills of cgroup %s: %w", g.name, err)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return false, fmt.Errorf("read oom kills of cgroup %s: parse %q: %w", g.name, v, err)
	}
	return n > 0, nil
}

// Kill sends SIGKILL to every process in the group and waits, at most
// killTimeout, until the group is empty. With cgroup.kill (v2, Linux 5.14)
// the kernel does it atomically; otherwise the group is frozen while the
// processes are signalled, so none can fork past the kill, and signalling
// repeats until the group is empty. The processes' parents must reap them.
func (g *Group) Kill() error {
	ctx, cancel := context.WithTimeout(context.Background(), killTimeout)
	defer cancel()
	if err := g.kill(ctx); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", g.name, err)
	}
	return nil
}

func (g *Group) kill(ctx context.Context) error {
	if g.tree.version == 2 {
		err := writeFile(filepath.Join(g.dirs[""], "cgroup.kill"), "1")
		if err == nil {
			return poll(ctx, g.empty)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	// A group that cannot be frozen (a task in uninterruptible sleep) is
	// still killed by the loop below, only with a chance of fork races.
	fctx, cancel := context.WithTimeout(ctx, time.Second)
	freezeErr := g.Freeze(fctx)
	cancel()
	if err := g.signalAll(); err != nil {
		return err
	}
	if freezeErr == nil {
		if err := g.Thaw(ctx); err != nil {
			return err
		}
	}
	return poll(ctx, func() (bool, error) {
		if err := g.signalAll(); err != nil {
			return false, err
		}
		return g.empty()
	})
}

func (g *Group) signalAll() error {
	pids, err := g.Procs()
	if err != nil {
		return err
	}
	for _, pid := range pids {
		if err := unix.Kill(pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return fmt.Errorf("kill pid %d: %w", pid, err)
		}
	}
	return nil
}

func (g *Group) empty() (bool, error) {
	pids, err := g.Procs()
	return len(pids) == 0, err
}

// Delete removes the group from every controller. Deleting a group that
// is already gone succeeds; a group with processes left fails with
// ErrInUse. Parents such as "stowage" are shared and stay.
func (g *Group) Delete() error {
	pids, err := g.Procs()
	if err != nil {
		return err
	}
	if len(pids) > 0 {
		return fmt.Errorf("delete cgroup %s: %d processes left: %w", g.name, len(pids), volume.ErrInUse)
	}
	for _, c := range g.controllers() {
		err := unix.Rmdir(g.dirs[c])
		switch {
		case err == nil, errors.Is(err, unix.ENOENT):
		case errors.Is(err, unix.EBUSY):
			return fmt.Errorf("delete cgroup %s: %w: %w", g.dirs[c], err, volume.ErrInUse)
		default:
			return fmt.Errorf("delete cgroup %s: %w", g.dirs[c], err)
		}
	}
	return nil
}

// controllers returns the keys of g.dirs in a fixed order.
func (g *Group) controllers() []string {
	cs := make([]string, 0, len(g.dirs))
	for c := range g.dirs {
		cs = append(cs, c)
	}
	slices.Sort(cs)
	return cs
}

// poll calls done until it reports true, fails, or ctx ends.
func poll(ctx context.Context, done func() (bool, error)) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		ok, err := done()
		if err != nil || ok {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// writeFile writes a cgroup control file, which must exist: cgroupfs makes
// every file a controller offers, so a missing one means a missing
// controller.
func writeFile(file, value string) error {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteString(value)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %q to %s: %w", value, file, err)
	}
	return nil
}

// readFields returns the space-separated words of a file.
func readFields(file string) ([]string, error) {
	b, err := os.ReadFile(file)
	return strings.Fields(string(b)), err
}

// keyedValue returns the value of key in a flat keyed file ("key value"
// lines) such as memory.events, or an error wrapping ErrNotSupported when
// the key is absent.
func keyedValue(file, key string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(b)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), " ")
		if ok && k == key {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("no %s in %s: %w", key, file, volume.ErrNotSupported)
}

func exists(file string) bool {
	_, err := os.Stat(file)
	return err == nil
}
