// Package local is stowage's built-in provider: volumes on the host's own
// disk, under one root directory.
//
// Each volume lives in <root>/<id>/, where the ID is the volume's name (a
// Docker volume name, [a-zA-Z0-9][a-zA-Z0-9_.-]*). The directory holds
// volume.json, which records the name, type, file system, size and the
// options as given, and the data: a directory "data" for type dir, or a
// sparse image file "disk.img" holding a file system for type fs.
//
// # Options
//
// Options are the Parameters of a create request (Docker's -o key=value);
// the size is its CapacityBytes (Docker's -o size=SIZE). Unknown keys are
// rejected.
//
//	type=dir|fs   dir (the default without a size): a plain directory; it
//	              cannot enforce a size, so a size with type=dir is an error.
//	              fs (the default with a size): a file system in a sparse
//	              image file of exactly the size, attached through a loop
//	              device; writing past the size fails with ENOSPC. A size
//	              is required.
//	fs=ext4|xfs   the file system of a type=fs volume; default ext4. ext4
//	              needs a size of at least 4MiB, xfs at least 300MiB.
//	              Only with type=fs.
//
// Sizes are rounded up to a multiple of 4KiB. Creating a name again with the
// same size and options returns the existing volume; with others it fails
// with ErrExists.
//
// # Host requirements
//
// Mounting needs root (CAP_SYS_ADMIN) on Linux. type=fs needs /dev/loop-control
// and mkfs.ext4 (Debian package e2fsprogs) or mkfs.xfs (xfsprogs) in PATH.
//
// # Staging and publishing
//
// The provider stages every volume (Capabilities.Stage): Stage bind-mounts
// a directory volume's data, or attaches the image to a free loop device
// (with autoclear, so it detaches on unmount) and mounts it. Publish
// bind-mounts the staging path onto the target, read-only when asked.
// Stats reports the file system at the given path; for type dir that is the
// file system holding the root, since a directory has no size of its own.
// A path that is already a mount point counts as staged or published, so
// repeated calls succeed. Delete refuses with ErrInUse while a volume is
// staged or published: while its image is attached to a loop device, or
// while its data directory is the source of a bind mount.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"github.com/stowage/stowage/internal/atomicfile"
	"github.com/stowage/stowage/internal/keylock"

	"github.com/stowage/stowage/plugins/volume"
)

// Name is the provider's driver name.
const Name = "stowage.local"

// version is reported by Info.
const version = "0.1.0"

// Files inside a volume's directory.
const (
	metaFile  = "volume.json"
	dataDir   = "data"
	imageFile = "disk.img"
)

// Prefixes of work directories under the root. They start with a dot, which
// no ID does, so they never collide with a volume.
const (
	creatingPrefix = ".creating-"
	deletingPrefix = ".deleting-"
)

// metaVersion is the version of the volume.json format.
const metaVersion = 1

// meta is the content of volume.json.
type meta struct {
	Version       int               `json:"version"`
	Name          string            `json:"name"`
	Type          string            `json:"type"`
	FS            string            `json:"fs,omitempty"`
	CapacityBytes int64             `json:"capacity_bytes"`
	Parameters    map[string]string `json:"parameters,omitempty"`
}

func (m meta) spec() spec {
	return spec{Type: m.Type, FS: m.FS, CapacityBytes: m.CapacityBytes}
}

func (m meta) volume() volume.Volume {
	return volume.Volume{ID: m.Name, CapacityBytes: m.CapacityBytes}
}

// Provider is the local provider. It is safe for concurrent use.
type Provider struct {
	root string
	log  *slog.Logger
	// locks serialises the operations on one volume ID.
	locks keylock.Map
}

var (
	_ volume.Provider = (*Provider)(nil)
	_ volume.Lister   = (*Provider)(nil)
)

