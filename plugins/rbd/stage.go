//go:build ceph && linux && cgo

package rbd

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	librbd "github.com/ceph/go-ceph/rbd"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/loopdev"
	"github.com/stowage/stowage/plugins/volume"
)

// imageDevice is an open image as a device for the FUSE file.
type imageDevice struct{ *librbd.Image }

// Size returns the image's current size, which changes when it grows.
func (d imageDevice) Size() (uint64, error) { return d.Image.GetSize() }

// readOnlyAccess reports whether a Stage with mode m only reads.
func readOnlyAccess(m volume.AccessMode) (bool, error) {
	switch m {
	case volume.SingleNodeWriter:
		return false, nil
	case volume.SingleNodeReaderOnly, volume.MultiNodeReaderOnly:
		return true, nil
	}
	return false, fmt.Errorf("%w: access mode %s is not supported: a file system on RBD takes one writer (use %s, %s or %s)",
		volume.ErrInvalid, m, volume.SingleNodeWriter, volume.SingleNodeReaderOnly, volume.MultiNodeReaderOnly)
}

// Stage opens the image, takes its lock (exclusive to write, shared to
// read), serves it as a FUSE file, attaches that to a loop device, creates
// the file system if the image has none, and mounts it at req.StagingPath.
// It fails with ErrInUse naming the holder when another host holds the
// lock. Staging a staged volume at the same path succeeds.
func (p *Provider) Stage(ctx context.Context, req volume.StageRequest) error {
	unlock, err := p.lockID(ctx, "volume", req.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()
	id := req.VolumeID
	readOnly, err := readOnlyAccess(req.Access)
	if err != nil {
		return fmt.Errorf("stage volume %q: %w", id, err)
	}
	if req.StagingPath == "" {
		return fmt.Errorf("%w: stage volume %q: no staging path", volume.ErrInvalid, id)
	}
	if st := p.stagedAt(id); st != nil {
		switch {
		case st.path != req.StagingPath:
			return fmt.Errorf("%w: stage volume %q: already staged at %s", volume.ErrInUse, id, st.path)
		case st.readOnly != readOnly:
			return fmt.Errorf("%w: stage volume %q: already staged at %s %s", volume.ErrInUse, id, st.path, mode(st.readOnly))
		}
		return nil
	}
	if ok, err := mounted(req.StagingPath); err != nil {
		return wrap(err, "stage volume", strconv.Quote(id))
	} else if ok {
		return fmt.Errorf("%w: stage volume %q: %s is already a mount point (left by an earlier run of the provider? unstage it first)",
			volume.ErrInUse, id, req.StagingPath)
	}
	st, err := p.stage(ctx, id, req.StagingPath, readOnly)
	if err != nil {
		return fmt.Errorf("stage volume %q: %w", id, err)
	}
	p.mu.Lock()
	p.staged[id] = st
	p.mu.Unlock()
	p.log.InfoContext(ctx, "staged volume", "volume", id, "path", req.StagingPath, "mode", mode(readOnly),
		"device", st.loop.path, "direct_io", st.loop.directIO())
	return nil
}

func mode(readOnly bool) string {
	if readOnly {
		return "read-only"
	}
	return "read-write"
}

// stage does the work of Stage; on failure it undoes what it did.
func (p *Provider) stage(ctx context.Context, id, path string, readOnly bool) (_ *staging, err error) {
	var img *librbd.Image
	if readOnly {
		img, err = librbd.OpenImageReadOnly(p.ioctx, id, librbd.NoSnapshot)
	} else {
		img, err = librbd.OpenImage(p.ioctx, id, librbd.NoSnapshot)
	}
	if errors.Is(err, librbd.ErrNotFound) {
		return nil, fmt.Errorf("%w: volume %q", volume.ErrNotFound, id)
	}
	if err != nil {
		return nil, wrap(err, "open image", strconv.Quote(id))
	}
	st := &staging{path: path, readOnly: readOnly, img: img}
	defer func() {
		if err != nil {
			if uerr := p.teardown(ctx, id, st); uerr != nil {
				p.log.WarnContext(ctx, "undo failed stage", "volume", id, "error", uerr)
			}
		}
	}()
	s, err := readSpec(img)
	if err != nil {
		return nil, err
	}
	st.fs = s.FS
	if err := p.takeLock(id, img, readOnly); err != nil {
		return nil, err
	}
	formatted, err := hasFS(img)
	if err != nil {
		return nil, wrap(err, "read image", strconv.Quote(id))
	}
	if !formatted && readOnly {
		return nil, fmt.Errorf("%w: the volume has no file system yet (stage it read-write once first)", volume.ErrInvalid)
	}
	st.file, err = serveBlockFile(filepath.Join(p.cfg.RunDir, id), id, imageDevice{img}, readOnly)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", volume.ErrUnavailable, err)
	}
	st.loop, err = attachLoop(ctx, st.file.path(), readOnly)
	if err != nil {
		return nil, err
	}
	if !formatted {
		if err := mkfs(ctx, st.loop.path, s.FS); err != nil {
			return nil, err
		}
		p.log.InfoContext(ctx, "created file system", "volume", id, "fs", s.FS)
	}
	grow := false
	if !readOnly {
		if grow, err = growPending(img); err != nil {
			return nil, wrap(err, "read metadata of image", strconv.Quote(id))
		}
	}
	if grow && s.FS == fsExt4 {
		// Before mounting, since growing a mounted ext4 needs
		// CAP_SYS_RESOURCE.
		if err := growOffline(ctx, st.loop.path); err != nil {
			return nil, err
		}
	}
	if err := mountFS(st.loop.path, path, s.FS, readOnly); err != nil {
		return nil, wrap(err, "mount", st.loop.path)
	}
	if grow {
		if s.FS != fsExt4 {
			if err := growFS(ctx, st.loop.path, path, s.FS); err != nil {
				return nil, err
			}
		}
		if err := img.RemoveMetadata(metaGrow); err != nil && errnoOf(err) != syscall.ENOENT {
			return nil, wrap(err, "write metadata of image", strconv.Quote(id))
		}
		p.log.InfoContext(ctx, "grew file system", "volume", id)
	}
	return st, nil
}

