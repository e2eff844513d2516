//go:build ceph && linux && cgo

package rbd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"

	"github.com/stowage/stowage/internal/keylock"
	"github.com/stowage/stowage/plugins/volume"
)

// Image metadata keys.
const (
	// metaSpec holds the volume's spec as JSON; only images with it are
	// volumes of the provider.
	metaSpec = "stowage.spec"
	// metaGrow is set when the image grew while no host had it staged
	// here: the next read-write Stage grows the file system.
	metaGrow = "stowage.grow"
)

// workPrefix starts the names of images being created; no volume name
// starts with a dot.
const workPrefix = ".creating-"

// imageFeatures are the features of new images: layering, which clones
// need, and deep-flatten. Not exclusive-lock (nor object-map and fast-diff,
// which need it): librbd's managed lock uses the same RADOS lock as the
// advisory lock that enforces one writer per volume, and would wait on it
// forever.
const imageFeatures = librbd.FeatureLayering | librbd.FeatureDeepFlatten

// imageOrder makes 4MiB objects.
const imageOrder = 22

// Provider is the RBD provider. It is safe for concurrent use. It serves
// the data of staged volumes in-process, so they stay usable only while it
// runs.
type Provider struct {
	cfg    Config
	log    *slog.Logger
	conn   *rados.Conn
	ioctx  *rados.IOContext
	cookie string // the cookie of this host's locks
	self   string // this client's entity name, "client.N"

	// locks serialises the operations on one volume ID.
	locks keylock.Map
	// mu guards staged; it is never held across I/O.
	mu     sync.Mutex
	staged map[string]*staging
}

// staging is a volume staged by this provider: the open image served as a
// FUSE file, the loop device on it and the mounted file system.
type staging struct {
	path     string
	readOnly bool
	fs       string
	img      *librbd.Image
	file     *blockFile
	loop     *loopDevice
}

var (
	_ volume.Provider    = (*Provider)(nil)
	_ volume.Lister      = (*Provider)(nil)
	_ volume.Expander    = (*Provider)(nil)
	_ volume.Snapshotter = (*Provider)(nil)
	_ volume.Unlocker    = (*Provider)(nil)
)

// New connects to the cluster cfg names and opens its pool. It fails with
// ErrInvalid for a bad configuration, ErrNotFound for a missing pool or
// namespace and ErrUnavailable when the cluster cannot be reached or
// refuses the user. Close releases it.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Provider, error) {
	if !handleFound {
		return nil, errors.New("this build's go-ceph keeps no librbd handle in rbd.Image (field \"image\"); build with the go-ceph version in go.mod")
	}
	cfg, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn, err := rados.NewConnWithUser(cfg.User)
	if err != nil {
		return nil, wrap(err, "create Ceph client for user", strconv.Quote(cfg.User))
	}
	ok := false
	defer func() {
		if !ok {
			conn.Shutdown()
		}
	}()
	if err := conn.ReadConfigFile(cfg.ConfFile); err != nil {
		return nil, fmt.Errorf("%w: read %s: %w", volume.ErrInvalid, cfg.ConfFile, err)
	}
	opts := [][2]string{
		// Fail instead of hanging for 5 minutes when no monitor answers.
		{"client_mount_timeout", "15"},
		{"rados_mon_op_timeout", "30"},
		// Images that librbd creates on its own, as copies, get the
		// provider's features too.
		{"rbd_default_features", strconv.FormatUint(imageFeatures, 10)},
		// No cache in librbd: a write is acknowledged once the cluster has
		// it, or fails. librbd's write-around cache (its default)
		// acknowledges a write while it is on its way and hands its error
		// to the next flush only while it is still under way: the error
		// of one that failed before (as every write does at once after
		// this host was fenced) is dropped, and the flush succeeds, so
		// fsync would report lost data safe. Write-through would be as
		// safe; without a cache, reads are not kept a second time below
		// the file system's page cache.
		{"rbd_cache", "false"},
	}
	if cfg.Keyring != "" {
		opts = append(opts, [2]string{"keyring", cfg.Keyring})
	}
	for _, o := range opts {
		if err := conn.SetConfigOption(o[0], o[1]); err != nil {
			return nil, fmt.Errorf("%w: set Ceph option %s: %w", volume.ErrInvalid, o[0], err)
		}
	}
	if err := conn.Connect(); err != nil {
		return nil, wrap(err, "connect to the Ceph cluster of", cfg.ConfFile+" as client."+cfg.User)
	}
	ioctx, err := conn.OpenIOContext(cfg.Pool)
	if err != nil {
		if errnoOf(err) == syscall.ENOENT {
			return nil, fmt.Errorf("%w: pool %q does not exist: %w", volume.ErrNotFound, cfg.Pool, err)
		}
		return nil, wrap(err, "open pool", strconv.Quote(cfg.Pool))
	}
	if cfg.Namespace != "" {
		ok, err := librbd.NamespaceExists(ioctx, cfg.Namespace)
		if err == nil && !ok {
			err = fmt.Errorf("%w: namespace %q does not exist in pool %q", volume.ErrNotFound, cfg.Namespace, cfg.Pool)
		}
		if err != nil {
			ioctx.Destroy()
			return nil, wrap(err, "open namespace", strconv.Quote(cfg.Namespace))
		}
		ioctx.SetNamespace(cfg.Namespace)
	}
	if err := os.MkdirAll(cfg.RunDir, 0o700); err != nil {
		ioctx.Destroy()
		return nil, fmt.Errorf("%w: create run directory: %w", volume.ErrUnavailable, err)
	}
	ok = true
	p := &Provider{
		cfg:    cfg,
		log:    log,
		conn:   conn,
		ioctx:  ioctx,
		cookie: cookiePrefix + cfg.HostID,
		self:   fmt.Sprintf("client.%d", conn.GetInstanceID()),
		staged: map[string]*staging{},
	}
	p.reportStale(ctx)
	return p, nil
}

