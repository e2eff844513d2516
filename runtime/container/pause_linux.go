package container

import (
	"context"
	"errors"
	"fmt"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/cgroup"
)

// Pause freezes every process of the running container ref with the
// cgroup freezer and returns once all are frozen: they stay in memory and
// get no CPU time until Unpause. Pausing a paused container succeeds. If
// ctx ends first the container is thawed again.
func (e *Engine) Pause(ctx context.Context, ref string) error {
	c, g, err := e.runningGroup(ctx, ref)
	if err != nil {
		return err
	}
	if err := g.Freeze(ctx); err != nil {
		return fmt.Errorf("pause container %s: %w", c.Config.Name, err)
	}
	return nil
}

// Unpause thaws the container ref that Pause froze. Unpausing a container
// that is not paused succeeds.
func (e *Engine) Unpause(ctx context.Context, ref string) error {
	c, g, err := e.runningGroup(ctx, ref)
	if err != nil {
		return err
	}
	if err := g.Thaw(ctx); err != nil {
		return fmt.Errorf("unpause container %s: %w", c.Config.Name, err)
	}
	return nil
}

// Paused reports whether container c is paused (frozen, or being frozen).
// A container that does not run is not paused.
func (e *Engine) Paused(c Container) (bool, error) {
	if c.State.Status != Running {
		return false, nil
	}
	g, err := cgroup.Load(cgroupName(c.ID()))
	if errors.Is(err, volume.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return g.Frozen()
}

// runningGroup returns the running container ref and its cgroup.
func (e *Engine) runningGroup(ctx context.Context, ref string) (Container, *cgroup.Group, error) {
	c, err := e.Get(ctx, ref)
	if err != nil {
		return c, nil, err
	}
	if c.State.Status != Running || !alive(c.State.PID, c.State.PIDStart) {
		return c, nil, fmt.Errorf("%w: container %s is not running", volume.ErrInvalid, c.Config.Name)
	}
	g, err := cgroup.Load(cgroupName(c.ID()))
	if err != nil {
		return c, nil, fmt.Errorf("find the cgroup of container %s: %w", c.Config.Name, err)
	}
	return c, g, nil
}