// New returns a provider keeping its volumes under root, which it creates if
// missing. It logs to log, which the caller labels with the provider's name.
func New(root string, log *slog.Logger) (*Provider, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("%w: resolve root %q: %v", volume.ErrInvalid, root, err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("%w: create root: %w", volume.ErrUnavailable, err)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Provider{root: abs, log: log}, nil
}

// Info returns the provider's name and version.
func (p *Provider) Info(ctx context.Context) (volume.Info, error) {
	return volume.Info{Name: Name, Version: version}, nil
}

// Capabilities reports that the provider stages volumes and answers Stats.
func (p *Provider) Capabilities(ctx context.Context) (volume.Capabilities, error) {
	return volume.Capabilities{Stage: true, Stats: true}, nil
}

// Probe checks that the root is a writable directory. Missing mkfs tools
// are reported by Create, for the type that needs them.
func (p *Provider) Probe(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	f, err := os.CreateTemp(p.root, ".probe-")
	if err != nil {
		return fmt.Errorf("%w: write root: %w", volume.ErrUnavailable, err)
	}
	name := f.Name()
	err = errors.Join(f.Close(), os.Remove(name))
	if err != nil {
		return fmt.Errorf("%w: write root: %w", volume.ErrUnavailable, err)
	}
	return nil
}

// Create creates a volume named req.Name, or returns it when it exists with
// the same size and options.
func (p *Provider) Create(ctx context.Context, req volume.CreateRequest) (volume.Volume, error) {
	unlock, err := p.lockID(ctx, req.Name)
	if err != nil {
		return volume.Volume{}, err
	}
	defer unlock()

	sp, perr := parseParameters(req.CapacityBytes, req.Parameters)
	m, err := p.meta(req.Name)
	switch {
	case err == nil:
		if perr != nil {
			// The name is taken; what the request asks for does not matter.
			return volume.Volume{}, fmt.Errorf("%w: volume %q exists (type=%s) and the request does not match it: %v",
				volume.ErrExists, req.Name, m.Type, perr)
		}
		if sp != m.spec() {
			return volume.Volume{}, fmt.Errorf("%w: volume %q exists with %s", volume.ErrExists, req.Name, describe(m.spec()))
		}
		return m.volume(), nil
	case !errors.Is(err, volume.ErrNotFound):
		return volume.Volume{}, err
	case perr != nil:
		return volume.Volume{}, perr
	}

	m = meta{
		Version:       metaVersion,
		Name:          req.Name,
		Type:          sp.Type,
		FS:            sp.FS,
		CapacityBytes: sp.CapacityBytes,
		Parameters:    req.Parameters,
	}
	if err := p.build(ctx, m); err != nil {
		return volume.Volume{}, fmt.Errorf("create volume %q: %w", req.Name, err)
	}
	p.log.InfoContext(ctx, "created volume", "volume", req.Name, "type", m.Type, "fs", m.FS, "size", m.CapacityBytes)
	return m.volume(), nil
}

// describe names a spec's options for error messages.
func describe(s spec) string {
	if s.Type == typeDir {
		return "type=dir"
	}
	return fmt.Sprintf("type=fs fs=%s size=%s", s.FS, volume.FormatSize(s.CapacityBytes))
}

// build creates the volume m describes in a work directory and renames it
// into place, so that <root>/<id> exists only when it is complete.
func (p *Provider) build(ctx context.Context, m meta) (err error) {
	tmp := filepath.Join(p.root, creatingPrefix+m.Name)
	if err := os.RemoveAll(tmp); err != nil { // left by an interrupted Create
		return fmt.Errorf("%w: remove stale work directory: %w", volume.ErrUnavailable, err)
	}
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("%w: make work directory: %w", volume.ErrUnavailable, err)
	}
	defer func() {
		if err != nil {
			if rerr := os.RemoveAll(tmp); rerr != nil {
				p.log.WarnContext(ctx, "remove work directory", "volume", m.Name, "error", rerr)
			}
		}
	}()
	switch m.Type {
	case typeDir:
		if err := os.Mkdir(filepath.Join(tmp, dataDir), 0o755); err != nil {
			return fmt.Errorf("%w: make data directory: %w", volume.ErrUnavailable, err)
		}
	case typeFS:
		if err := makeImage(ctx, filepath.Join(tmp, imageFile), m.FS, m.CapacityBytes); err != nil {
			return err
		}
	}
	if err := writeMeta(filepath.Join(tmp, metaFile), m); err != nil {
		return err
	}
	if err := os.Rename(tmp, p.dir(m.Name)); err != nil {
		return fmt.Errorf("%w: move volume into place: %w", volume.ErrUnavailable, err)
	}
	return syncDir(p.root)
}

// mkfsPackage names the Debian package of each mkfs tool.
var mkfsPackage = map[string]string{fsExt4: "e2fsprogs", fsXFS: "xfsprogs"}

// makeImage creates a sparse file of size bytes at path and formats it.
func makeImage(ctx context.Context, path, fsType string, size int64) error {
	tool := "mkfs." + fsType
	bin, err := exec.LookPath(tool)
	if err != nil {
		return fmt.Errorf("%w: %s not found (install the package %s): %w",
			volume.ErrUnavailable, tool, mkfsPackage[fsType], err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w: create image: %w", volume.ErrUnavailable, err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: size image: %w", volume.ErrUnavailable, err)
	}
	var args []string
	switch fsType {
	case fsExt4:
		args = []string{"-q", "-F", "-m", "0", "-E", "nodiscard", path}
	case fsXFS:
		args = []string{"-q", "-K", path}
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return fmt.Errorf("run %s: %w", tool, cerr)
		}
		return fmt.Errorf("%w: run %s: %w: %s", volume.ErrUnavailable, tool, err, strings.TrimSpace(stderr.String()))
	}
	// mkfs wrote through its own descriptor; make the image durable before
	// the volume is announced.
	return syncFile(path)
}

