package container

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
)

// pollInterval is how often Stop and Logs look at a container's state.
const pollInterval = 50 * time.Millisecond

// owned says whether c's monitor still runs.
func owned(c Container) bool {
	return alive(c.State.MonitorPID, c.State.MonitorStart)
}

// active says whether c runs or is being started by a live monitor.
func active(c Container) bool {
	return (c.State.Status == Running || c.State.Status == Created) && owned(c)
}

// Sweep finds containers whose monitor died while they were created or
// running, marks them exited with code -1, kills what is left of them
// through their cgroup and releases their volumes. It keeps their upper
// directories. Run it before commands that read containers.
func (e *Engine) Sweep(ctx context.Context) error {
	all, err := e.store.List()
	if err != nil {
		return err
	}
	var errs []error
	for _, c := range all {
		if c.State.Status == Exited || owned(c) {
			continue
		}
		errs = append(errs, e.sweep(ctx, c))
	}
	return errors.Join(errs...)
}

func (e *Engine) sweep(ctx context.Context, c Container) error {
	// c may have been read just before its monitor recorded the end and
	// exited. With the monitor gone, what is stored is its last word.
	now, err := e.store.Get(c.ID())
	if errors.Is(err, volume.ErrNotFound) {
		return nil // removed by --rm
	}
	if err != nil {
		return err
	}
	if now.State.Status == Exited || owned(now) {
		return nil
	}
	c = now
	log := e.log.With("container", c.ID())
	log.Warn("monitor died; marking the container exited")
	st := c.State
	if alive(st.PID, st.PIDStart) {
		unix.Kill(st.PID, unix.SIGKILL)
	}
	g, err := loadGroup(c.ID())
	if err != nil {
		g = nil
	}
	st.Status, st.ExitCode, st.Error, st.FinishedAt, st.PID, st.PIDStart = Exited, -1, "monitor died", time.Now().UTC(), 0, 0
	e.release(ctx, &st, g, log)
	return e.store.SaveState(c.ID(), st)
}

// Get returns the container ref names, after sweeping it if its monitor
// died.
func (e *Engine) Get(ctx context.Context, ref string) (Container, error) {
	c, err := e.store.Get(ref)
	if err != nil {
		return c, err
	}
	if c.State.Status != Exited && !owned(c) {
		if err := e.sweep(ctx, c); err != nil {
			return c, err
		}
		return e.store.Get(c.ID())
	}
	return c, nil
}

// List returns every container, after a sweep.
func (e *Engine) List(ctx context.Context) ([]Container, error) {
	if err := e.Sweep(ctx); err != nil {
		e.log.Warn("sweep containers", "err", err)
	}
	return e.store.List()
}

// Kill sends sig to the PID 1 of the running container ref.
func (e *Engine) Kill(ctx context.Context, ref string, sig syscall.Signal) error {
	c, err := e.Get(ctx, ref)
	if err != nil {
		return err
	}
	if c.State.Status != Running || !alive(c.State.PID, c.State.PIDStart) {
		return fmt.Errorf("%w: container %s is not running", volume.ErrInvalid, c.Config.Name)
	}
	if err := unix.Kill(c.State.PID, sig); err != nil {
		return fmt.Errorf("signal container %s: %w", c.Config.Name, err)
	}
	return nil
}

// Stop sends SIGTERM to the container's PID 1, waits up to timeout for it
// to end, then kills it. Stopping a container that does not run succeeds.
func (e *Engine) Stop(ctx context.Context, ref string, timeout time.Duration) error {
	c, err := e.Get(ctx, ref)
	if err != nil {
		return err
	}
	if c.State.Status != Running {
		return nil
	}
	if alive(c.State.PID, c.State.PIDStart) {
		unix.Kill(c.State.PID, unix.SIGTERM)
	}
	if e.waitExited(ctx, c.ID(), timeout) == nil {
		return nil
	}
	return e.kill9(ctx, c)
}

// kill9 kills the container and waits until its monitor has recorded it.
func (e *Engine) kill9(ctx context.Context, c Container) error {
	if alive(c.State.PID, c.State.PIDStart) {
		// PID 1 dying takes every process of its PID namespace along.
		unix.Kill(c.State.PID, unix.SIGKILL)
	}
	if g, err := loadGroup(c.ID()); err == nil {
		g.Kill()
	}
	if err := e.waitExited(ctx, c.ID(), 30*time.Second); err != nil {
		return fmt.Errorf("stop container %s: %w", c.Config.Name, err)
	}
	return nil
}

// waitExited waits until the container's monitor has recorded its end, or
// its monitor is gone (then it sweeps).
func (e *Engine) waitExited(ctx context.Context, id string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		c, err := e.store.Get(id)
		if errors.Is(err, volume.ErrNotFound) {
			return nil // removed by --rm
		}
		if err != nil {
			return err
		}
		if c.State.Status == Exited {
			return nil
		}
		if !owned(c) {
			return e.sweep(ctx, c)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: container %s still runs after %s", volume.ErrUnavailable, c.Config.Name, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Remove deletes the container ref with its upper directory and logs. A
// running container is ErrInUse unless force, which kills it first.
func (e *Engine) Remove(ctx context.Context, ref string, force bool) error {
	c, err := e.Get(ctx, ref)
	if err != nil {
		return err
	}
	if active(c) {
		if !force {
			return fmt.Errorf("container %s: %w: it is running; stop it first or use -f", c.Config.Name, volume.ErrInUse)
		}
		if err := e.kill9(ctx, c); err != nil {
			return err
		}
		if c, err = e.store.Get(c.ID()); errors.Is(err, volume.ErrNotFound) {
			return nil
		} else if err != nil {
			return err
		}
	}
	if len(c.State.Mounts) > 0 {
		st := c.State
		e.release(ctx, &st, nil, e.log.With("container", c.ID()))
		if len(st.Mounts) > 0 {
			e.store.SaveState(c.ID(), st)
			return fmt.Errorf("container %s: %w: volumed did not unmount its volumes; try again", c.Config.Name, volume.ErrUnavailable)
		}
	}
	if g, err := loadGroup(c.ID()); err == nil {
		g.Delete()
	}
	return e.store.Remove(c.ID())
}

// Logs copies the output of the container ref to w; with follow it goes on
// until the container ends or ctx is done.
func (e *Engine) Logs(ctx context.Context, ref string, follow bool, w io.Writer) error {
	c, err := e.Get(ctx, ref)
	if err != nil {
		return err
	}
	f, err := os.Open(filepath.Join(c.Dir, "log"))
	if errors.Is(err, os.ErrNotExist) {
		return nil // a foreground container keeps no log
	}
	if err != nil {
		return fmt.Errorf("read log: %w", err)
	}
	defer f.Close()
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		if _, err := io.Copy(w, f); err != nil {
			return fmt.Errorf("read log: %w", err)
		}
		if !follow {
			return nil
		}
		c, err := e.store.Get(c.ID())
		if err != nil || !active(c) {
			_, err := io.Copy(w, f) // what came before the end
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
