package volumetest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/stowage/stowage/plugins/volume"
)

// Fake is an in-memory provider for tests of code that consumes the
// contract. Its volumes are directories under a root; Publish links the
// target path to the volume's directory, so data written through one target
// is seen through the next. It needs no privileges.
//
// Fake also lets a test make the provider slow or broken: Hang blocks every
// call until its context is done, Fail makes every call return the error.
//
// Fake has every optional ability of the contract: it lists volumes, takes
// snapshots (kept in memory), creates volumes from a snapshot or another
// volume (copying the data), expands volumes and keeps a write lock per
// volume that SetLockHolder gives to another host. Basic returns the same
// provider without these abilities.
type Fake struct {
	root string

	mu      sync.Mutex // guards the fields below
	vols    map[string]*fakeVol
	snaps   map[string]*fakeSnap
	hang    bool
	fail    error
	calls   map[string]int
	stageOn bool
	now     func() time.Time
	expands []volume.ExpandRequest
	noClone bool
}

type fakeVol struct {
	req       volume.CreateRequest
	id        string
	capacity  int64  // CapacityBytes until an Expand
	holder    string // the host holding the write lock; "" for this one
	staged    map[string]bool
	published map[string]bool
}

var (
	_ volume.Provider    = (*Fake)(nil)
	_ volume.Lister      = (*Fake)(nil)
	_ volume.Snapshotter = (*Fake)(nil)
	_ volume.Expander    = (*Fake)(nil)
	_ volume.Unlocker    = (*Fake)(nil)
)

// NewFake returns a fake provider keeping its volumes under root. With
// stage set it asks for Stage and Unstage like a block-device provider.
func NewFake(root string, stage bool) *Fake {
	return &Fake{root: root, vols: map[string]*fakeVol{}, snaps: map[string]*fakeSnap{}, calls: map[string]int{}, stageOn: stage, now: time.Now}
}

// Hang makes every later call block until its context is done (on) or
// restores normal behaviour (off).
func (f *Fake) Hang(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hang = on
}

// Fail makes every later call return err; nil restores normal behaviour.
func (f *Fake) Fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = err
}

// Calls returns how often the named method was called.
func (f *Fake) Calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[method]
}

func (f *Fake) enter(ctx context.Context, method string) error {
	f.mu.Lock()
	f.calls[method]++
	hang, fail := f.hang, f.fail
	f.mu.Unlock()
	if hang {
		<-ctx.Done()
		return fmt.Errorf("%w: %s: %w", volume.ErrUnavailable, method, ctx.Err())
	}
	if fail != nil {
		return fmt.Errorf("%s: %w", method, fail)
	}
	return ctx.Err()
}

// Info implements volume.Provider.
func (f *Fake) Info(ctx context.Context) (volume.Info, error) {
	if err := f.enter(ctx, "Info"); err != nil {
		return volume.Info{}, err
	}
	return volume.Info{Name: "stowage.fake", Version: "0"}, nil
}

