// Package manager is the core of volumed: it keeps the volume records,
// counts mounts per volume and mount ID, drives the providers through the
// contract's lifecycle and reconciles its records with the host at start.
//
// Records live in memory and are written through to the store before a call
// returns, so a restarted volumed knows what is mounted. Slow work on one
// volume holds that volume's lock (a keyed lock that honours ctx); the map of
// records has its own short mutex that is never held across I/O.
package manager

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/stowage/stowage/internal/keylock"

	"github.com/moby/sys/mountinfo"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/store"
)

// Common volume options that volumed itself reads; every other option goes
// to the provider as a parameter.
const (
	OptProvider = "provider"
	OptSize     = "size"
	// OptFrom makes a volume a copy of VOLUME or of the snapshot
	// VOLUME@SNAPSHOT (see snapshot.go).
	OptFrom = "from"
)

// Options configure a Manager.
type Options struct {
	// Root is the directory under which volumes are staged
	// (Root/staging/NAME) and mounted for consumers (Root/mounts/NAME).
	Root string
	// Store keeps the records. The Manager does not close it.
	Store *store.Store
	// Providers by name; DefaultProvider serves volumes created without
	// the provider option.
	Providers       map[string]volume.Provider
	DefaultProvider string
	// Kinds says where each provider runs, as shown in api.Provider.Kind:
	// "builtin" (the default), "csi" (an existing CSI endpoint), "sidecar".
	Kinds map[string]string
	// Status, by provider name, reports the providers that something
	// else runs and restarts (sidecars); Providers shows their state and
	// Create and Mount wait while they restart. Optional.
	Status map[string]ProviderStatus
	Logger *slog.Logger
	// IsMounted reports whether path is a mount point; nil means
	// mountinfo.Mounted. Reconcile uses it.
	IsMounted func(path string) (bool, error)
	// ProbeInterval is how often Run probes the providers; 0 means 15 s.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe; 0 means 5 s.
	ProbeTimeout time.Duration
}

// Manager manages the volumes of one host.
type Manager struct {
	root            string
	store           *store.Store
	log             *slog.Logger
	defaultProvider string
	isMounted       func(string) (bool, error)
	probeInterval   time.Duration
	probeTimeout    time.Duration
	providers       map[string]*provider // fixed after New

	locks keylock.Map // one lock per volume name, held across provider calls

	mu   sync.Mutex // guards vols
	vols map[string]*store.Record
}

// provider is a provider and what volumed learnt of it.
type provider struct {
	name   string
	kind   string
	p      volume.Provider
	status ProviderStatus // nil unless volumed runs the provider

	mu        sync.Mutex // guards the fields below
	caps      volume.Capabilities
	capsKnown bool
	info      volume.Info
	up        bool
	lastErr   string
	checked   time.Time
}