// Close unstages what it can and releases the connection. A volume still
// published, or mounted in another mount namespace, stays staged: its
// data path ends with the process, so its I/O then fails until it is
// unstaged and staged again. Close names such volumes in its error and
// keeps the connection for them.
func (p *Provider) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), detachWait+5*time.Second)
	defer cancel()
	p.mu.Lock()
	ids := make([]string, 0, len(p.staged))
	for id := range p.staged {
		ids = append(ids, id)
	}
	p.mu.Unlock()
	sort.Strings(ids)
	var left []string
	for _, id := range ids {
		st := p.stagedAt(id)
		if st == nil {
			continue
		}
		if err := p.Unstage(ctx, id, st.path); err != nil {
			p.log.Warn("volume stays staged as the provider stops; its I/O fails until it is unstaged and staged again",
				"volume", id, "error", err)
			left = append(left, id)
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("%w: close provider: volumes still staged: %s", volume.ErrInUse, strings.Join(left, ", "))
	}
	p.ioctx.Destroy()
	p.conn.Shutdown()
	return nil
}

// reportStale logs the FUSE files that a previous run of the provider in
// this mount namespace left mounted: their volumes stay attached until
// unstaged.
func (p *Provider) reportStale(ctx context.Context) {
	dirs, err := staleFUSE(p.cfg.RunDir)
	if err != nil {
		p.log.WarnContext(ctx, "list FUSE mounts", "error", err)
		return
	}
	for _, d := range dirs {
		p.log.WarnContext(ctx, "loop device of a previous run is still attached to the volume's FUSE file; unstage the volume to release it",
			"volume", filepath.Base(d), "path", d)
	}
}

// Info returns the provider's name and version.
func (p *Provider) Info(ctx context.Context) (volume.Info, error) {
	return volume.Info{Name: Name, Version: version}, nil
}

// Capabilities reports that the provider stages volumes, answers Stats and
// copies volumes.
func (p *Provider) Capabilities(ctx context.Context) (volume.Capabilities, error) {
	return volume.Capabilities{Stage: true, Stats: true, Clone: true}, nil
}

