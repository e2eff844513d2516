package manager

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/store"
)

// Snapshots are kept as store.Snapshot records next to the volumes, keyed
// by volume and snapshot name, and changed under the volume's lock. A
// record is written as creating (or removing) before the provider is
// asked and finished or dropped after, so a failed call leaves nothing
// behind and a volumed that stopped in between finishes the job when the
// same call is made again.

// providerSnapshotName is the name volumed gives the provider for the
// snapshot snap of vol: snap itself, so that the backend shows the name
// the operator chose (rbd snap ls). A provider may keep snapshot names
// unique across its volumes, as CSI does; the same name for a snapshot of
// another volume is then ErrExists, which says so.
func providerSnapshotName(_, snap string) string { return snap }

// validateSnapshotName returns an ErrInvalid error unless name follows the
// rule of volume names.
func validateSnapshotName(name string) error { return checkName("snapshot", name) }

// notSupported says that a provider lacks an ability; cause, when set, is
// the provider's own word (a CSI driver's, for example).
func notSupported(p *provider, what string, cause error) error {
	if cause == nil {
		return fmt.Errorf("%w: provider %s cannot %s", volume.ErrNotSupported, p.name, what)
	}
	return fmt.Errorf("%w: provider %s cannot %s (%v)", volume.ErrNotSupported, p.name, what, cause)
}

// readyVolume returns the provider of a volume that is ready.
func (m *Manager) readyVolume(rec store.Record) (*provider, error) {
	if rec.State != api.StateReady {
		return nil, fmt.Errorf("%w: the volume is %s", volume.ErrUnavailable, rec.State)
	}
	p, ok := m.providers[rec.Provider]
	if !ok {
		return nil, fmt.Errorf("%w: its provider %q is not configured", volume.ErrUnavailable, rec.Provider)
	}
	return p, nil
}

func apiSnapshot(r store.Snapshot) api.Snapshot {
	return api.Snapshot{
		Volume:     r.Volume,
		Name:       r.Name,
		Provider:   r.Provider,
		ID:         r.ID,
		State:      r.State,
		SizeBytes:  r.SizeBytes,
		ReadyToUse: r.ReadyToUse,
		CreatedAt:  r.CreatedAt,
	}
}

// Snapshot takes the snapshot snap of the named volume. Taking a snapshot
// that exists returns it. A provider that takes no snapshots is
// ErrNotSupported; an unknown volume ErrNotFound.
func (m *Manager) Snapshot(ctx context.Context, name, snap string) (api.Snapshot, error) {
	if err := validateSnapshotName(snap); err != nil {
		return api.Snapshot{}, fmt.Errorf("snapshot volume %q: %w", name, err)
	}
	rec, unlock, err := m.lockRecord(ctx, "snapshot volume", name)
	if err != nil {
		return api.Snapshot{}, err
	}
	defer unlock()
	s, err := m.snapshot(ctx, rec, snap)
	if err != nil {
		return api.Snapshot{}, fmt.Errorf("snapshot volume %q: %w", name, err)
	}
	return s, nil
}

func (m *Manager) snapshot(ctx context.Context, rec store.Record, snap string) (api.Snapshot, error) {
	p, err := m.readyVolume(rec)
	if err != nil {
		return api.Snapshot{}, err
	}
	sp, ok := p.p.(volume.Snapshotter)
	if !ok {
		return api.Snapshot{}, notSupported(p, "take snapshots", nil)
	}
	r, exists, err := m.store.Snapshot(rec.Name, snap)
	if err != nil {
		return api.Snapshot{}, err
	}
	switch {
	case exists && r.State == api.StateReady:
		return apiSnapshot(r), nil
	case exists && r.State == api.StateRemoving:
		return api.Snapshot{}, fmt.Errorf("snapshot %s@%s: %w: it is being removed; remove it again first", rec.Name, snap, volume.ErrExists)
	case !exists:
		r = store.Snapshot{Volume: rec.Name, Name: snap, Provider: p.name, State: api.StateCreating, CreatedAt: time.Now().UTC()}
		if err := m.store.PutSnapshot(r); err != nil {
			return api.Snapshot{}, err
		}
	}
	var s volume.Snapshot
	err = waitRunning(ctx, p)
	if err == nil {
		err = call(ctx, p, "create snapshot", func(ctx context.Context) error {
			var err error
			s, err = sp.CreateSnapshot(ctx, rec.ID, providerSnapshotName(rec.Name, snap))
			return err
		})
	}
	if err != nil {
		if derr := m.store.DeleteSnapshot(rec.Name, snap); derr != nil {
			err = errors.Join(err, derr)
		}
		if errors.Is(err, volume.ErrNotSupported) {
			return api.Snapshot{}, notSupported(p, "take snapshots", err)
		}
		return api.Snapshot{}, err
	}
	r.ID, r.SizeBytes, r.ReadyToUse, r.State = s.ID, s.SizeBytes, s.ReadyToUse, api.StateReady
	if !s.CreatedAt.IsZero() {
		r.CreatedAt = s.CreatedAt.UTC()
	}
	if err := m.store.PutSnapshot(r); err != nil {
		return api.Snapshot{}, err
	}
	m.log.Info("snapshot taken", "volume", rec.Name, "snapshot", snap, "provider", p.name, "id", s.ID)
	return apiSnapshot(r), nil
}

