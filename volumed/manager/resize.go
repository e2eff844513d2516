package manager

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/store"
)

// Resize grows the named volume to size bytes and records the capacity the
// provider gave it. For a mounted volume the provider gets its staging and
// mount paths on this host to grow the file system too, online, where it
// can; some grow it only at the next mount (rbd's ext4 without
// CAP_SYS_RESOURCE), so the log says what the file system's size showed.
// Volumes never shrink: less than the recorded capacity is ErrInvalid and
// changes nothing; the same capacity asks the provider again, which
// finishes a resize that was cut short. A provider that cannot resize is
// ErrNotSupported.
func (m *Manager) Resize(ctx context.Context, name string, size int64) (api.Volume, error) {
	rec, unlock, err := m.lockRecord(ctx, "resize volume", name)
	if err != nil {
		return api.Volume{}, err
	}
	defer unlock()
	fail := func(err error) (api.Volume, error) {
		return api.Volume{}, fmt.Errorf("resize volume %q: %w", name, err)
	}
	p, err := m.readyVolume(rec)
	if err != nil {
		return fail(err)
	}
	ep, ok := p.p.(volume.Expander)
	if !ok {
		return fail(notSupported(p, "resize volumes", nil))
	}
	switch {
	case size <= 0:
		return fail(fmt.Errorf("%w: the size must be positive", volume.ErrInvalid))
	case size < rec.CapacityBytes:
		return fail(fmt.Errorf("%w: volumes only grow: it has %s, less than that was asked (%s)",
			volume.ErrInvalid, volume.FormatSize(rec.CapacityBytes), volume.FormatSize(size)))
	}
	req := volume.ExpandRequest{VolumeID: rec.ID, CapacityBytes: size}
	if rec.Staged {
		req.StagingPath = m.stagingPath(name)
	}
	if rec.Published {
		req.TargetPath = m.Mountpoint(name)
	}
	if err := waitRunning(ctx, p); err != nil {
		return fail(err)
	}
	before, measured := m.fsSize(ctx, p, rec)
	var got int64
	err = call(ctx, p, "expand", func(ctx context.Context) error {
		var err error
		got, err = ep.Expand(ctx, req)
		return err
	})
	if errors.Is(err, volume.ErrNotSupported) {
		return fail(notSupported(p, "resize volumes", err))
	}
	if err != nil {
		return fail(err)
	}
	had := rec.CapacityBytes
	rec.CapacityBytes = max(got, size)
	if err := m.save(rec); err != nil {
		return fail(err)
	}
	attrs := []any{"volume", name, "provider", p.name, "capacity_bytes", rec.CapacityBytes}
	after, measuredAfter := m.fsSize(ctx, p, rec)
	switch {
	case !rec.Staged && !rec.Published:
		m.log.Info("volume resized; its file system grows when next mounted", append(attrs, "online", false)...)
	case !measured || !measuredAfter:
		m.log.Info("volume resized; the size of its mounted file system is unknown", attrs...)
	case after > before:
		m.log.Info("volume resized, its mounted file system online", append(attrs, "online", true, "fs_bytes", after)...)
	case rec.CapacityBytes == had:
		m.log.Info("volume resized to the size it had", append(attrs, "fs_bytes", after)...)
	default:
		// Containers see the old size until the volume is mounted anew.
		m.log.Warn("volume resized; its mounted file system grows only when next mounted", append(attrs, "online", false, "fs_bytes", after)...)
	}
	return m.apiVolume(rec), nil
}

// fsSizeTimeout bounds each measurement of fsSize.
const fsSizeTimeout = 5 * time.Second

// fsSize returns the size of the file system of volume rec where it is
// mounted on this host, as the provider's Stats measures it. It reports
// false when the volume is not mounted or its size is not known.
func (m *Manager) fsSize(ctx context.Context, p *provider, rec store.Record) (int64, bool) {
	if !rec.Published {
		return 0, false
	}
	if caps, err := p.capabilities(ctx); err != nil || !caps.Stats {
		return 0, false
	}
	// A hung mount must not hold the resize for long; the size only goes
	// to the log.
	ctx, cancel := context.WithTimeout(ctx, fsSizeTimeout)
	defer cancel()
	var st volume.Stats
	err := call(ctx, p, "stats", func(ctx context.Context) error {
		var err error
		st, err = p.p.Stats(ctx, rec.ID, m.Mountpoint(rec.Name))
		return err
	})
	if err != nil {
		m.log.Debug("measure the file system of a resized volume", "volume", rec.Name, "provider", p.name, "error", err)
		return 0, false
	}
	return st.CapacityBytes, st.CapacityBytes > 0
}

// Unlock breaks the write lock that another host holds on the named volume
// and fences that host, and returns the holder it broke ("" when the
// volume was not locked). volumed never does this on its own: without
// force it refuses with ErrInvalid and explains what unlocking does. A
// volume mounted on this host is ErrInUse (the lock is this host's own); a
// provider without write locks is ErrNotSupported.
func (m *Manager) Unlock(ctx context.Context, name string, force bool) (string, error) {
	rec, unlock, err := m.lockRecord(ctx, "unlock volume", name)
	if err != nil {
		return "", err
	}
	defer unlock()
	fail := func(err error) (string, error) {
		return "", fmt.Errorf("unlock volume %q: %w", name, err)
	}
	p, err := m.readyVolume(rec)
	if err != nil {
		return fail(err)
	}
	up, ok := p.p.(volume.Unlocker)
	if !ok {
		return fail(notSupported(p, "break write locks: its volumes have none", nil))
	}
	if n := rec.MountCount(); n > 0 || rec.Staged || rec.Published {
		return fail(fmt.Errorf("%w: the volume is mounted on this host (%d %s), so the lock is this host's own; unmount it here first",
			volume.ErrInUse, n, plural(n, "mount", "mounts")))
	}
	if !force {
		return fail(fmt.Errorf("%w: unlocking breaks the write lock of the host that holds the volume and fences that host, "+
			"so that it can no longer write (its containers get I/O errors); do it only when that host is dead or cut off, "+
			"then repeat with force (stow volume unlock --force %s)", volume.ErrInvalid, name))
	}
	if err := waitRunning(ctx, p); err != nil {
		return fail(err)
	}
	var holder string
	err = call(ctx, p, "unlock", func(ctx context.Context) error {
		var err error
		holder, err = up.Unlock(ctx, rec.ID)
		return err
	})
	if errors.Is(err, volume.ErrNotSupported) {
		return fail(notSupported(p, "break write locks", err))
	}
	if err != nil {
		return fail(err)
	}
	if holder != "" {
		m.log.Warn("write lock broken", "volume", name, "provider", p.name, "holder", holder)
	}
	return holder, nil
}