// Probe checks that the pool answers.
func (p *Provider) Probe(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := p.ioctx.GetPoolStats(); err != nil {
		return wrap(err, "probe pool", strconv.Quote(p.cfg.Pool))
	}
	return nil
}

// record is what the provider keeps in an image's metadata.
type record struct {
	Version int `json:"version"`
	spec
}

// recordVersion is the version of the metaSpec format.
const recordVersion = 1

// readSpec reads the spec of an open image; an image without one is not a
// volume (ErrNotFound).
func readSpec(img *librbd.Image) (spec, error) {
	v, err := img.GetMetadata(metaSpec)
	if errnoOf(err) == syscall.ENOENT {
		return spec{}, fmt.Errorf("%w: image %q is not a stowage volume", volume.ErrNotFound, img.GetName())
	}
	if err != nil {
		return spec{}, wrap(err, "read metadata of image", strconv.Quote(img.GetName()))
	}
	var r record
	if err := json.Unmarshal([]byte(v), &r); err != nil || r.Version != recordVersion {
		return spec{}, fmt.Errorf("%w: image %q has unreadable stowage metadata (version %d): %v",
			volume.ErrUnavailable, img.GetName(), r.Version, err)
	}
	return r.spec, nil
}

// writeSpec records s in an open image's metadata.
func writeSpec(img *librbd.Image, s spec) error {
	b, err := json.Marshal(record{Version: recordVersion, spec: s})
	if err != nil {
		return err
	}
	return wrap(img.SetMetadata(metaSpec, string(b)), "write metadata of image", strconv.Quote(img.GetName()))
}

// info is a volume as read from its image.
type info struct {
	spec spec
	size int64
}

func (i info) volume(id string) volume.Volume {
	return volume.Volume{ID: id, CapacityBytes: i.size}
}

// describe reads a volume's spec and size. A missing image, or one that
// is not a volume, is ErrNotFound.
func (p *Provider) describe(id string) (info, error) {
	img, err := librbd.OpenImageReadOnly(p.ioctx, id, librbd.NoSnapshot)
	if err != nil {
		if errors.Is(err, librbd.ErrNotFound) {
			return info{}, fmt.Errorf("%w: volume %q", volume.ErrNotFound, id)
		}
		return info{}, wrap(err, "open image", strconv.Quote(id))
	}
	defer img.Close()
	s, err := readSpec(img)
	if err != nil {
		return info{}, err
	}
	size, err := img.GetSize()
	if err != nil {
		return info{}, wrap(err, "read size of image", strconv.Quote(id))
	}
	return info{spec: s, size: int64(size)}, nil
}

// Create creates a volume named req.Name, or returns it when it exists with
// the same size and options.
func (p *Provider) Create(ctx context.Context, req volume.CreateRequest) (volume.Volume, error) {
	unlock, err := p.lockID(ctx, "volume", req.Name)
	if err != nil {
		return volume.Volume{}, err
	}
	defer unlock()

	want, perr := p.wantSpec(req)
	have, err := p.describe(req.Name)
	switch {
	case err == nil:
		if perr != nil {
			return volume.Volume{}, fmt.Errorf("%w: volume %q exists (fs=%s size=%s) and the request does not match it: %v",
				volume.ErrExists, req.Name, have.spec.FS, volume.FormatSize(have.spec.CapacityBytes), perr)
		}
		if have.spec != want {
			return volume.Volume{}, fmt.Errorf("%w: volume %q exists with %s", volume.ErrExists, req.Name, describeSpec(have.spec))
		}
		return have.volume(req.Name), nil
	case errors.Is(err, volume.ErrNotFound):
		if ok, serr := p.imageExists(req.Name); serr != nil {
			return volume.Volume{}, serr
		} else if ok {
			return volume.Volume{}, fmt.Errorf("%w: image %q exists in pool %q and is not a stowage volume", volume.ErrExists, req.Name, p.cfg.Pool)
		}
	default:
		return volume.Volume{}, err
	}
	if perr != nil {
		return volume.Volume{}, perr
	}
	if err := ctx.Err(); err != nil {
		return volume.Volume{}, err
	}
	if err := p.build(ctx, req.Name, want); err != nil {
		return volume.Volume{}, fmt.Errorf("create volume %q: %w", req.Name, err)
	}
	p.log.InfoContext(ctx, "created volume", "volume", req.Name, "fs", want.FS, "size", want.CapacityBytes,
		"source", want.Source, "source_volume", want.SourceVolume)
	return volume.Volume{ID: req.Name, CapacityBytes: want.CapacityBytes}, nil
}