// growPending reports whether the image grew while it was not staged
// read-write here, so that its file system needs growing.
func growPending(img *librbd.Image) (bool, error) {
	_, err := img.GetMetadata(metaGrow)
	switch errnoOf(err) {
	case 0:
		return true, nil
	case syscall.ENOENT:
		return false, nil
	}
	return false, err
}

// takeLock takes the image's lock for this host: exclusive to write,
// shared to read. A lock this host's cookie holds through another client
// is left from an earlier run of the provider here, and is broken.
func (p *Provider) takeLock(id string, img *librbd.Image, readOnly bool) error {
	for attempt := 0; ; attempt++ {
		var err error
		if readOnly {
			err = img.LockShared(p.cookie, lockTag)
		} else {
			err = img.LockExclusive(p.cookie)
		}
		if err == nil {
			return nil
		}
		if e := errnoOf(err); e != syscall.EBUSY && e != syscall.EEXIST {
			return wrap(err, "lock image", strconv.Quote(id))
		}
		_, lockers, lerr := img.ListLockers()
		if lerr != nil {
			return wrap(lerr, "list locks of image", strconv.Quote(id))
		}
		stale := false
		for _, l := range lockers {
			if l.Cookie == p.cookie && l.Client != p.self && attempt == 0 {
				if err := img.BreakLock(l.Client, l.Cookie); err != nil && errnoOf(err) != syscall.ENOENT {
					return wrap(err, "break stale lock of image", strconv.Quote(id))
				}
				p.log.Warn("broke a lock this host left from an earlier run", "volume", id, "client", l.Client)
				stale = true
			}
		}
		if !stale {
			return fmt.Errorf("%w: volume %q is staged on %s (stage it elsewhere only after it is unstaged there, or after `unlock` if that host is dead)",
				volume.ErrInUse, id, describeLockers(lockers))
		}
	}
}