// New returns a Manager with the records of opts.Store loaded. Call
// Reconcile before serving requests and Run to supervise providers.
func New(opts Options) (*Manager, error) {
	if opts.Root == "" || opts.Store == nil || len(opts.Providers) == 0 {
		return nil, errors.New("manager needs a root, a store and at least one provider")
	}
	if _, ok := opts.Providers[opts.DefaultProvider]; !ok {
		return nil, fmt.Errorf("default provider %q is not configured", opts.DefaultProvider)
	}
	m := &Manager{
		root:            opts.Root,
		store:           opts.Store,
		log:             opts.Logger,
		defaultProvider: opts.DefaultProvider,
		isMounted:       opts.IsMounted,
		probeInterval:   opts.ProbeInterval,
		probeTimeout:    opts.ProbeTimeout,
		providers:       map[string]*provider{},
		vols:            map[string]*store.Record{},
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.isMounted == nil {
		m.isMounted = mountinfo.Mounted
	}
	if m.probeInterval <= 0 {
		m.probeInterval = 15 * time.Second
	}
	if m.probeTimeout <= 0 {
		m.probeTimeout = 5 * time.Second
	}
	for name, p := range opts.Providers {
		kind := opts.Kinds[name]
		if kind == "" {
			kind = "builtin"
		}
		m.providers[name] = &provider{name: name, kind: kind, p: p, status: opts.Status[name]}
	}
	for _, dir := range []string{m.root, m.mountsDir(), m.stagingDir()} {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
	}
	recs, err := m.store.List()
	if err != nil {
		return nil, err
	}
	for i := range recs {
		r := recs[i]
		m.vols[r.Name] = &r
	}
	return m, nil
}

func (m *Manager) mountsDir() string  { return filepath.Join(m.root, "mounts") }
func (m *Manager) stagingDir() string { return filepath.Join(m.root, "staging") }

// Mountpoint returns where the named volume is mounted for consumers.
func (m *Manager) Mountpoint(name string) string { return filepath.Join(m.mountsDir(), name) }

func (m *Manager) stagingPath(name string) string { return filepath.Join(m.stagingDir(), name) }

// record returns a copy of the named record.
func (m *Manager) record(name string) (store.Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	r, ok := m.vols[name]
	if !ok {
		return store.Record{}, false
	}
	return copyRecord(r), true
}

// save writes r through to the store, then to memory.
func (m *Manager) save(r store.Record) error {
	if err := m.store.Put(r); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	c := copyRecord(&r)
	m.vols[r.Name] = &c
	return nil
}

func (m *Manager) forget(name string) error {
	if err := m.store.Delete(name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.vols, name)
	return nil
}

func copyRecord(r *store.Record) store.Record {
	c := *r
	c.Options = maps.Clone(r.Options)
	c.Context = maps.Clone(r.Context)
	c.Mounts = maps.Clone(r.Mounts)
	return c
}

// lockRecord validates name, takes the volume's lock and returns a copy of
// its record; op names the operation in errors ("mount volume"). An unknown
// volume is ErrNotFound. On success the caller calls unlock.
func (m *Manager) lockRecord(ctx context.Context, op, name string) (rec store.Record, unlock func(), err error) {
	if err := ValidateName(name); err != nil {
		return rec, nil, err
	}
	if unlock, err = m.lock(ctx, name); err != nil {
		return rec, nil, err
	}
	rec, ok := m.record(name)
	if !ok {
		unlock()
		return rec, nil, fmt.Errorf("%s %q: %w", op, name, volume.ErrNotFound)
	}
	return rec, unlock, nil
}

// lock takes the volume's lock, turning a timeout into a clear error.
func (m *Manager) lock(ctx context.Context, name string) (func(), error) {
	unlock, err := m.locks.Lock(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("%w: volume %q is busy with another operation: %w", volume.ErrUnavailable, name, err)
	}
	return unlock, nil
}

// call runs one provider operation and turns a missed deadline into an
// error that names the provider and the time it had. A provider that is
// unavailable has its supervisor, if any, check it at once.
func call(ctx context.Context, p *provider, op string, f func(context.Context) error) error {
	start := time.Now()
	err := f(ctx)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(ctx.Err(), context.DeadlineExceeded)) {
		err = fmt.Errorf("%w: provider %q did not finish %s within %s: %w",
			volume.ErrUnavailable, p.name, op, time.Since(start).Round(time.Millisecond), context.DeadlineExceeded)
	} else {
		err = fmt.Errorf("provider %q: %s: %w", p.name, op, err)
	}
	if errors.Is(err, volume.ErrUnavailable) {
		p.checkNow()
	}
	return err
}

// capabilities returns the provider's capabilities, asking it once.
func (p *provider) capabilities(ctx context.Context) (volume.Capabilities, error) {
	p.mu.Lock()
	if p.capsKnown {
		defer p.mu.Unlock()
		return p.caps, nil
	}
	p.mu.Unlock()
	var caps volume.Capabilities
	err := call(ctx, p, "capabilities", func(ctx context.Context) error {
		var err error
		caps, err = p.p.Capabilities(ctx)
		return err
	})
	if err != nil {
		return caps, err
	}
	p.mu.Lock()
	p.caps, p.capsKnown = caps, true
	p.mu.Unlock()
	return caps, nil
}

// providerNames lists the configured providers, sorted.
func (m *Manager) providerNames() []string {
	return slices.Sorted(maps.Keys(m.providers))
}

// parseOptions splits Docker options into the provider, capacity and the
// provider's parameters.
func (m *Manager) parseOptions(opts map[string]string) (*provider, int64, map[string]string, error) {
	pname := m.defaultProvider
	if v, ok := opts[OptProvider]; ok {
		pname = v
	} else if v := m.fromProvider(opts[OptFrom]); v != "" {
		pname = v
	}
	p, ok := m.providers[pname]
	if !ok {
		return nil, 0, nil, fmt.Errorf("%w: unknown provider %q (configured providers: %s)",
			volume.ErrInvalid, pname, joinNames(m.providerNames()))
	}
	var capacity int64
	if v, ok := opts[OptSize]; ok {
		n, err := volume.ParseSize(v)
		if err != nil {
			return nil, 0, nil, err
		}
		capacity = n
	}
	params := map[string]string{}
	for k, v := range opts {
		if k != OptProvider && k != OptSize && k != OptFrom {
			params[k] = v
		}
	}
	return p, capacity, params, nil
}