// wantSpec resolves what a create request asks for.
func (p *Provider) wantSpec(req volume.CreateRequest) (spec, error) {
	if req.Source == nil {
		return parseParameters(req.CapacityBytes, req.Parameters)
	}
	switch {
	case req.Source.SnapshotID != "" && req.Source.VolumeID != "":
		return spec{}, fmt.Errorf("%w: a volume starts from a snapshot or from a volume, not both", volume.ErrInvalid)
	case req.Source.VolumeID != "":
		return p.copySpec(req)
	case req.Source.SnapshotID == "":
		return spec{}, fmt.Errorf("%w: the source names no snapshot", volume.ErrInvalid)
	}
	return p.cloneSpec(req)
}

func describeSpec(s spec) string {
	d := fmt.Sprintf("fs=%s size=%s", s.FS, volume.FormatSize(s.CapacityBytes))
	if s.Source != "" {
		d += " from " + s.Source
	}
	if s.SourceVolume != "" {
		d += " copied from " + s.SourceVolume
	}
	return d
}

// imageExists reports whether an image of that name exists.
func (p *Provider) imageExists(name string) (bool, error) {
	img, err := librbd.OpenImageReadOnly(p.ioctx, name, librbd.NoSnapshot)
	if errors.Is(err, librbd.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, wrap(err, "open image", strconv.Quote(name))
	}
	img.Close()
	return true, nil
}

// build makes the image of a new volume under a work name, records its
// spec and renames it into place, so that an image of the volume's name
// exists only when it is complete. A work image left by an interrupted
// Create is replaced.
func (p *Provider) build(ctx context.Context, name string, s spec) (err error) {
	tmp := workPrefix + name
	if err := p.removeImage(tmp); err != nil {
		return fmt.Errorf("remove stale work image: %w", err)
	}
	switch {
	case s.Source != "":
		err = p.cloneImage(s.Source, tmp)
	case s.SourceVolume != "":
		err = p.copyImage(ctx, s.SourceVolume, tmp)
	default:
		err = p.createImage(tmp, s.CapacityBytes)
	}
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			if rerr := p.removeImage(tmp); rerr != nil {
				p.log.WarnContext(ctx, "remove work image", "volume", name, "error", rerr)
			}
		}
	}()
	img, err := librbd.OpenImage(p.ioctx, tmp, librbd.NoSnapshot)
	if err != nil {
		return wrap(err, "open image", strconv.Quote(tmp))
	}
	err = p.fill(img, s)
	if cerr := img.Close(); err == nil && cerr != nil {
		err = wrap(cerr, "close image", strconv.Quote(tmp))
	}
	if err != nil {
		return err
	}
	if err := librbd.GetImage(p.ioctx, tmp).Rename(name); err != nil {
		return wrap(err, "rename image to", strconv.Quote(name))
	}
	return nil
}

// fill records the spec in a new image and, for a clone asked to be larger
// than its snapshot, grows it (the file system grows at the first Stage).
func (p *Provider) fill(img *librbd.Image, s spec) error {
	size, err := img.GetSize()
	if err != nil {
		return wrap(err, "read size of image", strconv.Quote(img.GetName()))
	}
	if int64(size) < s.CapacityBytes {
		if err := img.Resize(uint64(s.CapacityBytes)); err != nil {
			return wrap(err, "resize image", strconv.Quote(img.GetName()))
		}
		if err := img.SetMetadata(metaGrow, "1"); err != nil {
			return wrap(err, "write metadata of image", strconv.Quote(img.GetName()))
		}
	}
	return writeSpec(img, s)
}

