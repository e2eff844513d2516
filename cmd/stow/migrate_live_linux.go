package main

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/runtime/cgroup"
)

// killCgroupOf sends SIGKILL to every process of the freezer cgroup that
// holds process pid, and of the cgroups below it, and returns how many it
// signalled. The cgroup's name must contain id (the container's ID), so
// that a PID of another namespace cannot lead to another cgroup. In a
// frozen cgroup the signal stays pending until the thaw, and then wins
// over everything else pending (a SIGTERM handler never runs); the
// processes cannot fork or exit meanwhile, so the list is complete and no
// PID in it is reused before it is signalled.
func killCgroupOf(pid int, id string) (int, error) {
	dir, err := freezerDir(cgroup.DefaultRoot, fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		return 0, err
	}
	if id == "" || !strings.Contains(filepath.Base(dir), id) {
		return 0, fmt.Errorf("the cgroup of process %d is %s, which does not name container %s", pid, dir, id)
	}
	var pids []int
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		got, err := cgroup.ReadProcs(path)
		pids = append(pids, got...)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("list the processes of cgroup %s: %w", dir, err)
	}
	if !slices.Contains(pids, pid) {
		return 0, fmt.Errorf("list the processes of cgroup %s: process %d is not among them", dir, pid)
	}
	for _, p := range pids {
		if err := unix.Kill(p, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			return 0, fmt.Errorf("kill process %d: %w", p, err)
		}
	}
	return len(pids), nil
}

// freezerDir returns the directory below root of the cgroup that freezes
// the process whose /proc/PID/cgroup is file: its v1 freezer cgroup, or
// on cgroup v2 its cgroup.
func freezerDir(root, file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("find the cgroup of a process: %w", err)
	}
	defer f.Close()
	v2 := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		id, rest, _ := strings.Cut(sc.Text(), ":")
		ctls, path, ok := strings.Cut(rest, ":")
		switch {
		case !ok:
		case slices.Contains(strings.Split(ctls, ","), "freezer"):
			return filepath.Join(root, "freezer", path), nil
		case id == "0" && ctls == "":
			v2 = path
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read %s: %w", file, err)
	}
	if v2 == "" {
		return "", fmt.Errorf("find the cgroup of a process: %s names no freezer cgroup", file)
	}
	// On a hybrid host the v2 tree (at root/unified) freezes nothing; the
	// v1 freezer was found above.
	return filepath.Join(root, v2), nil
}