// Snapshots returns the snapshots of the named volume, or of every volume
// when name is empty, ordered by volume and name, from local state.
func (m *Manager) Snapshots(ctx context.Context, name string) ([]api.Snapshot, error) {
	if name != "" {
		if _, err := m.Get(ctx, name); err != nil {
			return nil, err
		}
	}
	recs, err := m.store.Snapshots(name)
	if err != nil {
		return nil, err
	}
	out := make([]api.Snapshot, 0, len(recs))
	for _, r := range recs {
		out = append(out, apiSnapshot(r))
	}
	return out, nil
}

// RemoveSnapshot deletes the snapshot snap of the named volume. An unknown
// snapshot is ErrNotFound; one that volumes still depend on, as the
// provider says, ErrInUse.
func (m *Manager) RemoveSnapshot(ctx context.Context, name, snap string) error {
	if err := validateSnapshotName(snap); err != nil {
		return fmt.Errorf("remove snapshot %s@%s: %w", name, snap, err)
	}
	rec, unlock, err := m.lockRecord(ctx, "remove snapshot of volume", name)
	if err != nil {
		return err
	}
	defer unlock()
	if err := m.removeSnapshot(ctx, rec, snap); err != nil {
		return fmt.Errorf("remove snapshot %s@%s: %w", name, snap, err)
	}
	return nil
}

func (m *Manager) removeSnapshot(ctx context.Context, rec store.Record, snap string) error {
	r, exists, err := m.store.Snapshot(rec.Name, snap)
	if err != nil {
		return err
	}
	if !exists {
		return fmt.Errorf("%w: volume %q has no snapshot %q", volume.ErrNotFound, rec.Name, snap)
	}
	p, ok := m.providers[r.Provider]
	if !ok {
		return fmt.Errorf("%w: its provider %q is not configured", volume.ErrUnavailable, r.Provider)
	}
	sp, ok := p.p.(volume.Snapshotter)
	if !ok {
		return notSupported(p, "delete snapshots", nil)
	}
	if err := waitRunning(ctx, p); err != nil {
		return err
	}
	if r.ID == "" {
		// volumed stopped while the provider took it: take it again,
		// which the provider does at most once, to learn its ID.
		err := call(ctx, p, "create snapshot", func(ctx context.Context) error {
			s, err := sp.CreateSnapshot(ctx, rec.ID, providerSnapshotName(rec.Name, snap))
			r.ID = s.ID
			return err
		})
		if err != nil {
			return err
		}
	}
	prev := r.State
	r.State = api.StateRemoving
	if err := m.store.PutSnapshot(r); err != nil {
		return err
	}
	err = call(ctx, p, "delete snapshot", func(ctx context.Context) error { return sp.DeleteSnapshot(ctx, r.ID) })
	if err != nil {
		r.State = prev
		if serr := m.store.PutSnapshot(r); serr != nil {
			err = errors.Join(err, serr)
		}
		return err
	}
	if err := m.store.DeleteSnapshot(rec.Name, snap); err != nil {
		return err
	}
	m.log.Info("snapshot removed", "volume", rec.Name, "snapshot", snap, "provider", p.name)
	return nil
}

// checkNoSnapshots returns ErrInUse listing the volume's snapshots, if it
// has any: removing a volume never removes snapshots by surprise.
func (m *Manager) checkNoSnapshots(name string) error {
	snaps, err := m.store.Snapshots(name)
	if err != nil || len(snaps) == 0 {
		return err
	}
	names := make([]string, len(snaps))
	for i, s := range snaps {
		names[i] = name + "@" + s.Name
	}
	return fmt.Errorf("%w: the volume has %d %s (%s); remove %s first (stow volume snapshot rm), or remove the volume with %s (stow volume rm --snapshots %s)",
		volume.ErrInUse, len(snaps), plural(len(snaps), "snapshot", "snapshots"), strings.Join(names, ", "),
		plural(len(snaps), "it", "them"), plural(len(snaps), "it", "them"), name)
}