// describeLockers names the holders of an image's locks.
func describeLockers(lockers []librbd.Locker) string {
	if len(lockers) == 0 {
		return "another client (the lock was released meanwhile; try again)"
	}
	var d []string
	for _, l := range lockers {
		who := "a client outside stowage (lock cookie " + strconv.Quote(l.Cookie) + ")"
		if h := hostOfCookie(l.Cookie); h != "" {
			who = "host " + strconv.Quote(h)
		}
		d = append(d, fmt.Sprintf("%s (Ceph %s at %s)", who, l.Client, l.Addr))
	}
	return strings.Join(d, ", ")
}

// teardown undoes a staging as far as it got: unmount, detach the loop
// device, stop the FUSE file, release the lock, close the image. It stops
// at the first step that fails and leaves st as it is then, so that a
// retry continues there. It returns ErrInUse when another mount namespace
// still mounts the file system.
func (p *Provider) teardown(ctx context.Context, id string, st *staging) error {
	if st.loop != nil {
		if err := unmount(st.path); err != nil {
			return wrap(err, "unmount", st.path)
		}
		busy, err := st.loop.waitFree(ctx)
		if err != nil {
			return wrap(err, "check", st.loop.path)
		}
		if busy {
			who := "another mount namespace"
			if maj, min, err := st.loop.devNumber(); err == nil {
				if h := holders(maj, min); len(h) > 0 {
					who = "the mount namespaces of " + strings.Join(h, ", ")
				}
			}
			return fmt.Errorf("%w: the file system of %s is still mounted in %s; unmount it there (the volume stays attached until then, never twice)",
				volume.ErrInUse, st.loop.path, who)
		}
		if err := st.loop.detach(ctx); err != nil {
			return err
		}
		st.loop = nil
	}
	if st.file != nil {
		// The last flush, once nothing writes any more.
		_ = st.file.flush()
		if err := st.file.lostWrites(); err != nil {
			p.log.ErrorContext(ctx, "writes to the volume may be lost: a write or flush failed (was this host fenced off?)", "volume", id, "error", err)
		}
		if err := st.file.close(); err != nil {
			return fmt.Errorf("%w: %w", volume.ErrUnavailable, err)
		}
		st.file = nil
	}
	if st.img != nil {
		var errs []error
		if err := st.img.Unlock(p.cookie); err != nil && errnoOf(err) != syscall.ENOENT {
			errs = append(errs, err)
		}
		errs = append(errs, st.img.Close())
		st.img = nil
		if err := errors.Join(errs...); err != nil {
			// The image is closed either way; a lock left behind is broken
			// at this host's next Stage, or by Unlock.
			p.log.WarnContext(ctx, "release image", "volume", id, "error", err)
		}
	}
	return nil
}

// Unstage unmounts the file system, detaches the loop device, stops the
// FUSE file, releases the lock and closes the image. It fails with
// ErrInUse while the file system is published, or mounted in another
// mount namespace. Unstaging what is not staged succeeds.
func (p *Provider) Unstage(ctx context.Context, volumeID, stagingPath string) error {
	unlock, err := p.lockID(ctx, "volume", volumeID)
	if err != nil {
		return err
	}
	defer unlock()
	st := p.stagedAt(volumeID)
	if st == nil || st.path != stagingPath {
		// Not staged here by this run; a mount left at the path by an
		// earlier run goes.
		return p.unstageStale(ctx, volumeID, stagingPath)
	}
	if err := p.teardown(ctx, volumeID, st); err != nil {
		return fmt.Errorf("unstage volume %q: %w", volumeID, err)
	}
	p.mu.Lock()
	delete(p.staged, volumeID)
	p.mu.Unlock()
	p.log.InfoContext(ctx, "unstaged volume", "volume", volumeID, "path", stagingPath)
	return nil
}

