package volumetest

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"github.com/stowage/stowage/plugins/volume"
)

// fakeSnap is a snapshot of the fake: the volume's files, in memory.
type fakeSnap struct {
	snap    volume.Snapshot
	name    string
	content fakeContent
}

// fakeContent is a copy of a volume's directory tree: directories and
// regular files by slash-separated relative path.
type fakeContent struct {
	dirs  []string
	files map[string][]byte
}

// readContent copies the tree under dir into memory.
func readContent(dir string) (fakeContent, error) {
	c := fakeContent{files: map[string][]byte{}}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || rel == "." {
			return err
		}
		switch {
		case d.IsDir():
			c.dirs = append(c.dirs, rel)
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			c.files[rel] = b
		}
		return nil
	})
	if err != nil {
		return fakeContent{}, fmt.Errorf("copy volume data: %w", err)
	}
	return c, nil
}

// write recreates the tree under dir.
func (c fakeContent) write(dir string) error {
	for _, d := range c.dirs {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for p, b := range c.files {
		if err := os.WriteFile(filepath.Join(dir, p), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func sameSource(a, b *volume.Source) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// sourceContent returns what a new volume starts with. Called with f.mu
// held.
func (f *Fake) sourceContent(req volume.CreateRequest) (fakeContent, error) {
	src := req.Source
	switch {
	case src == nil:
		return fakeContent{}, nil
	case (src.SnapshotID == "") == (src.VolumeID == ""):
		return fakeContent{}, fmt.Errorf("%w: volume %q: a source names either a snapshot or a volume", volume.ErrInvalid, req.Name)
	case src.SnapshotID != "":
		s, ok := f.snaps[src.SnapshotID]
		if !ok {
			return fakeContent{}, fmt.Errorf("volume %q: source snapshot %s: %w", req.Name, src.SnapshotID, volume.ErrNotFound)
		}
		if req.CapacityBytes > 0 && s.snap.SizeBytes > req.CapacityBytes {
			return fakeContent{}, fmt.Errorf("%w: volume %q: %d bytes are less than the %d of snapshot %s", volume.ErrInvalid, req.Name, req.CapacityBytes, s.snap.SizeBytes, src.SnapshotID)
		}
		return s.content, nil
	}
	if f.noClone {
		return fakeContent{}, fmt.Errorf("%w: volume %q: this provider copies no volumes; use a snapshot", volume.ErrNotSupported, req.Name)
	}
	v, ok := f.vols[src.VolumeID]
	if !ok {
		return fakeContent{}, fmt.Errorf("volume %q: source volume %s: %w", req.Name, src.VolumeID, volume.ErrNotFound)
	}
	if req.CapacityBytes > 0 && v.capacity > req.CapacityBytes {
		return fakeContent{}, fmt.Errorf("%w: volume %q: %d bytes are less than the %d of volume %s", volume.ErrInvalid, req.Name, req.CapacityBytes, v.capacity, src.VolumeID)
	}
	return readContent(filepath.Join(f.root, v.id))
}

// checkLock returns ErrInUse naming the holder when another host holds
// the volume's write lock and the access would write.
func (v *fakeVol) checkLock(m volume.AccessMode, readOnly bool) error {
	if v.holder == "" || readOnly || m == volume.SingleNodeReaderOnly || m == volume.MultiNodeReaderOnly {
		return nil
	}
	return fmt.Errorf("volume %s: %w: locked for writing by %s", v.id, volume.ErrInUse, v.holder)
}

// CopyVolumes says whether the fake copies volumes (Capabilities.Clone, on
// at first); without it, it fills volumes from snapshots only, as rbd does.
func (f *Fake) CopyVolumes(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.noClone = !on
}

// SetLockHolder makes another host, described by holder, hold the write
// lock of the volume, as if it had staged the volume read-write; "" gives
// the lock back. It returns ErrNotFound for an unknown volume.
func (f *Fake) SetLockHolder(volumeID, holder string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[volumeID]
	if !ok {
		return fmt.Errorf("volume %s: %w", volumeID, volume.ErrNotFound)
	}
	v.holder = holder
	return nil
}

// CreateSnapshot implements volume.Snapshotter. The snapshot's ID is its
// name.
func (f *Fake) CreateSnapshot(ctx context.Context, volumeID, name string) (volume.Snapshot, error) {
	if err := f.enter(ctx, "CreateSnapshot"); err != nil {
		return volume.Snapshot{}, err
	}
	if name == "" || volumeID == "" {
		return volume.Snapshot{}, fmt.Errorf("%w: a snapshot needs a name and a volume", volume.ErrInvalid)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if s, ok := f.snaps[name]; ok {
		if s.snap.SourceVolumeID != volumeID {
			return volume.Snapshot{}, fmt.Errorf("snapshot %q: %w of volume %s", name, volume.ErrExists, s.snap.SourceVolumeID)
		}
		return s.snap, nil
	}
	v, ok := f.vols[volumeID]
	if !ok {
		return volume.Snapshot{}, fmt.Errorf("snapshot %q: volume %s: %w", name, volumeID, volume.ErrNotFound)
	}
	content, err := readContent(filepath.Join(f.root, v.id))
	if err != nil {
		return volume.Snapshot{}, err
	}
	s := &fakeSnap{name: name, content: content, snap: volume.Snapshot{
		ID:             name,
		SourceVolumeID: volumeID,
		CreatedAt:      f.now().UTC(),
		SizeBytes:      v.capacity,
		ReadyToUse:     true,
	}}
	f.snaps[name] = s
	return s.snap, nil
}

// DeleteSnapshot implements volume.Snapshotter. Volumes made from a
// snapshot are copies, so a snapshot is never in use.
func (f *Fake) DeleteSnapshot(ctx context.Context, snapshotID string) error {
	if err := f.enter(ctx, "DeleteSnapshot"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.snaps, snapshotID)
	return nil
}

// ListSnapshots implements volume.Snapshotter, ordered by ID.
func (f *Fake) ListSnapshots(ctx context.Context, volumeID string) ([]volume.Snapshot, error) {
	if err := f.enter(ctx, "ListSnapshots"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []volume.Snapshot{}
	for _, s := range f.snaps {
		if volumeID == "" || s.snap.SourceVolumeID == volumeID {
			out = append(out, s.snap)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

// Expand implements volume.Expander: the capacity becomes the one asked
// for, online or not.
func (f *Fake) Expand(ctx context.Context, req volume.ExpandRequest) (int64, error) {
	if err := f.enter(ctx, "Expand"); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[req.VolumeID]
	switch {
	case !ok:
		return 0, fmt.Errorf("volume %s: %w", req.VolumeID, volume.ErrNotFound)
	case req.CapacityBytes <= 0:
		return 0, fmt.Errorf("%w: expand volume %s: the capacity must be positive", volume.ErrInvalid, req.VolumeID)
	case req.CapacityBytes < v.capacity:
		return 0, fmt.Errorf("%w: expand volume %s: %d bytes are less than its %d; volumes never shrink", volume.ErrInvalid, req.VolumeID, req.CapacityBytes, v.capacity)
	}
	v.capacity = req.CapacityBytes
	f.expands = append(f.expands, req)
	return v.capacity, nil
}

// Expands returns the requests of the Expand calls that succeeded, oldest
// first.
func (f *Fake) Expands() []volume.ExpandRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.expands)
}

// Unlock implements volume.Unlocker: it takes the write lock back from the
// host SetLockHolder named and returns that host.
func (f *Fake) Unlock(ctx context.Context, volumeID string) (string, error) {
	if err := f.enter(ctx, "Unlock"); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[volumeID]
	if !ok {
		return "", fmt.Errorf("volume %s: %w", volumeID, volume.ErrNotFound)
	}
	holder := v.holder
	v.holder = ""
	return holder, nil
}

// Basic returns f without its optional abilities: a provider that lists
// its volumes but cannot snapshot, clone, expand or unlock them, and
// refuses a CreateRequest.Source with ErrNotSupported.
func (f *Fake) Basic() volume.Provider {
	return basicFake{Provider: f, Lister: f}
}

type basicFake struct {
	volume.Provider
	volume.Lister
}

func (b basicFake) Capabilities(ctx context.Context) (volume.Capabilities, error) {
	caps, err := b.Provider.Capabilities(ctx)
	caps.Clone = false
	return caps, err
}

func (b basicFake) Create(ctx context.Context, req volume.CreateRequest) (volume.Volume, error) {
	if req.Source != nil {
		return volume.Volume{}, fmt.Errorf("%w: volume %q: this provider cannot create volumes from a source", volume.ErrNotSupported, req.Name)
	}
	return b.Provider.Create(ctx, req)
}
