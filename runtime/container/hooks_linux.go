package container

import (
	"github.com/stowage/stowage/runtime/cgroup"
)

// group is what the engine needs of a cgroup; *cgroup.Group is one.
type group interface {
	Add(pid int) error
	ThreadFiles() []string
	Procs() ([]int, error)
	Kill() error
	OOMKilled() (bool, error)
	Delete() error
}

// cgroupName is the name of a container's cgroup.
func cgroupName(id string) string { return "stowage/" + id }

// newGroup makes the container's cgroup with its limits.
func newGroup(id string, r Resources) (group, error) {
	return cgroup.New(cgroupName(id), cgroup.Resources{MemoryBytes: r.MemoryBytes, CPUs: r.CPUs, PidsMax: r.PidsMax})
}

// loadGroup finds the cgroup of a container made earlier.
func loadGroup(id string) (group, error) {
	return cgroup.Load(cgroupName(id))
}
