//go:build ceph && linux && cgo

package rbd

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"time"

	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/stowage/stowage/plugins/volume"
)

// CreateSnapshot takes a snapshot called name of a volume, with the file
// system frozen when the volume is staged read-write here. Taking it again
// returns the existing snapshot; the name taken in the pool for another
// volume is ErrExists.
func (p *Provider) CreateSnapshot(ctx context.Context, volumeID, name string) (volume.Snapshot, error) {
	if err := checkName("snapshot", name); err != nil {
		return volume.Snapshot{}, err
	}
	unlock, err := p.lockID(ctx, "volume", volumeID)
	if err != nil {
		return volume.Snapshot{}, err
	}
	defer unlock()
	if _, err := p.describe(volumeID); err != nil {
		return volume.Snapshot{}, fmt.Errorf("snapshot volume %q: %w", volumeID, err)
	}
	// A snapshot name is unique in the pool, so that a name alone says
	// which volume it belongs to.
	all, err := p.snapshots(ctx, "")
	if err != nil {
		return volume.Snapshot{}, err
	}
	for _, s := range all {
		_, snap, _ := parseSnapshotID(s.ID)
		if snap != name {
			continue
		}
		if s.SourceVolumeID == volumeID {
			return s, nil
		}
		return volume.Snapshot{}, fmt.Errorf("%w: snapshot name %q is taken by volume %q", volume.ErrExists, name, s.SourceVolumeID)
	}

	img, err := librbd.OpenImage(p.ioctx, volumeID, librbd.NoSnapshot)
	if err != nil {
		return volume.Snapshot{}, wrap(err, "open image", strconv.Quote(volumeID))
	}
	defer img.Close()
	if err := p.takeSnapshot(ctx, volumeID, img, name); err != nil {
		return volume.Snapshot{}, err
	}
	p.log.InfoContext(ctx, "created snapshot", "volume", volumeID, "snapshot", name)
	snaps, err := p.imageSnapshots(volumeID)
	if err != nil {
		return volume.Snapshot{}, err
	}
	for _, s := range snaps {
		if s.ID == snapshotID(volumeID, name) {
			return s, nil
		}
	}
	return volume.Snapshot{}, fmt.Errorf("%w: snapshot %q vanished after it was taken", volume.ErrUnavailable, snapshotID(volumeID, name))
}

// DeleteSnapshot removes a snapshot. Deleting a missing one succeeds; one
// with clones is ErrInUse, naming them.
func (p *Provider) DeleteSnapshot(ctx context.Context, snapshotID string) error {
	image, name, err := parseSnapshotID(snapshotID)
	if errors.Is(err, volume.ErrNotFound) {
		return nil
	}
	unlock, err := p.lockID(ctx, "volume", image)
	if err != nil {
		return err
	}
	defer unlock()
	img, err := librbd.OpenImage(p.ioctx, image, librbd.NoSnapshot)
	if errors.Is(err, librbd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return wrap(err, "open image", strconv.Quote(image))
	}
	defer img.Close()
	if _, err := readSpec(img); errors.Is(err, volume.ErrNotFound) {
		return nil
	} else if err != nil {
		return err
	}
	snap := img.GetSnapshot(name)
	protected, err := snap.IsProtected()
	if errors.Is(err, librbd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return wrap(err, "delete snapshot", strconv.Quote(snapshotID))
	}
	if protected {
		clones, err := p.clones(image, name)
		if err != nil {
			return err
		}
		if len(clones) > 0 {
			return fmt.Errorf("%w: delete snapshot %q: volumes were created from it (%s); delete them first",
				volume.ErrInUse, snapshotID, strings.Join(clones, ", "))
		}
		if err := snap.Unprotect(); err != nil {
			return wrap(err, "unprotect snapshot", strconv.Quote(snapshotID))
		}
	}
	if err := snap.Remove(); err != nil && !errors.Is(err, librbd.ErrNotFound) {
		return wrap(err, "delete snapshot", strconv.Quote(snapshotID))
	}
	p.log.InfoContext(ctx, "deleted snapshot", "snapshot", snapshotID)
	return nil
}

// clones returns the images cloned from a snapshot.
func (p *Provider) clones(image, snap string) ([]string, error) {
	img, err := librbd.OpenImageReadOnly(p.ioctx, image, snap)
	if err != nil {
		return nil, wrap(err, "open snapshot", strconv.Quote(snapshotID(image, snap)))
	}
	defer img.Close()
	_, names, err := img.ListChildren()
	if err != nil {
		return nil, wrap(err, "list clones of snapshot", strconv.Quote(snapshotID(image, snap)))
	}
	return names, nil
}

