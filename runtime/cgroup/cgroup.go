// Package cgroup puts container processes into Linux control groups and
// limits their memory, CPU time and number of processes. One Group type
// covers both cgroup versions: on a cgroup v1 host (including the hybrid
// layout with an unused cgroup2 at /sys/fs/cgroup/unified) a group is one
// directory per controller (memory, cpu, cpuacct, pids, freezer) under
// /sys/fs/cgroup/<controller>/<name>; on a cgroup v2 host it is the single
// directory /sys/fs/cgroup/<name> with memory, cpu and pids enabled in its
// ancestors' cgroup.subtree_control.
//
// Errors wrap the classes of plugins/volume: ErrInvalid for bad limits or
// names, ErrNotFound for a missing group, ErrInUse for a group that still
// has processes, ErrNotSupported when a needed controller is not mounted.
package cgroup

import (
	"fmt"
	"math"
	"path"
	"strings"

	"github.com/stowage/stowage/plugins/volume"
)

// Resources are the limits of a group. A zero field means no limit.
type Resources struct {
	// MemoryBytes limits memory; swap may not be used beyond it.
	MemoryBytes int64
	// CPUs limits CPU time to this many CPUs' worth (1.5 = one and a half),
	// as a CFS quota over a 100ms period.
	CPUs float64
	// PidsMax limits the number of processes and threads.
	PidsMax int64
}

const (
	// cpuPeriod is the CFS period in microseconds, as Docker uses.
	cpuPeriod = 100000
	// minCPUs is the smallest CPU limit, as Docker's --cpus allows: the
	// kernel rejects quotas below 1ms.
	minCPUs = 0.01
)

func (r Resources) validate() error {
	switch {
	case r.MemoryBytes < 0:
		return fmt.Errorf("memory limit %d: %w", r.MemoryBytes, volume.ErrInvalid)
	case math.IsNaN(r.CPUs) || math.IsInf(r.CPUs, 0) || r.CPUs < 0:
		return fmt.Errorf("cpu limit %v: %w", r.CPUs, volume.ErrInvalid)
	case r.CPUs > 0 && r.CPUs < minCPUs:
		return fmt.Errorf("cpu limit %v below %v: %w", r.CPUs, minCPUs, volume.ErrInvalid)
	case r.PidsMax < 0:
		return fmt.Errorf("pids limit %d: %w", r.PidsMax, volume.ErrInvalid)
	}
	return nil
}

// cpuQuota is the CFS quota in microseconds per cpuPeriod, or -1 for none.
func (r Resources) cpuQuota() int64 {
	if r.CPUs == 0 {
		return -1
	}
	return int64(math.Round(r.CPUs * cpuPeriod))
}

// checkName accepts relative slash-separated names such as "stowage/<id>"
// that stay inside the cgroup tree.
func checkName(name string) error {
	if name == "" || path.IsAbs(name) || path.Clean(name) != name || name == "." ||
		name == ".." || strings.HasPrefix(name, "../") || strings.ContainsRune(name, 0) {
		return fmt.Errorf("cgroup name %q: %w", name, volume.ErrInvalid)
	}
	return nil
}