func joinNames(names []string) string {
	s := ""
	for i, n := range names {
		if i > 0 {
			s += ", "
		}
		s += n
	}
	return s
}

// Create creates the named volume. Creating a volume that exists with the
// same options succeeds and changes nothing; with other options it returns
// ErrExists. A failed Create leaves no record behind.
func (m *Manager) Create(ctx context.Context, name string, opts map[string]string) (api.Volume, error) {
	if err := ValidateName(name); err != nil {
		return api.Volume{}, err
	}
	p, capacity, params, err := m.parseOptions(opts)
	if err != nil {
		return api.Volume{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	req := volume.CreateRequest{Name: name, CapacityBytes: capacity, Parameters: params}
	if err := m.fillSource(ctx, name, p, opts[OptFrom], &req); err != nil {
		return api.Volume{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	unlock, err := m.lock(ctx, name)
	if err != nil {
		return api.Volume{}, err
	}
	defer unlock()

	rec, exists := m.record(name)
	if exists {
		if rec.Provider != p.name || !maps.Equal(nonNil(rec.Options), nonNil(opts)) {
			return api.Volume{}, fmt.Errorf("create volume %q: %w with other options (%s)", name, volume.ErrExists, formatOptions(rec.Options))
		}
		if rec.State == api.StateReady {
			return m.apiVolume(rec), nil
		}
		if rec.State == api.StateRemoving {
			return api.Volume{}, fmt.Errorf("create volume %q: %w: it is being removed; remove it again first", name, volume.ErrExists)
		}
	}
	if err := waitRunning(ctx, p); err != nil {
		return api.Volume{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	if !exists {
		rec = store.Record{
			Name:      name,
			Provider:  p.name,
			State:     api.StateCreating,
			Options:   maps.Clone(opts),
			CreatedAt: time.Now().UTC(),
		}
		if err := m.save(rec); err != nil {
			return api.Volume{}, fmt.Errorf("create volume %q: %w", name, err)
		}
	}

	var v volume.Volume
	err = call(ctx, p, "create", func(ctx context.Context) error {
		var err error
		v, err = p.p.Create(ctx, req)
		return err
	})
	if err != nil {
		if ferr := m.forget(name); ferr != nil {
			err = errors.Join(err, ferr)
		}
		m.log.Warn("create failed", "volume", name, "provider", p.name, "err", err)
		return api.Volume{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	rec.ID, rec.CapacityBytes, rec.Context, rec.State = v.ID, v.CapacityBytes, v.Context, api.StateReady
	if err := m.save(rec); err != nil {
		return api.Volume{}, fmt.Errorf("create volume %q: %w", name, err)
	}
	m.log.Info("volume created", "volume", name, "provider", p.name, "id", v.ID)
	return m.apiVolume(rec), nil
}

func nonNil(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

func formatOptions(opts map[string]string) string {
	if len(opts) == 0 {
		return "no options"
	}
	keys := slices.Sorted(maps.Keys(opts))
	s := ""
	for i, k := range keys {
		if i > 0 {
			s += " "
		}
		s += k + "=" + opts[k]
	}
	return s
}

// Remove deletes the named volume and its data. It returns ErrInUse while
// the volume is mounted or has snapshots (see RemoveWithSnapshots) and
// ErrNotFound for an unknown name.
func (m *Manager) Remove(ctx context.Context, name string) error {
	rec, unlock, err := m.lockRecord(ctx, "remove volume", name)
	if err != nil {
		return err
	}
	defer unlock()
	if n := rec.MountCount(); n > 0 {
		return fmt.Errorf("remove volume %q: %w by %d %s", name, volume.ErrInUse, n, plural(n, "mount", "mounts"))
	}
	if err := m.checkNoSnapshots(name); err != nil {
		return fmt.Errorf("remove volume %q: %w", name, err)
	}
	p, ok := m.providers[rec.Provider]
	if !ok {
		return fmt.Errorf("remove volume %q: %w: its provider %q is not configured", name, volume.ErrUnavailable, rec.Provider)
	}
	if rec.Published || rec.Staged { // mounted with no mount counted (see Reconcile)
		if err := m.unpublish(ctx, p, &rec); err != nil {
			return fmt.Errorf("remove volume %q: %w", name, err)
		}
		if err := m.save(rec); err != nil {
			return fmt.Errorf("remove volume %q: %w", name, err)
		}
	}
	prev := rec.State
	if rec.ID != "" {
		rec.State = api.StateRemoving
		if err := m.save(rec); err != nil {
			return fmt.Errorf("remove volume %q: %w", name, err)
		}
		err := call(ctx, p, "delete", func(ctx context.Context) error { return p.p.Delete(ctx, rec.ID) })
		if err != nil {
			rec.State = prev
			if serr := m.save(rec); serr != nil {
				err = errors.Join(err, serr)
			}
			return fmt.Errorf("remove volume %q: %w", name, err)
		}
	}
	if err := m.forget(name); err != nil {
		return fmt.Errorf("remove volume %q: %w", name, err)
	}
	m.log.Info("volume removed", "volume", name, "provider", p.name)
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// Mount makes the named volume available for the mount ID and returns its
// mount point. The first mount on this host stages and publishes the
// volume; every further one only counts. A mount ID may mount more than
// once (dockerd repeats IDs) and then needs as many Unmounts.
func (m *Manager) Mount(ctx context.Context, name, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("mount volume %q: %w: empty mount ID", name, volume.ErrInvalid)
	}
	rec, unlock, err := m.lockRecord(ctx, "mount volume", name)
	if err != nil {
		return "", err
	}
	defer unlock()
	if rec.State != api.StateReady {
		return "", fmt.Errorf("mount volume %q: %w: the volume is %s", name, volume.ErrUnavailable, rec.State)
	}
	p, ok := m.providers[rec.Provider]
	if !ok {
		return "", fmt.Errorf("mount volume %q: %w: its provider %q is not configured", name, volume.ErrUnavailable, rec.Provider)
	}
	target := m.Mountpoint(name)
	if !rec.Published {
		if err := waitRunning(ctx, p); err != nil {
			return "", fmt.Errorf("mount volume %q: %w", name, err)
		}
		if err := m.publish(ctx, p, &rec); err != nil {
			return "", fmt.Errorf("mount volume %q: %w", name, err)
		}
	}
	if rec.Mounts == nil {
		rec.Mounts = map[string]int{}
	}
	rec.Mounts[id]++
	if err := m.save(rec); err != nil {
		return "", fmt.Errorf("mount volume %q: %w", name, err)
	}
	m.log.Debug("mounted", "volume", name, "mount_id", id, "mounts", rec.MountCount())
	return target, nil
}

// publish stages (when the provider needs it) and publishes rec, recording
// each step as it succeeds.
func (m *Manager) publish(ctx context.Context, p *provider, rec *store.Record) error {
	caps, err := p.capabilities(ctx)
	if err != nil {
		return err
	}
	staging := ""
	if caps.Stage {
		staging = m.stagingPath(rec.Name)
		if !rec.Staged {
			if err := os.MkdirAll(staging, 0o755); err != nil {
				return fmt.Errorf("create staging directory: %w", err)
			}
			err := call(ctx, p, "stage", func(ctx context.Context) error {
				return p.p.Stage(ctx, volume.StageRequest{VolumeID: rec.ID, StagingPath: staging, Context: rec.Context})
			})
			if err != nil {
				return err
			}
			rec.Staged = true
			if err := m.save(*rec); err != nil {
				return err
			}
		}
	}
	target := m.Mountpoint(rec.Name)
	if err := os.MkdirAll(target, 0o755); err != nil {
		return fmt.Errorf("create mount point: %w", err)
	}
	err = call(ctx, p, "publish", func(ctx context.Context) error {
		return p.p.Publish(ctx, volume.PublishRequest{VolumeID: rec.ID, StagingPath: staging, TargetPath: target, Context: rec.Context, ReadOnly: rec.MigratedTo != ""})
	})
	if err != nil {
		return err
	}
	rec.Published = true
	return nil
}

// Unmount releases one mount of the mount ID. The last mount on this host
// unpublishes and unstages the volume. An unknown volume or mount ID is
// ErrNotFound and changes nothing.
func (m *Manager) Unmount(ctx context.Context, name, id string) error {
	rec, unlock, err := m.lockRecord(ctx, "unmount volume", name)
	if err != nil {
		return err
	}
	defer unlock()
	if rec.Mounts[id] == 0 {
		return fmt.Errorf("unmount volume %q: %w: no mount with ID %q", name, volume.ErrNotFound, id)
	}
	rec.Mounts[id]--
	if rec.Mounts[id] == 0 {
		delete(rec.Mounts, id)
	}
	var uerr error
	if rec.MountCount() == 0 {
		if p, ok := m.providers[rec.Provider]; ok {
			uerr = m.unpublish(ctx, p, &rec)
		} else {
			uerr = fmt.Errorf("%w: provider %q is not configured", volume.ErrUnavailable, rec.Provider)
		}
	}
	// The count drops even when unpublishing failed: the consumer is gone.
	// The next mount or unmount finishes the job.
	if err := m.save(rec); err != nil {
		uerr = errors.Join(uerr, err)
	}
	if uerr != nil {
		return fmt.Errorf("unmount volume %q: %w", name, uerr)
	}
	m.log.Debug("unmounted", "volume", name, "mount_id", id, "mounts", rec.MountCount())
	return nil
}

func (m *Manager) unpublish(ctx context.Context, p *provider, rec *store.Record) error {
	if rec.Published {
		target := m.Mountpoint(rec.Name)
		if err := call(ctx, p, "unpublish", func(ctx context.Context) error { return p.p.Unpublish(ctx, rec.ID, target) }); err != nil {
			return err
		}
		rec.Published = false
	}
	if rec.Staged {
		staging := m.stagingPath(rec.Name)
		if err := call(ctx, p, "unstage", func(ctx context.Context) error { return p.p.Unstage(ctx, rec.ID, staging) }); err != nil {
			return err
		}
		rec.Staged = false
		if err := os.Remove(staging); err != nil && !errors.Is(err, os.ErrNotExist) {
			m.log.Warn("remove staging directory", "volume", rec.Name, "err", err)
		}
	}
	return nil
}

// Path returns the mount point of a mounted volume and "" otherwise.
func (m *Manager) Path(ctx context.Context, name string) (string, error) {
	v, err := m.Get(ctx, name)
	if err != nil {
		return "", err
	}
	return v.Mountpoint, nil
}

// Get returns the named volume from local state; it never asks a provider.
func (m *Manager) Get(ctx context.Context, name string) (api.Volume, error) {
	if err := ValidateName(name); err != nil {
		return api.Volume{}, err
	}
	rec, ok := m.record(name)
	if !ok {
		return api.Volume{}, fmt.Errorf("volume %q: %w", name, volume.ErrNotFound)
	}
	return m.apiVolume(rec), nil
}

// List returns every volume from local state, ordered by name.
func (m *Manager) List(ctx context.Context) ([]api.Volume, error) {
	m.mu.Lock()
	out := make([]api.Volume, 0, len(m.vols))
	for _, r := range m.vols {
		out = append(out, m.apiVolume(*r))
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// apiVolume converts a record; it may share r's maps.
func (m *Manager) apiVolume(r store.Record) api.Volume {
	v := api.Volume{
		Name:          r.Name,
		Provider:      r.Provider,
		ID:            r.ID,
		State:         r.State,
		CapacityBytes: r.CapacityBytes,
		Options:       maps.Clone(r.Options),
		CreatedAt:     r.CreatedAt,
		Mounts:        r.MountCount(),
		MountIDs:      maps.Clone(r.Mounts),
		MigratedTo:    r.MigratedTo,
	}
	if r.Published {
		v.Mountpoint = m.Mountpoint(r.Name)
	}
	return v
}

// Stats returns usage figures of a mounted volume; ErrNotFound when the
// volume is unknown or not mounted.
func (m *Manager) Stats(ctx context.Context, name string) (volume.Stats, error) {
	rec, ok := m.record(name)
	if !ok || !rec.Published {
		return volume.Stats{}, fmt.Errorf("stats of volume %q: %w (not mounted)", name, volume.ErrNotFound)
	}
	p, ok := m.providers[rec.Provider]
	if !ok {
		return volume.Stats{}, fmt.Errorf("stats of volume %q: %w", name, volume.ErrUnavailable)
	}
	var st volume.Stats
	err := call(ctx, p, "stats", func(ctx context.Context) error {
		var err error
		st, err = p.p.Stats(ctx, rec.ID, m.Mountpoint(name))
		return err
	})
	return st, err
}
