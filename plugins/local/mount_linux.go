package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/loopdev"
	"github.com/stowage/stowage/plugins/volume"
)

// Stage mounts the volume at req.StagingPath: a bind mount of the data
// directory for type dir, the image through a loop device for type fs.
// Staging a staged volume succeeds.
func (p *Provider) Stage(ctx context.Context, req volume.StageRequest) error {
	m, unlock, err := p.lockVolume(ctx, req.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()
	if req.StagingPath == "" {
		return fmt.Errorf("%w: stage volume %q: no staging path", volume.ErrInvalid, m.Name)
	}
	if ok, err := mounted(req.StagingPath); err != nil || ok {
		return wrapOp("stage volume", m.Name, err)
	}
	switch m.Type {
	case typeDir:
		err = mount(filepath.Join(p.dir(m.Name), dataDir), req.StagingPath, "", unix.MS_BIND)
	case typeFS:
		err = mountImage(ctx, filepath.Join(p.dir(m.Name), imageFile), req.StagingPath, m.FS)
	}
	if err != nil {
		return wrapOp("stage volume", m.Name, err)
	}
	p.log.DebugContext(ctx, "staged volume", "volume", m.Name, "path", req.StagingPath)
	return nil
}

// Unstage unmounts the staging path. For type fs the loop device detaches
// with the unmount, and Unstage waits (up to 10s) until it has, so that the
// volume can be deleted right after; it returns ErrInUse when the device
// stays attached, as when the volume is still published. Unstaging what is
// not staged succeeds.
func (p *Provider) Unstage(ctx context.Context, volumeID, stagingPath string) error {
	unlock, err := p.lockID(ctx, volumeID)
	if err != nil {
		return err
	}
	defer unlock()
	if err := unmount(stagingPath); err != nil {
		return wrapOp("unstage volume", volumeID, err)
	}
	if m, err := p.meta(volumeID); err == nil && m.Type == typeFS {
		image, err := filepath.EvalSymlinks(filepath.Join(p.dir(volumeID), imageFile))
		if err == nil {
			err = waitDetached(ctx, image)
		}
		if err != nil {
			return wrapOp("unstage volume", volumeID, err)
		}
	}
	return nil
}

// Publish bind-mounts the staging path onto req.TargetPath, creating the
// target directory, and makes the mount read-only when req.ReadOnly is set.
// Publishing a published volume succeeds.
func (p *Provider) Publish(ctx context.Context, req volume.PublishRequest) error {
	m, unlock, err := p.lockVolume(ctx, req.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()
	if req.StagingPath == "" || req.TargetPath == "" {
		return fmt.Errorf("%w: publish volume %q: staging and target paths are required", volume.ErrInvalid, m.Name)
	}
	staged, err := mounted(req.StagingPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return wrapOp("publish volume", m.Name, err)
	}
	if !staged {
		return fmt.Errorf("%w: publish volume %q: not staged at %s", volume.ErrInvalid, m.Name, req.StagingPath)
	}
	if err := os.MkdirAll(req.TargetPath, 0o755); err != nil {
		return fmt.Errorf("%w: publish volume %q: %w", volume.ErrUnavailable, m.Name, err)
	}
	if ok, err := mounted(req.TargetPath); err != nil || ok {
		return wrapOp("publish volume", m.Name, err)
	}
	if err := mount(req.StagingPath, req.TargetPath, "", unix.MS_BIND); err != nil {
		return wrapOp("publish volume", m.Name, err)
	}
	if req.ReadOnly {
		// A bind mount takes MS_RDONLY only on a remount.
		if err := mount("", req.TargetPath, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY); err != nil {
			return wrapOp("publish volume", m.Name, errors.Join(err, unmount(req.TargetPath)))
		}
	}
	p.log.DebugContext(ctx, "published volume", "volume", m.Name, "path", req.TargetPath, "read_only", req.ReadOnly)
	return nil
}

// Unpublish unmounts the target path and removes it. Unpublishing what is
// not published succeeds.
func (p *Provider) Unpublish(ctx context.Context, volumeID, targetPath string) error {
	unlock, err := p.lockID(ctx, volumeID)
	if err != nil {
		return err
	}
	defer unlock()
	err = unmount(targetPath)
	if err == nil {
		err = removeIfExists(targetPath)
	}
	if err != nil {
		return wrapOp("unpublish volume", volumeID, err)
	}
	return nil
}

// Stats reports the file system mounted at path.
func (p *Provider) Stats(ctx context.Context, volumeID, path string) (volume.Stats, error) {
	if err := ctx.Err(); err != nil {
		return volume.Stats{}, err
	}
	if _, err := p.meta(volumeID); err != nil {
		return volume.Stats{}, err
	}
	u, err := loopdev.Statfs(path)
	if err != nil {
		return volume.Stats{}, wrapOp("stat volume", volumeID, err)
	}
	return volume.Stats(u), nil
}

// wrapOp adds "op volume" context to err and a contract class by its cause;
// nil stays nil.
func wrapOp(op, id string, err error) error {
	if err == nil {
		return nil
	}
	class := volume.ErrUnavailable
	switch {
	case errors.Is(err, volume.ErrInvalid), errors.Is(err, volume.ErrInUse),
		errors.Is(err, volume.ErrNotFound), errors.Is(err, volume.ErrUnavailable),
		errors.Is(err, volume.ErrNotSupported), errors.Is(err, context.Canceled),
		errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s %q: %w", op, id, err)
	case errors.Is(err, unix.ENOENT), errors.Is(err, unix.ENOTDIR):
		class = volume.ErrInvalid
	case errors.Is(err, unix.EBUSY):
		class = volume.ErrInUse
	}
	return fmt.Errorf("%w: %s %q: %w", class, op, id, err)
}

// mounted reports whether path is a mount point.
func mounted(path string) (bool, error) { return loopdev.Mounted(path) }

func mount(source, target, fstype string, flags uintptr) error {
	return loopdev.Mount(source, target, fstype, flags, "")
}

// unmount unmounts path if it is a mount point; a missing path or one not
// mounted is fine.
func unmount(path string) error { return loopdev.Unmount(path) }

// mountImage attaches image to a loop device and mounts it on target. The
// loop device is set to autoclear, so it detaches when the file system is
// unmounted (or, if the mount fails, when it is closed here).
func mountImage(ctx context.Context, image, target, fstype string) error {
	f, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	dev, err := loopdev.Attach(ctx, f, loopdev.Options{Autoclear: true})
	f.Close()
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return fmt.Errorf("%w: %w", volume.ErrUnavailable, err)
	}
	defer dev.Close()
	return mount(dev.Path, target, fstype, 0)
}

// loopDevices returns the loop devices (e.g. "loop3") backed by image,
// matched by device and inode (see package loopdev for why not by path).
// A missing image has none.
func loopDevices(image string) ([]string, error) { return loopdev.Find(image) }

// detachWait bounds how long Unstage waits for an autoclear loop device to
// go away after the unmount.
const detachWait = 10 * time.Second

// waitDetached waits until no loop device is backed by image, so that a
// Delete right after Unstage finds the volume free. The kernel may clear an
// autoclear device a moment after the unmount returns.
func waitDetached(ctx context.Context, image string) error {
	ctx, cancel := context.WithTimeout(ctx, detachWait)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		devs, err := loopDevices(image)
		if err != nil {
			return fmt.Errorf("%w: list loop devices: %w", volume.ErrUnavailable, err)
		}
		if len(devs) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: image still attached to %s: %w", volume.ErrInUse, strings.Join(devs, ", "), ctx.Err())
		case <-tick.C:
		}
	}
}