// RemoveWithSnapshots removes the named volume after its snapshots. It
// checks first that the volume is not mounted, so that it removes nothing
// when the volume cannot go; a snapshot that cannot be removed (volumes
// depend on it) stops it with the volume and the remaining snapshots kept.
func (m *Manager) RemoveWithSnapshots(ctx context.Context, name string) error {
	rec, unlock, err := m.lockRecord(ctx, "remove volume", name)
	if err != nil {
		return err
	}
	if n := rec.MountCount(); n > 0 {
		unlock()
		return fmt.Errorf("remove volume %q: %w by %d %s", name, volume.ErrInUse, n, plural(n, "mount", "mounts"))
	}
	snaps, err := m.store.Snapshots(name)
	for _, s := range snaps {
		if err != nil {
			break
		}
		if err = m.removeSnapshot(ctx, rec, s.Name); err != nil {
			err = fmt.Errorf("remove snapshot %s@%s: %w", name, s.Name, err)
		}
	}
	unlock()
	if err != nil {
		return fmt.Errorf("remove volume %q: %w", name, err)
	}
	return m.Remove(ctx, name)
}

// parseFrom splits the option from=VOLUME[@SNAPSHOT].
func parseFrom(from string) (vol, snap string, err error) {
	vol, snap, hasSnap := strings.Cut(from, "@")
	if err := ValidateName(vol); err != nil {
		return "", "", fmt.Errorf("option from=%q: %w (use from=VOLUME or from=VOLUME@SNAPSHOT)", from, err)
	}
	if hasSnap {
		if err := validateSnapshotName(snap); err != nil {
			return "", "", fmt.Errorf("option from=%q: %w (use from=VOLUME or from=VOLUME@SNAPSHOT)", from, err)
		}
	}
	return vol, snap, nil
}

// fromProvider returns the provider of the volume that the option from
// names, or "" when there is none.
func (m *Manager) fromProvider(from string) string {
	if from == "" {
		return ""
	}
	vol, _, err := parseFrom(from)
	if err != nil {
		return ""
	}
	rec, ok := m.record(vol)
	if !ok {
		return ""
	}
	return rec.Provider
}

// fillSource sets the source of req from the option from, when given: the
// snapshot VOLUME@SNAPSHOT or the volume VOLUME, which must be ready and
// of the same provider p. Without a size the new volume gets the source's;
// without parameters of its own, the source volume's.
func (m *Manager) fillSource(ctx context.Context, name string, p *provider, from string, req *volume.CreateRequest) error {
	if from == "" {
		return nil
	}
	vol, snap, err := parseFrom(from)
	if err != nil {
		return err
	}
	if rec, ok := m.record(name); ok && rec.State == api.StateReady {
		// Create answers from the record, even once the source is gone.
		return nil
	}
	if vol == name {
		return fmt.Errorf("%w: option from=%q: a volume cannot be made from itself", volume.ErrInvalid, from)
	}
	src, ok := m.record(vol)
	if !ok {
		return fmt.Errorf("option from=%q: volume %q: %w", from, vol, volume.ErrNotFound)
	}
	if src.Provider != p.name {
		return fmt.Errorf("%w: option from=%q: volume %q is on provider %s, and a copy is made by the same provider (drop the provider option or use provider=%s)",
			volume.ErrInvalid, from, vol, src.Provider, src.Provider)
	}
	if _, ok := p.p.(volume.Snapshotter); !ok {
		return notSupported(p, "create volumes from snapshots or copies of volumes", nil)
	}
	if src.State != api.StateReady {
		return fmt.Errorf("%w: option from=%q: volume %q is %s", volume.ErrUnavailable, from, vol, src.State)
	}
	size := src.CapacityBytes
	if snap == "" {
		caps, err := p.capabilities(ctx)
		if err != nil {
			return err
		}
		if !caps.Clone {
			return notSupported(p, fmt.Sprintf("copy volumes: take a snapshot and create the volume from it (from=%s@SNAPSHOT)", vol), nil)
		}
		req.Source = &volume.Source{VolumeID: src.ID}
	} else {
		r, exists, err := m.store.Snapshot(vol, snap)
		if err != nil {
			return err
		}
		if !exists {
			return fmt.Errorf("option from=%q: volume %q has no snapshot %q: %w", from, vol, snap, volume.ErrNotFound)
		}
		if r.State != api.StateReady || r.ID == "" {
			return fmt.Errorf("%w: option from=%q: the snapshot is %s", volume.ErrUnavailable, from, r.State)
		}
		req.Source = &volume.Source{SnapshotID: r.ID}
		if r.SizeBytes > 0 {
			size = r.SizeBytes
		}
	}
	if req.CapacityBytes == 0 {
		req.CapacityBytes = size
	}
	if len(req.Parameters) == 0 {
		params := maps.Clone(src.Options)
		for _, k := range []string{OptProvider, OptSize, OptFrom} {
			delete(params, k)
		}
		req.Parameters = params
	}
	return nil
}