// unstageStale unmounts a staging path that an earlier run of the
// provider left, and detaches the loop device under it. That device is
// found by the mount, not by its backing file: the FUSE file of a run that
// died no longer answers, and the run may have attached it in another
// mount namespace (an earlier container), under another path.
func (p *Provider) unstageStale(ctx context.Context, id, path string) error {
	dev, err := loopdev.MountedAt(path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return wrap(err, "unstage volume", strconv.Quote(id))
	}
	if err := unmount(path); err != nil {
		return wrap(err, "unstage volume", strconv.Quote(id))
	}
	if dev != "" {
		detached, err := detachStale(ctx, id, dev)
		if err != nil {
			return err
		}
		p.log.InfoContext(ctx, "detached loop device of an earlier run", "volume", id, "device", detached)
	}
	dir := filepath.Join(p.cfg.RunDir, id)
	// The FUSE mount of a dead run: detach it lazily, as its server is
	// gone (and stat of it fails with ENOTCONN, so do not ask first).
	if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return wrap(&os.PathError{Op: "unmount", Path: dir, Err: err}, "unstage volume", strconv.Quote(id))
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		p.log.WarnContext(ctx, "remove FUSE directory", "volume", id, "error", err)
	}
	return nil
}

// Publish bind-mounts the staging path onto req.TargetPath, creating the
// target directory, read-only when asked or when staged read-only.
// Publishing a published volume succeeds.
func (p *Provider) Publish(ctx context.Context, req volume.PublishRequest) error {
	unlock, err := p.lockID(ctx, "volume", req.VolumeID)
	if err != nil {
		return err
	}
	defer unlock()
	id := req.VolumeID
	if req.StagingPath == "" || req.TargetPath == "" {
		return fmt.Errorf("%w: publish volume %q: staging and target paths are required", volume.ErrInvalid, id)
	}
	st := p.stagedAt(id)
	if st == nil {
		if _, err := p.describe(id); err != nil {
			return fmt.Errorf("publish volume %q: %w", id, err)
		}
		return fmt.Errorf("%w: publish volume %q: not staged on this host", volume.ErrInvalid, id)
	}
	if st.path != req.StagingPath {
		return fmt.Errorf("%w: publish volume %q: staged at %s, not at %s", volume.ErrInvalid, id, st.path, req.StagingPath)
	}
	if err := os.MkdirAll(req.TargetPath, 0o755); err != nil {
		return fmt.Errorf("%w: publish volume %q: %w", volume.ErrUnavailable, id, err)
	}
	if ok, err := mounted(req.TargetPath); err != nil || ok {
		return wrap(err, "publish volume", strconv.Quote(id))
	}
	if err := mount(req.StagingPath, req.TargetPath, "", unix.MS_BIND, ""); err != nil {
		return wrap(err, "publish volume", strconv.Quote(id))
	}
	if req.ReadOnly || st.readOnly {
		// A bind mount takes MS_RDONLY only on a remount.
		if err := mount("", req.TargetPath, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
			return wrap(errors.Join(err, unmount(req.TargetPath)), "publish volume", strconv.Quote(id))
		}
	}
	p.log.DebugContext(ctx, "published volume", "volume", id, "path", req.TargetPath, "read_only", req.ReadOnly || st.readOnly)
	return nil
}

// Unpublish unmounts the target path and removes it. Unpublishing what is
// not published succeeds.
func (p *Provider) Unpublish(ctx context.Context, volumeID, targetPath string) error {
	unlock, err := p.lockID(ctx, "volume", volumeID)
	if err != nil {
		return err
	}
	defer unlock()
	err = unmount(targetPath)
	if err == nil {
		if rerr := os.Remove(targetPath); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}
	return wrap(err, "unpublish volume", strconv.Quote(volumeID))
}

// Stats reports the file system mounted at path.
func (p *Provider) Stats(ctx context.Context, volumeID, path string) (volume.Stats, error) {
	if err := ctx.Err(); err != nil {
		return volume.Stats{}, err
	}
	if err := checkName("volume", volumeID); err != nil {
		return volume.Stats{}, err
	}
	if p.stagedAt(volumeID) == nil {
		if _, err := p.describe(volumeID); err != nil {
			return volume.Stats{}, fmt.Errorf("stat volume %q: %w", volumeID, err)
		}
	}
	s, err := statFS(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return volume.Stats{}, fmt.Errorf("%w: stat volume %q: %w", volume.ErrNotFound, volumeID, err)
		}
		return volume.Stats{}, wrap(err, "stat volume", strconv.Quote(volumeID))
	}
	return s, nil
}