// Capabilities implements volume.Provider.
func (f *Fake) Capabilities(ctx context.Context) (volume.Capabilities, error) {
	if err := f.enter(ctx, "Capabilities"); err != nil {
		return volume.Capabilities{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return volume.Capabilities{Stage: f.stageOn, Stats: true, Clone: !f.noClone}, nil
}

// Probe implements volume.Provider.
func (f *Fake) Probe(ctx context.Context) error {
	return f.enter(ctx, "Probe")
}

// Create implements volume.Provider. It accepts the parameter "label".
func (f *Fake) Create(ctx context.Context, req volume.CreateRequest) (volume.Volume, error) {
	if err := f.enter(ctx, "Create"); err != nil {
		return volume.Volume{}, err
	}
	if req.Name == "" || req.Name == "." || req.Name == ".." || strings.ContainsRune(req.Name, '/') {
		return volume.Volume{}, fmt.Errorf("%w: name %q is not a file name", volume.ErrInvalid, req.Name)
	}
	if err := volume.CheckParameters(req.Parameters, "label"); err != nil {
		return volume.Volume{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	id := req.Name // a file name, as long as volume names may be
	if v, ok := f.vols[id]; ok {
		if v.req.CapacityBytes != req.CapacityBytes || !maps.Equal(v.req.Parameters, req.Parameters) || !sameSource(v.req.Source, req.Source) {
			return volume.Volume{}, fmt.Errorf("volume %q: %w with other options", req.Name, volume.ErrExists)
		}
		return f.volume(v), nil
	}
	content, err := f.sourceContent(req)
	if err != nil {
		return volume.Volume{}, err
	}
	dir := filepath.Join(f.root, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return volume.Volume{}, err
	}
	if err := content.write(dir); err != nil {
		return volume.Volume{}, errors.Join(err, os.RemoveAll(dir))
	}
	v := &fakeVol{req: req, id: id, capacity: req.CapacityBytes, staged: map[string]bool{}, published: map[string]bool{}}
	f.vols[id] = v
	return f.volume(v), nil
}

func (f *Fake) volume(v *fakeVol) volume.Volume {
	return volume.Volume{ID: v.id, CapacityBytes: v.capacity, Context: map[string]string{"name": v.req.Name}}
}

// Delete implements volume.Provider.
func (f *Fake) Delete(ctx context.Context, id string) error {
	if err := f.enter(ctx, "Delete"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[id]
	if !ok {
		return nil
	}
	if len(v.staged)+len(v.published) > 0 {
		return fmt.Errorf("volume %s: %w", id, volume.ErrInUse)
	}
	delete(f.vols, id)
	return os.RemoveAll(filepath.Join(f.root, id))
}

// Stage implements volume.Provider.
func (f *Fake) Stage(ctx context.Context, req volume.StageRequest) error {
	if err := f.enter(ctx, "Stage"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[req.VolumeID]
	if !ok {
		return fmt.Errorf("volume %s: %w", req.VolumeID, volume.ErrNotFound)
	}
	if err := v.checkLock(req.Access, false); err != nil {
		return err
	}
	v.staged[req.StagingPath] = true
	return nil
}

// Unstage implements volume.Provider.
func (f *Fake) Unstage(ctx context.Context, id, stagingPath string) error {
	if err := f.enter(ctx, "Unstage"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if v, ok := f.vols[id]; ok {
		delete(v.staged, stagingPath)
	}
	return nil
}

// Publish implements volume.Provider: the target becomes a symbolic link to
// the volume's directory.
func (f *Fake) Publish(ctx context.Context, req volume.PublishRequest) error {
	if err := f.enter(ctx, "Publish"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[req.VolumeID]
	if !ok {
		return fmt.Errorf("volume %s: %w", req.VolumeID, volume.ErrNotFound)
	}
	if !f.stageOn {
		if err := v.checkLock(req.Access, req.ReadOnly); err != nil {
			return err
		}
	}
	if f.stageOn && !v.staged[req.StagingPath] {
		return fmt.Errorf("%w: volume %s is not staged at %q", volume.ErrInvalid, req.VolumeID, req.StagingPath)
	}
	if v.published[req.TargetPath] {
		return nil
	}
	_ = os.Remove(req.TargetPath) // an empty directory the orchestrator made
	if err := os.Symlink(filepath.Join(f.root, v.id), req.TargetPath); err != nil {
		return err
	}
	v.published[req.TargetPath] = true
	return nil
}

// Unpublish implements volume.Provider.
func (f *Fake) Unpublish(ctx context.Context, id, targetPath string) error {
	if err := f.enter(ctx, "Unpublish"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[id]
	if !ok || !v.published[targetPath] {
		return nil
	}
	delete(v.published, targetPath)
	if err := os.Remove(targetPath); err != nil && !os.IsNotExist(err) {
		return err
	}
	return nil
}

// Stats implements volume.Provider with made-up but consistent figures.
func (f *Fake) Stats(ctx context.Context, id, path string) (volume.Stats, error) {
	if err := f.enter(ctx, "Stats"); err != nil {
		return volume.Stats{}, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	v, ok := f.vols[id]
	if !ok {
		return volume.Stats{}, fmt.Errorf("volume %s: %w", id, volume.ErrNotFound)
	}
	c := v.capacity
	if c == 0 {
		c = 1 << 30
	}
	return volume.Stats{CapacityBytes: c, AvailableBytes: c - 4096, UsedBytes: 4096, Inodes: 1000, InodesFree: 999, InodesUsed: 1}, nil
}

// List implements volume.Lister.
func (f *Fake) List(ctx context.Context) ([]volume.Volume, error) {
	if err := f.enter(ctx, "List"); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]volume.Volume, 0, len(f.vols))
	for _, v := range f.vols {
		out = append(out, f.volume(v))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