// Delete removes the volume and its data. It refuses with ErrInUse while
// the volume is staged or published.
func (p *Provider) Delete(ctx context.Context, volumeID string) error {
	unlock, err := p.lockID(ctx, volumeID)
	if err != nil {
		return err
	}
	defer unlock()

	dir := p.dir(volumeID)
	if _, err := os.Lstat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return fmt.Errorf("%w: delete volume %q: %w", volume.ErrUnavailable, volumeID, err)
	}
	if err := inUse(ctx, dir); err != nil {
		return fmt.Errorf("delete volume %q: %w", volumeID, err)
	}
	// Rename first so that a half-removed volume is never listed.
	gone := filepath.Join(p.root, deletingPrefix+volumeID)
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("%w: delete volume %q: %w", volume.ErrUnavailable, volumeID, err)
	}
	if err := os.Rename(dir, gone); err != nil {
		return fmt.Errorf("%w: delete volume %q: %w", volume.ErrUnavailable, volumeID, err)
	}
	if err := os.RemoveAll(gone); err != nil {
		return fmt.Errorf("%w: delete volume %q: %w", volume.ErrUnavailable, volumeID, err)
	}
	p.log.InfoContext(ctx, "deleted volume", "volume", volumeID)
	return nil
}

// List returns the volumes under the root, sorted by ID.
func (p *Provider) List(ctx context.Context) ([]volume.Volume, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	entries, err := os.ReadDir(p.root)
	if err != nil {
		return nil, fmt.Errorf("%w: list volumes: %w", volume.ErrUnavailable, err)
	}
	vols := []volume.Volume{}
	for _, e := range entries {
		if !e.IsDir() || checkID(e.Name()) != nil {
			continue // work directories and strangers
		}
		m, err := p.meta(e.Name())
		if errors.Is(err, volume.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		vols = append(vols, m.volume())
	}
	sort.Slice(vols, func(i, j int) bool { return vols[i].ID < vols[j].ID })
	return vols, nil
}

// dir returns the directory of a volume; id must have passed checkID.
func (p *Provider) dir(id string) string {
	return filepath.Join(p.root, id)
}

// meta reads a volume's metadata. A missing volume gives ErrNotFound.
func (p *Provider) meta(id string) (meta, error) {
	if err := checkID(id); err != nil {
		return meta{}, err
	}
	b, err := os.ReadFile(filepath.Join(p.dir(id), metaFile))
	if errors.Is(err, fs.ErrNotExist) {
		return meta{}, fmt.Errorf("%w: volume %q", volume.ErrNotFound, id)
	}
	if err != nil {
		return meta{}, fmt.Errorf("%w: read volume %q: %w", volume.ErrUnavailable, id, err)
	}
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return meta{}, fmt.Errorf("%w: read volume %q: %w", volume.ErrUnavailable, id, err)
	}
	if m.Version != metaVersion || m.Name != id {
		return meta{}, fmt.Errorf("%w: read volume %q: unexpected metadata (version %d, name %q)",
			volume.ErrUnavailable, id, m.Version, m.Name)
	}
	return m, nil
}

// writeMeta writes m to path durably.
func writeMeta(path string, m meta) error {
	if err := atomicfile.WriteJSON(path, m); err != nil {
		return fmt.Errorf("%w: write metadata: %w", volume.ErrUnavailable, err)
	}
	return nil
}

func removeIfExists(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("%w: sync %s: %w", volume.ErrUnavailable, filepath.Base(path), err)
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: sync %s: %w", volume.ErrUnavailable, filepath.Base(path), err)
	}
	return nil
}

func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("%w: sync directory: %w", volume.ErrUnavailable, err)
	}
	return nil
}

// lockVolume checks id, locks it and reads its metadata. A missing volume
// gives ErrNotFound. The caller calls unlock when err is nil.
func (p *Provider) lockVolume(ctx context.Context, id string) (m meta, unlock func(), err error) {
	unlock, err = p.lockID(ctx, id)
	if err != nil {
		return meta{}, nil, err
	}
	m, err = p.meta(id)
	if err != nil {
		unlock()
		return meta{}, nil, err
	}
	return m, unlock, nil
}

// lockID checks id and locks it, for operations that succeed on a missing
// volume. The caller calls unlock when err is nil.
func (p *Provider) lockID(ctx context.Context, id string) (unlock func(), err error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkID(id); err != nil {
		return nil, err
	}
	return p.locks.Lock(ctx, id)
}