// ListSnapshots lists the snapshots of a volume, or of every volume when
// volumeID is empty, sorted by ID.
func (p *Provider) ListSnapshots(ctx context.Context, volumeID string) ([]volume.Snapshot, error) {
	if volumeID != "" {
		if err := checkName("volume", volumeID); err != nil {
			return nil, err
		}
	}
	return p.snapshots(ctx, volumeID)
}

func (p *Provider) snapshots(ctx context.Context, volumeID string) ([]volume.Snapshot, error) {
	names := []string{volumeID}
	if volumeID == "" {
		var err error
		if names, err = p.volumeNames(ctx); err != nil {
			return nil, err
		}
	}
	out := []volume.Snapshot{}
	for _, n := range names {
		s, err := p.imageSnapshots(n)
		if errors.Is(err, volume.ErrNotFound) && volumeID == "" {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s...)
	}
	return out, nil
}

// imageSnapshots returns the snapshots of one volume.
func (p *Provider) imageSnapshots(id string) ([]volume.Snapshot, error) {
	img, err := librbd.OpenImageReadOnly(p.ioctx, id, librbd.NoSnapshot)
	if errors.Is(err, librbd.ErrNotFound) {
		return nil, fmt.Errorf("%w: volume %q", volume.ErrNotFound, id)
	}
	if err != nil {
		return nil, wrap(err, "open image", strconv.Quote(id))
	}
	defer img.Close()
	if _, err := readSpec(img); err != nil {
		return nil, err
	}
	infos, err := img.GetSnapshotNames()
	if err != nil {
		return nil, wrap(err, "list snapshots of", strconv.Quote(id))
	}
	out := make([]volume.Snapshot, 0, len(infos))
	for _, s := range infos {
		if checkName("snapshot", s.Name) != nil {
			continue // the provider's own, as of a copy in progress
		}
		ts, err := img.GetSnapTimestamp(s.Id)
		if err != nil {
			return nil, wrap(err, "read snapshot time of", strconv.Quote(snapshotID(id, s.Name)))
		}
		out = append(out, volume.Snapshot{
			ID:             snapshotID(id, s.Name),
			SourceVolumeID: id,
			CreatedAt:      time.Unix(ts.Sec, ts.Nsec).UTC(),
			SizeBytes:      int64(s.Size),
			ReadyToUse:     true,
		})
	}
	return out, nil
}

// cloneSpec resolves a create request from a snapshot: the clone has the
// snapshot's file system and at least its size.
func (p *Provider) cloneSpec(req volume.CreateRequest) (spec, error) {
	image, snap, err := parseSnapshotID(req.Source.SnapshotID)
	if err != nil {
		return spec{}, err
	}
	if err := volume.CheckParameters(req.Parameters, keyFS); err != nil {
		return spec{}, err
	}
	parent, err := p.describe(image)
	if err != nil {
		return spec{}, fmt.Errorf("source snapshot %q: %w", req.Source.SnapshotID, err)
	}
	if fs, ok := req.Parameters[keyFS]; ok && fs != parent.spec.FS {
		return spec{}, fmt.Errorf("%w: fs=%s does not match the snapshot's file system %s", volume.ErrInvalid, fs, parent.spec.FS)
	}
	var size int64 = -1
	snaps, err := p.imageSnapshots(image)
	if err != nil {
		return spec{}, err
	}
	for _, s := range snaps {
		if s.ID == snapshotID(image, snap) {
			size = s.SizeBytes
		}
	}
	if size < 0 {
		return spec{}, fmt.Errorf("%w: snapshot %q", volume.ErrNotFound, req.Source.SnapshotID)
	}
	want := req.CapacityBytes
	switch {
	case want == 0:
		want = size
	case want < size:
		return spec{}, fmt.Errorf("%w: size %s is below the snapshot's %s", volume.ErrInvalid, volume.FormatSize(want), volume.FormatSize(size))
	}
	c, err := checkSize(want, parent.spec.FS)
	if err != nil {
		return spec{}, err
	}
	return spec{FS: parent.spec.FS, CapacityBytes: c, Source: req.Source.SnapshotID}, nil
}

// cloneImage clones the snapshot source (IMAGE@SNAP) as image name,
// protecting the snapshot first, as clones of the v1 format need.
func (p *Provider) cloneImage(source, name string) error {
	image, snap, err := parseSnapshotID(source)
	if err != nil {
		return err
	}
	parent, err := librbd.OpenImage(p.ioctx, image, librbd.NoSnapshot)
	if err != nil {
		return wrap(err, "open image", strconv.Quote(image))
	}
	defer parent.Close()
	s := parent.GetSnapshot(snap)
	protected, err := s.IsProtected()
	if err != nil {
		return wrap(err, "read snapshot", strconv.Quote(source))
	}
	if !protected {
		if err := s.Protect(); err != nil && errnoOf(err) != syscall.EBUSY { // EBUSY: protected meanwhile
			return wrap(err, "protect snapshot", strconv.Quote(source))
		}
	}
	opts := librbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := opts.SetUint64(librbd.ImageOptionFeatures, imageFeatures); err != nil {
		return wrap(err, "set image features for", strconv.Quote(name))
	}
	if err := librbd.CloneImage(p.ioctx, image, snap, p.ioctx, name, opts); err != nil {
		return wrap(err, "clone snapshot", strconv.Quote(source))
	}
	return nil
}