// createImage creates a thin image.
func (p *Provider) createImage(name string, size int64) error {
	opts := librbd.NewRbdImageOptions()
	defer opts.Destroy()
	if err := opts.SetUint64(librbd.ImageOptionFeatures, imageFeatures); err != nil {
		return wrap(err, "set image features for", strconv.Quote(name))
	}
	if err := opts.SetUint64(librbd.ImageOptionOrder, imageOrder); err != nil {
		return wrap(err, "set image order for", strconv.Quote(name))
	}
	return wrap(librbd.CreateImage(p.ioctx, name, uint64(size), opts), "create image", strconv.Quote(name))
}

// removeImage removes an image; a missing one is fine.
func (p *Provider) removeImage(name string) error {
	err := librbd.RemoveImage(p.ioctx, name)
	if err == nil || errors.Is(err, librbd.ErrNotFound) {
		return nil
	}
	if errnoOf(err) == syscall.EBUSY {
		return fmt.Errorf("%w: remove image %q: it is open by another client (staged on another host?): %w", volume.ErrInUse, name, err)
	}
	return wrap(err, "remove image", strconv.Quote(name))
}

// Delete removes the volume and its data. It refuses with ErrInUse while
// the volume is staged here or open elsewhere, and while it has snapshots.
func (p *Provider) Delete(ctx context.Context, volumeID string) error {
	unlock, err := p.lockID(ctx, "volume", volumeID)
	if err != nil {
		return err
	}
	defer unlock()
	if st := p.stagedAt(volumeID); st != nil {
		return fmt.Errorf("%w: delete volume %q: staged at %s", volume.ErrInUse, volumeID, st.path)
	}
	img, err := librbd.OpenImageReadOnly(p.ioctx, volumeID, librbd.NoSnapshot)
	if errors.Is(err, librbd.ErrNotFound) {
		return nil
	}
	if err != nil {
		return wrap(err, "delete volume", strconv.Quote(volumeID))
	}
	_, serr := readSpec(img)
	snaps, lerr := img.GetSnapshotNames()
	img.Close()
	if errors.Is(serr, volume.ErrNotFound) {
		return nil // not a volume of ours: nothing of ours to delete
	}
	if err := errors.Join(serr, lerr); err != nil {
		return wrap(err, "delete volume", strconv.Quote(volumeID))
	}
	if len(snaps) > 0 {
		names := make([]string, len(snaps))
		for i, s := range snaps {
			names[i] = s.Name
		}
		return fmt.Errorf("%w: delete volume %q: it has snapshots (%s); delete them first",
			volume.ErrInUse, volumeID, strings.Join(names, ", "))
	}
	if err := p.removeImage(volumeID); err != nil {
		return fmt.Errorf("delete volume %q: %w", volumeID, err)
	}
	p.log.InfoContext(ctx, "deleted volume", "volume", volumeID)
	return nil
}

// List returns the volumes of the pool (images with the provider's
// metadata), sorted by ID.
func (p *Provider) List(ctx context.Context) ([]volume.Volume, error) {
	names, err := p.volumeNames(ctx)
	if err != nil {
		return nil, err
	}
	vols := []volume.Volume{}
	for _, n := range names {
		i, err := p.describe(n)
		if errors.Is(err, volume.ErrNotFound) {
			continue // removed meanwhile, or foreign
		}
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		vols = append(vols, i.volume(n))
	}
	return vols, nil
}

// volumeNames returns the sorted names of the images that may be volumes:
// all but work images.
func (p *Provider) volumeNames(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	names, err := librbd.GetImageNames(p.ioctx)
	if err != nil {
		return nil, wrap(err, "list images of pool", strconv.Quote(p.cfg.Pool))
	}
	out := names[:0]
	for _, n := range names {
		if checkName("volume", n) == nil {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out, nil
}

// stagedAt returns the volume's staging, or nil.
func (p *Provider) stagedAt(id string) *staging {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.staged[id]
}

// lockID checks id (a name of kind what) and locks it. The caller calls
// unlock when err is nil.
func (p *Provider) lockID(ctx context.Context, what, id string) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkName(what, id); err != nil {
		return nil, err
	}
	return p.locks.Lock(ctx, id)
}
