package container

import (
	"cmp"
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/runtime/container/initproc"
)

// hostBinds returns the init's mounts for binds, after making sure that the
// source of each bind that propagates is on a shared mount of the host.
func hostBinds(binds []Bind) ([]initproc.BindMount, error) {
	var mounts []initproc.BindMount
	for _, b := range binds {
		m := initproc.BindMount{Source: b.Source, Target: b.Target, ReadOnly: b.ReadOnly}
		switch b.Propagation {
		case PropagationRShared:
			m.Propagation = initproc.RShared
		case PropagationRSlave:
			m.Propagation = initproc.RSlave
		}
		if m.Propagation != "" {
			if err := makeShared(b.Source); err != nil {
				return nil, fmt.Errorf("prepare %s propagation of %s: %w", b.Propagation, b.Source, err)
			}
		}
		mounts = append(mounts, m)
	}
	return mounts, nil
}

// makeShared makes sure that dir lies on a shared mount of the host, so
// that a container's clone of it is a peer of it: when the mount that
// holds dir is not shared, dir becomes a bind mount of itself (unless it
// is a mount point already) and is marked shared. Nothing of it is undone
// later: mounts that propagated below it belong to the host, and they
// need it.
func makeShared(dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return err
	}
	infos, err := mountinfo.GetMounts(mountinfo.ParentsFilter(real))
	if err != nil {
		return fmt.Errorf("read mounts: %w", err)
	}
	// The mount that holds dir is the deepest; of mounts stacked on one
	// point, the last one listed is on top.
	var holder *mountinfo.Info
	for _, m := range infos {
		if holder == nil || len(m.Mountpoint) >= len(holder.Mountpoint) {
			holder = m
		}
	}
	if holder != nil && slices.ContainsFunc(strings.Fields(holder.Optional), func(f string) bool {
		return strings.HasPrefix(f, "shared:")
	}) {
		return nil
	}
	if holder == nil || holder.Mountpoint != real {
		if err := unix.Mount(real, real, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s on itself: %w", real, err)
		}
	}
	if err := unix.Mount("", real, "", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("make %s shared: %w", real, err)
	}
	return nil
}

// sortMounts orders mounts so that a target is mounted before the targets
// below it, as Docker does; mounts at one depth keep their order.
func sortMounts(mounts []initproc.BindMount) []initproc.BindMount {
	depth := func(p string) int { return strings.Count(filepath.Clean(p), "/") }
	slices.SortStableFunc(mounts, func(a, b initproc.BindMount) int {
		return cmp.Compare(depth(a.Target), depth(b.Target))
	})
	return mounts
}