// copySpec resolves a create request copying a volume: the copy has the
// volume's file system and at least its size.
func (p *Provider) copySpec(req volume.CreateRequest) (spec, error) {
	src := req.Source.VolumeID
	if err := checkName("volume", src); err != nil {
		return spec{}, fmt.Errorf("%w: source volume %q", volume.ErrNotFound, src)
	}
	if err := volume.CheckParameters(req.Parameters, keyFS); err != nil {
		return spec{}, err
	}
	have, err := p.describe(src)
	if err != nil {
		return spec{}, fmt.Errorf("source volume %q: %w", src, err)
	}
	if fs, ok := req.Parameters[keyFS]; ok && fs != have.spec.FS {
		return spec{}, fmt.Errorf("%w: fs=%s does not match the source volume's file system %s", volume.ErrInvalid, fs, have.spec.FS)
	}
	want := req.CapacityBytes
	switch {
	case want == 0:
		want = have.size
	case want < have.size:
		return spec{}, fmt.Errorf("%w: size %s is below the source volume's %s", volume.ErrInvalid, volume.FormatSize(want), volume.FormatSize(have.size))
	}
	c, err := checkSize(want, have.spec.FS)
	if err != nil {
		return spec{}, err
	}
	return spec{FS: have.spec.FS, CapacityBytes: c, SourceVolume: src}, nil
}

// copyImage copies the data of volume src into a new image name: through
// a snapshot of its own, taken with the file system frozen when src is
// staged read-write here, so that the copy is consistent, and removed
// afterwards. The copy is independent of src.
func (p *Provider) copyImage(ctx context.Context, src, name string) error {
	unlock, err := p.locks.Lock(ctx, src)
	if err != nil {
		return err
	}
	defer unlock()
	img, err := librbd.OpenImage(p.ioctx, src, librbd.NoSnapshot)
	if errors.Is(err, librbd.ErrNotFound) {
		return fmt.Errorf("%w: source volume %q", volume.ErrNotFound, src)
	}
	if err != nil {
		return wrap(err, "open image", strconv.Quote(src))
	}
	defer img.Close()
	// A name no snapshot of a user has (they start with a letter or
	// digit), unique per copy.
	snapName := ".copy-" + name
	snap := img.GetSnapshot(snapName)
	if err := snap.Remove(); err != nil && !errors.Is(err, librbd.ErrNotFound) { // left by an interrupted copy
		return wrap(err, "remove stale snapshot", strconv.Quote(snapshotID(src, snapName)))
	}
	if err := p.takeSnapshot(ctx, src, img, snapName); err != nil {
		return err
	}
	defer func() {
		if err := snap.Remove(); err != nil {
			p.log.WarnContext(ctx, "remove the snapshot of a copy", "volume", src, "snapshot", snapName, "error", err)
		}
	}()
	at, err := librbd.OpenImageReadOnly(p.ioctx, src, snapName)
	if err != nil {
		return wrap(err, "open snapshot", strconv.Quote(snapshotID(src, snapName)))
	}
	defer at.Close()
	if err := at.Copy(p.ioctx, name); err != nil {
		return wrap(err, "copy volume", strconv.Quote(src))
	}
	return nil
}

// takeSnapshot takes snapshot name of the open image of volume id, with
// the file system frozen when the volume is staged read-write here.
func (p *Provider) takeSnapshot(ctx context.Context, id string, img *librbd.Image, name string) error {
	if st := p.stagedAt(id); st != nil && !st.readOnly {
		thaw, err := freeze(st.path)
		if err != nil {
			return wrap(err, "snapshot volume", strconv.Quote(id))
		}
		defer func() {
			if err := thaw(); err != nil {
				p.log.ErrorContext(ctx, "thaw file system", "volume", id, "error", err)
			}
		}()
		// The frozen file system has written everything, and the FUSE
		// file passes writes on to librbd unbuffered. The file's flush
		// fails when a write or flush before it did: no snapshot is taken
		// of a volume whose writes may be lost.
		if err := st.file.flush(); err != nil {
			return wrap(err, "flush image", strconv.Quote(id))
		}
	}
	if _, err := img.CreateSnapshot(name); err != nil {
		return wrap(err, "snapshot volume", strconv.Quote(id))
	}
	return nil
}
