// Package image is the container runtime's image store. It imports images
// from a plain rootfs tarball, a `docker save` archive or an OCI image
// layout, extracts their layers safely into content-addressed directories in
// overlayfs form, and keeps one JSON record per image name.
//
// Layout under the runtime root ROOT:
//
//	ROOT/images/<escaped NAME:TAG>.json   image records
//	ROOT/layers/sha256/<hex>/             an extracted layer (overlayfs form)
//	ROOT/layers/sha256/<hex>.json         the layer's metadata: diff ID, size
//	ROOT/layers/tmp/                      extractions in progress
//	ROOT/lock                             flock taken around every mutation
//
// A layer directory holds whiteouts as 0:0 character devices and opaque
// directories with the xattr trusted.overlay.opaque=y, so layer directories
// can be given to overlayfs as lower directories as they are.
package image

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/stowage/stowage/internal/atomicfile"

	"github.com/stowage/stowage/plugins/volume"
)

// recordVersion is the schema version of image and layer records.
const recordVersion = 1

// DefaultTag is the tag of a name given without one.
const DefaultTag = "latest"

// Config is the part of an image's configuration a container starts from.
type Config struct {
	Env        []string `json:"env,omitempty"`
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	WorkingDir string   `json:"working_dir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Image is a stored image.
type Image struct {
	// Name is the image's NAME:TAG.
	Name string `json:"name"`
	// ID is "sha256:<hex>" of the image config, or of the layer list for
	// an image imported from a plain rootfs tarball.
	ID string `json:"id"`
	// Layers are the layer diff IDs "sha256:<hex>", bottom first.
	Layers []string `json:"layers"`
	// Config is what a container of the image starts from.
	Config Config `json:"config"`
	// Created is when the image was built, or imported when unknown.
	Created time.Time `json:"created"`
}

// imageRecord is the file ROOT/images/<name>.json.
type imageRecord struct {
	Version int `json:"version"`
	Image
}

// layerRecord is the file ROOT/layers/sha256/<hex>.json.
type layerRecord struct {
	Version int    `json:"version"`
	DiffID  string `json:"diff_id"`
	// Size is the size of the uncompressed layer tar in bytes.
	Size int64 `json:"size"`
}

// defaultPath is the PATH of an image that does not set one.
const defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// The name rules are checked by hand: a regular expression with a bounded
// repetition such as {0,127} takes half a millisecond to compile, on the
// path of every `stow run`.

// validName reports whether n matches
// [a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)*.
func validName(n string) bool {
	for c := range strings.SplitSeq(n, "/") {
		if c == "" || !isLowerAlnum(c[0]) {
			return false
		}
		for i := 1; i < len(c); i++ {
			if !isLowerAlnum(c[i]) && !strings.ContainsRune("_.-", rune(c[i])) {
				return false
			}
		}
	}
	return true
}

// validTag reports whether t matches [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
func validTag(t string) bool {
	if t == "" || len(t) > 128 || t[0] == '.' || t[0] == '-' {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !isLowerAlnum(c) && !('A' <= c && c <= 'Z') && !strings.ContainsRune("_.-", rune(c)) {
			return false
		}
	}
	return true
}

// validHex reports whether h is 64 lowercase hex digits.
func validHex(h string) bool {
	if len(h) != 64 {
		return false
	}
	for i := 0; i < len(h); i++ {
		if !isLowerAlnum(h[i]) || h[i] > 'f' {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// ParseName normalises an image name NAME[:TAG] to NAME:TAG, the tag
// defaulting to "latest". NAME matches
// [a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)* and TAG
// [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; anything else is ErrInvalid.
func ParseName(s string) (string, error) {
	n, tag, hasTag := strings.Cut(s, ":")
	if !hasTag {
		tag = DefaultTag
	}
	if len(n) > 255 || !validName(n) {
		return "", fmt.Errorf("image name %q: %w: NAME must match [a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)*, at most 255 characters", s, volume.ErrInvalid)
	}
	if !validTag(tag) {
		return "", fmt.Errorf("image name %q: %w: TAG must match [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", s, volume.ErrInvalid)
	}
	return n + ":" + tag, nil
}

// parseDiffID checks a layer ID "sha256:<hex>" and returns the hex.
func parseDiffID(id string) (string, error) {
	h, ok := strings.CutPrefix(id, "sha256:")
	if !ok || !validHex(h) {
		return "", fmt.Errorf("layer ID %q: %w: want sha256:<64 lowercase hex digits>", id, volume.ErrInvalid)
	}
	return h, nil
}

// Store is the image store under one runtime root. Its methods are safe
// for concurrent use, also by several processes: mutations take an
// exclusive flock on ROOT/lock.
type Store struct {
	root string // the runtime root
	log  *slog.Logger
}

// Open opens the image store under the runtime root, creating
// ROOT/images and ROOT/layers as needed. A nil log discards.
func Open(root string, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{root: root, log: log}
	for _, d := range []string{s.imagesDir(), s.layersDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open image store: %w", err)
		}
	}
	return s, nil
}

func (s *Store) imagesDir() string { return filepath.Join(s.root, "images") }
func (s *Store) layersDir() string { return filepath.Join(s.root, "layers", "sha256") }
func (s *Store) tmpDir() string    { return filepath.Join(s.root, "layers", "tmp") }

func (s *Store) recordPath(name string) string {
	return filepath.Join(s.imagesDir(), url.PathEscape(name)+".json")
}

// Get returns the image of that name (NAME[:TAG]). A missing image is
// ErrNotFound.
func (s *Store) Get(name string) (Image, error) {
	n, err := ParseName(name)
	if err != nil {
		return Image{}, err
	}
	return s.get(n)
}

func (s *Store) get(name string) (Image, error) {
	var rec imageRecord
	if err := readJSON(s.recordPath(name), &rec); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return Image{}, fmt.Errorf("image %s: %w", name, volume.ErrNotFound)
		}
		return Image{}, fmt.Errorf("read image %s: %w", name, err)
	}
	return rec.Image, nil
}

// List returns every image, sorted by name.
func (s *Store) List() ([]Image, error) {
	ents, err := os.ReadDir(s.imagesDir())
	if err != nil {
		return nil, fmt.Errorf("list images: %w", err)
	}
	imgs := []Image{}
	for _, e := range ents {
		if !e.Type().IsRegular() || !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		var rec imageRecord
		if err := readJSON(filepath.Join(s.imagesDir(), e.Name()), &rec); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed meanwhile
			}
			return nil, fmt.Errorf("list images: %w", err)
		}
		imgs = append(imgs, rec.Image)
	}
	slices.SortFunc(imgs, func(a, b Image) int { return strings.Compare(a.Name, b.Name) })
	return imgs, nil
}

// Create records a new image of that name over layers that are in the
// store already (bottom first), as commit does. A name in use by an image
// with another ID is ErrExists; the same image again is a no-op. A missing
// layer is ErrNotFound.
func (s *Store) Create(name string, layers []string, cfg Config) (Image, error) {
	n, err := ParseName(name)
	if err != nil {
		return Image{}, err
	}
	img := Image{Name: n, Layers: slices.Clone(layers), Config: cfg, Created: time.Now().UTC()}
	b, err := json.Marshal(struct {
		Layers []string `json:"layers"`
		Config Config   `json:"config"`
	}{img.Layers, cfg})
	if err != nil {
		return Image{}, fmt.Errorf("create image %s: %w", n, err)
	}
	img.ID = digestOf(b)
	return s.put(img)
}

// put records img under the store lock, after checking its layers exist.
func (s *Store) put(img Image) (Image, error) {
	unlock, err := s.lock()
	if err != nil {
		return Image{}, err
	}
	defer unlock()
	if len(img.Layers) == 0 {
		return Image{}, fmt.Errorf("record image %s: %w: no layers", img.Name, volume.ErrInvalid)
	}
	for _, l := range img.Layers {
		if _, err := s.layerDir(l); err != nil {
			return Image{}, fmt.Errorf("record image %s: %w", img.Name, err)
		}
	}
	old, err := s.get(img.Name)
	switch {
	case err == nil && old.ID == img.ID:
		return old, nil
	case err == nil:
		return Image{}, fmt.Errorf("image %s: %w with ID %s; remove it first", img.Name, volume.ErrExists, shortID(old.ID))
	case !errors.Is(err, volume.ErrNotFound):
		return Image{}, err
	}
	if err := atomicfile.WriteJSON(s.recordPath(img.Name), imageRecord{Version: recordVersion, Image: img}); err != nil {
		return Image{}, fmt.Errorf("record image %s: %w", img.Name, err)
	}
	return img, nil
}

// Remove removes the image of that name and deletes those of its layers
// no other image uses. A missing image is ErrNotFound. The store does not
// know about containers: the caller makes sure none runs on the image.
func (s *Store) Remove(name string) error {
	n, err := ParseName(name)
	if err != nil {
		return err
	}
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	img, err := s.get(n)
	if err != nil {
		return err
	}
	if err := os.Remove(s.recordPath(n)); err != nil {
		return fmt.Errorf("remove image %s: %w", n, err)
	}
	s.log.Info("removed image", "op", "image-remove", "image", n)
	return s.dropUnused(img.Layers, "image-remove")
}

// dropUnused deletes those of the layers ids that no image uses. The
// caller holds the store lock.
func (s *Store) dropUnused(ids []string, op string) error {
	imgs, err := s.List()
	if err != nil {
		return err
	}
	used := map[string]bool{}
	for _, o := range imgs {
		for _, l := range o.Layers {
			used[l] = true
		}
	}
	var errs []error
	for _, l := range ids {
		if used[l] {
			continue
		}
		h, err := parseDiffID(l)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		// The metadata goes first: a layer without it is not present, and
		// a later AddLayer replaces what is left of its directory.
		for _, p := range []string{filepath.Join(s.layersDir(), h+".json"), filepath.Join(s.layersDir(), h)} {
			if err := removeAll(p); err != nil {
				errs = append(errs, fmt.Errorf("remove layer %s: %w", l, err))
			}
		}
		used[l] = true // listed twice: removed once
		s.log.Info("removed layer", "op", op, "layer", l)
	}
	return errors.Join(errs...)
}

// LayerDirs returns the extracted layer directories of img, top first, the
// order of overlayfs's lowerdir. A missing layer is ErrNotFound.
func (s *Store) LayerDirs(img Image) ([]string, error) {
	dirs := make([]string, 0, len(img.Layers))
	for i := len(img.Layers) - 1; i >= 0; i-- {
		d, err := s.layerDir(img.Layers[i])
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Name, err)
		}
		dirs = append(dirs, d)
	}
	return dirs, nil
}

// layerDir returns the directory of a present layer: its directory and
// metadata exist.
func (s *Store) layerDir(id string) (string, error) {
	if _, err := s.layerInfo(id); err != nil {
		return "", err
	}
	h, _ := parseDiffID(id)
	d := filepath.Join(s.layersDir(), h)
	if fi, err := os.Lstat(d); err != nil || !fi.IsDir() {
		return "", fmt.Errorf("layer %s: %w", id, volume.ErrNotFound)
	}
	return d, nil
}

// layerInfo reads a layer's metadata; ErrNotFound when it has none.
func (s *Store) layerInfo(id string) (layerRecord, error) {
	h, err := parseDiffID(id)
	if err != nil {
		return layerRecord{}, err
	}
	var rec layerRecord
	if err := readJSON(filepath.Join(s.layersDir(), h+".json"), &rec); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return layerRecord{}, fmt.Errorf("layer %s: %w", id, volume.ErrNotFound)
		}
		return layerRecord{}, fmt.Errorf("read layer %s: %w", id, err)
	}
	return rec, nil
}

// Size returns the total size in bytes of img's uncompressed layers.
func (s *Store) Size(img Image) (int64, error) {
	var n int64
	for _, l := range img.Layers {
		rec, err := s.layerInfo(l)
		if err != nil {
			return 0, fmt.Errorf("image %s: %w", img.Name, err)
		}
		n += rec.Size
	}
	return n, nil
}

// digestOf returns "sha256:<hex>" of b.
func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// shortID returns the first 12 hex digits of an ID "sha256:<hex>".
func shortID(id string) string {
	h := strings.TrimPrefix(id, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("decode %s: %w", path, err)
	}
	return nil
}

// removeAll removes path like os.RemoveAll, and also when an extracted
// tree holds directories without write or search permission, which stop
// a caller without root.
func removeAll(path string) error {
	if err := os.RemoveAll(path); err == nil {
		return nil
	}
	filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if d != nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
	return os.RemoveAll(path)
}