// inUse returns an ErrInUse error when the volume in dir is staged or
// published: its image is attached to a loop device, or its data directory
// is the source of a bind mount.
func inUse(ctx context.Context, dir string) error {
	real, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", volume.ErrUnavailable, err)
	}
	devs, err := loopDevices(filepath.Join(real, imageFile))
	if err != nil {
		return fmt.Errorf("%w: list loop devices: %w", volume.ErrUnavailable, err)
	}
	if len(devs) > 0 {
		return fmt.Errorf("%w: image attached to %s", volume.ErrInUse, strings.Join(devs, ", "))
	}
	data := filepath.Join(real, dataDir)
	if _, err := os.Stat(data); err == nil {
		ok, err := bindSource(data)
		if err != nil {
			return fmt.Errorf("%w: read mounts: %w", volume.ErrUnavailable, err)
		}
		if ok {
			return fmt.Errorf("%w: data directory is mounted", volume.ErrInUse)
		}
	}
	return nil
}

// bindSource reports whether some mount shows the directory path (or a
// directory below it): mountinfo gives each mount's root within its file
// system, so path is translated to the same terms.
func bindSource(path string) (bool, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	major, minor := int(unix.Major(st.Dev)), int(unix.Minor(st.Dev))
	mounts, err := mountinfo.GetMounts(func(m *mountinfo.Info) (skip, stop bool) {
		return m.Major != major || m.Minor != minor, false
	})
	if err != nil {
		return false, err
	}
	// The mount through which path is reached: the deepest one above it.
	var host *mountinfo.Info
	for _, m := range mounts {
		if within(path, m.Mountpoint) && (host == nil || len(m.Mountpoint) > len(host.Mountpoint)) {
			host = m
		}
	}
	if host == nil {
		return false, nil
	}
	rel := filepath.Join(host.Root, strings.TrimPrefix(path, host.Mountpoint))
	for _, m := range mounts {
		if within(m.Root, rel) {
			return true, nil
		}
	}
	return false, nil
}

// within reports whether path is dir or below it.
func within(path, dir string) bool {
	return path == dir || dir == "/" || strings.HasPrefix(path, dir+"/")
}
