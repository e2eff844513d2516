//go:build !linux

package cgroup

import (
	"context"
	"fmt"

	"github.com/stowage/stowage/plugins/volume"
)

// Group is a control group; only Linux has them.
type Group struct{}

var errUnsupported = fmt.Errorf("cgroups: %w", volume.ErrNotSupported)

// New fails with ErrNotSupported: only Linux has cgroups.
func New(name string, r Resources) (*Group, error) { return nil, errUnsupported }

// Load fails with ErrNotSupported: only Linux has cgroups.
func Load(name string) (*Group, error) { return nil, errUnsupported }

// Version returns 0.
func (g *Group) Version() int { return 0 }

// Name returns "".
func (g *Group) Name() string { return "" }

// Add fails with ErrNotSupported.
func (g *Group) Add(pid int) error { return errUnsupported }

// Procs fails with ErrNotSupported.
func (g *Group) Procs() ([]int, error) { return nil, errUnsupported }

// Freeze fails with ErrNotSupported.
func (g *Group) Freeze(ctx context.Context) error { return errUnsupported }

// Thaw fails with ErrNotSupported.
func (g *Group) Thaw(ctx context.Context) error { return errUnsupported }

// OOMKilled fails with ErrNotSupported.
func (g *Group) OOMKilled() (bool, error) { return false, errUnsupported }

// Kill fails with ErrNotSupported.
func (g *Group) Kill() error { return errUnsupported }

// Delete fails with ErrNotSupported.
func (g *Group) Delete() error { return errUnsupported }

// ThreadFiles returns nil.
func (g *Group) ThreadFiles() []string { return nil }

// Frozen is not supported.
func (g *Group) Frozen() (bool, error) { return false, errUnsupported }
