package image

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/stowage/stowage/plugins/volume"
)

// format is the kind of an image archive.
type format int

const (
	formatRootfs format = iota // a plain rootfs tarball: one layer
	formatDocker               // a `docker save` archive: manifest.json
	formatOCI                  // an OCI image layout: oci-layout and index.json
)

func (f format) String() string {
	return [...]string{"rootfs tarball", "docker save archive", "OCI image layout"}[f]
}

// accepted says which formats Import reads.
const accepted = "accepted are a rootfs tarball (uncompressed or gzip), a `docker save` archive, and an OCI image layout (directory or tar)"

// refNameAnnotation names an image in an OCI layout's index.
const refNameAnnotation = "org.opencontainers.image.ref.name"

// Import imports the image at path and records it as name (NAME[:TAG]).
// path is a rootfs tarball (uncompressed or gzip), a `docker save` archive
// or an OCI image layout, a directory or a tar; the format is detected by
// content. Another format is ErrInvalid; so is a layer with an entry that
// would be written outside it. A name in use by an image with another ID is
// ErrExists; importing the same image again is a no-op. ctx stops the
// import between layer entries.
func (s *Store) Import(ctx context.Context, path, name string) (Image, error) {
	n, err := ParseName(name)
	if err != nil {
		return Image{}, err
	}
	img, err := s.importPath(ctx, path, n)
	if err != nil {
		return Image{}, fmt.Errorf("import %s: %w", path, err)
	}
	s.log.Info("imported image", "op", "import", "image", img.Name, "id", img.ID, "layers", len(img.Layers))
	return img, nil
}

func (s *Store) importPath(ctx context.Context, p, n string) (Image, error) {
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return Image{}, fmt.Errorf("%w: no such file or directory", volume.ErrNotFound)
	}
	if err != nil {
		return Image{}, err
	}
	if fi.IsDir() {
		if _, err := os.Stat(filepath.Join(p, "oci-layout")); err != nil {
			return Image{}, fmt.Errorf("%w: a directory without oci-layout; %s", volume.ErrInvalid, accepted)
		}
		return s.importOCI(ctx, p, n)
	}
	f, gz, err := detect(p)
	if err != nil {
		return Image{}, err
	}
	if f == formatRootfs {
		return s.importRootfs(ctx, p, n)
	}
	if f == formatDocker {
		if gz {
			// The docker save reader seeks in the archive: decompress it first.
			tmp, err := s.gunzip(ctx, p)
			if err != nil {
				return Image{}, err
			}
			defer os.Remove(tmp)
			p = tmp
		}
		return s.importDocker(ctx, p, n)
	}
	dir, err := os.MkdirTemp(s.tmpDir(), "oci-")
	if err != nil {
		return Image{}, err
	}
	defer removeAll(dir)
	if err := s.extractFile(ctx, p, dir); err != nil {
		return Image{}, err
	}
	return s.importOCI(ctx, dir, n)
}

// openArchive opens a file, decompressing it when it is gzip.
func openArchive(p string) (io.Reader, func() error, bool, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, false, err
	}
	br := bufio.NewReader(f)
	magic, _ := br.Peek(2)
	if !bytes.Equal(magic, []byte{0x1f, 0x8b}) {
		return br, f.Close, false, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		f.Close()
		return nil, nil, false, fmt.Errorf("%w: bad gzip: %w", volume.ErrInvalid, err)
	}
	return zr, f.Close, true, nil
}

// detect reads the headers of the archive at p and says which format it
// is, and whether it is gzip-compressed.
func detect(p string) (format, bool, error) {
	r, closeFn, gz, err := openArchive(p)
	if err != nil {
		return 0, false, err
	}
	defer closeFn()
	return detectTar(r, gz)
}

func detectTar(r io.Reader, gz bool) (format, bool, error) {
	tr := tar.NewReader(r)
	seen := map[string]bool{}
	entries := 0
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if entries == 0 {
				return 0, false, fmt.Errorf("%w: not a tar archive; %s", volume.ErrInvalid, accepted)
			}
			return 0, false, fmt.Errorf("%w: read archive: %w", volume.ErrInvalid, err)
		}
		entries++
		if hdr.Typeflag == tar.TypeReg {
			seen[path.Clean(strings.TrimPrefix(hdr.Name, "./"))] = true
		}
	}
	switch {
	case entries == 0:
		return 0, false, fmt.Errorf("%w: empty archive; %s", volume.ErrInvalid, accepted)
	case seen["manifest.json"]:
		return formatDocker, gz, nil
	case seen["oci-layout"] && seen["index.json"]:
		return formatOCI, gz, nil
	}
	return formatRootfs, gz, nil
}

// gunzip writes the decompressed file p into the store's temporary
// directory and returns the new file's path.
func (s *Store) gunzip(ctx context.Context, p string) (string, error) {
	r, closeFn, _, err := openArchive(p)
	if err != nil {
		return "", err
	}
	defer closeFn()
	f, err := os.CreateTemp(s.tmpDir(), "archive-*.tar")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(f, ctxReader{ctx, r})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("decompress archive: %w", err)
	}
	return f.Name(), nil
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// extractFile safely extracts the (possibly gzip) tar p into dir.
func (s *Store) extractFile(ctx context.Context, p, dir string) error {
	r, closeFn, _, err := openArchive(p)
	if err != nil {
		return err
	}
	defer closeFn()
	return extract(ctx, r, dir, s.log)
}

// importRootfs imports a plain rootfs tarball as a one-layer image.
func (s *Store) importRootfs(ctx context.Context, p, n string) (Image, error) {
	r, closeFn, _, err := openArchive(p)
	if err != nil {
		return Image{}, err
	}
	defer closeFn()
	id, err := s.AddLayer(ctx, r)
	if err != nil {
		return Image{}, err
	}
	layers := []string{id}
	img := Image{
		Name:    n,
		ID:      digestOf([]byte(strings.Join(layers, "\n"))),
		Layers:  layers,
		Config:  Config{Env: []string{defaultPath}, Cmd: []string{"/bin/sh"}},
		Created: time.Now().UTC(),
	}
	return s.record(img, layers)
}

// importDocker imports from the `docker save` archive p. An archive of
// several images must hold one tagged n.
func (s *Store) importDocker(ctx context.Context, p, n string) (Image, error) {
	opener := func() (io.ReadCloser, error) { return os.Open(p) }
	m, err := tarball.LoadManifest(opener)
	if err != nil {
		return Image{}, fmt.Errorf("%w: read manifest.json: %w", volume.ErrInvalid, err)
	}
	if len(m) == 0 {
		return Image{}, fmt.Errorf("%w: manifest.json lists no image", volume.ErrInvalid)
	}
	var tag *name.Tag
	if len(m) > 1 {
		tag, err = pickTag(m, n)
		if err != nil {
			return Image{}, err
		}
	}
	img, err := tarball.Image(opener, tag)
	if err != nil {
		return Image{}, fmt.Errorf("%w: read docker save archive: %w", volume.ErrInvalid, err)
	}
	return s.importV1(ctx, img, n)
}

// pickTag finds n among the tags of a `docker save` archive of several
// images.
func pickTag(m tarball.Manifest, n string) (*name.Tag, error) {
	want, err := name.NewTag(n)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", volume.ErrInvalid, err)
	}
	var tags []string
	for _, d := range m {
		for _, t := range d.RepoTags {
			tags = append(tags, t)
			if got, err := name.NewTag(t); err == nil && got.Name() == want.Name() {
				return &got, nil
			}
		}
	}
	return nil, fmt.Errorf("%w: the archive holds %d images and none is tagged %s (tags: %s)", volume.ErrInvalid, len(m), n, strings.Join(tags, ", "))
}

// importOCI imports from the OCI image layout directory dir.
func (s *Store) importOCI(ctx context.Context, dir, n string) (Image, error) {
	lp, err := layout.FromPath(dir)
	if err != nil {
		return Image{}, fmt.Errorf("%w: read OCI layout: %w", volume.ErrInvalid, err)
	}
	idx, err := lp.ImageIndex()
	if err != nil {
		return Image{}, fmt.Errorf("%w: read OCI layout: %w", volume.ErrInvalid, err)
	}
	img, err := pickImage(idx, n, 0)
	if err != nil {
		return Image{}, err
	}
	return s.importV1(ctx, img, n)
}

// pickImage chooses the image of an index: the only one, else the one
// whose ref name annotation is n or n's tag, else the one for this
// platform. Nested indexes are followed.
func pickImage(idx v1.ImageIndex, n string, depth int) (v1.Image, error) {
	if depth > 4 {
		return nil, fmt.Errorf("%w: OCI indexes nested too deep", volume.ErrInvalid)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("%w: read OCI index: %w", volume.ErrInvalid, err)
	}
	var cands []v1.Descriptor
	for _, d := range im.Manifests {
		if d.MediaType.IsImage() || d.MediaType.IsIndex() {
			cands = append(cands, d)
		}
	}
	d, err := chooseDescriptor(cands, n)
	if err != nil {
		return nil, err
	}
	if d.MediaType.IsIndex() {
		child, err := idx.ImageIndex(d.Digest)
		if err != nil {
			return nil, fmt.Errorf("%w: read OCI index %s: %w", volume.ErrInvalid, d.Digest, err)
		}
		return pickImage(child, n, depth+1)
	}
	img, err := idx.Image(d.Digest)
	if err != nil {
		return nil, fmt.Errorf("%w: read OCI image %s: %w", volume.ErrInvalid, d.Digest, err)
	}
	return img, nil
}

func chooseDescriptor(cands []v1.Descriptor, n string) (v1.Descriptor, error) {
	if len(cands) == 1 {
		return cands[0], nil
	}
	if len(cands) == 0 {
		return v1.Descriptor{}, fmt.Errorf("%w: the OCI index lists no image", volume.ErrInvalid)
	}
	_, tag, _ := strings.Cut(n, ":")
	for _, d := range cands {
		if ref := d.Annotations[refNameAnnotation]; ref == n || ref == tag {
			return d, nil
		}
	}
	for _, d := range cands {
		if p := d.Platform; p != nil && p.OS == "linux" && p.Architecture == runtime.GOARCH {
			return d, nil
		}
	}
	return v1.Descriptor{}, fmt.Errorf("%w: the OCI index lists %d images, none named %s (annotation %s) or for linux/%s",
		volume.ErrInvalid, len(cands), n, refNameAnnotation, runtime.GOARCH)
}

// importV1 adds the layers of img that the store lacks and records it.
func (s *Store) importV1(ctx context.Context, img v1.Image, n string) (Image, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return Image{}, fmt.Errorf("%w: read image config: %w", volume.ErrInvalid, err)
	}
	id, err := img.ConfigName()
	if err != nil {
		return Image{}, fmt.Errorf("%w: read image config: %w", volume.ErrInvalid, err)
	}
	ls, err := img.Layers()
	if err != nil {
		return Image{}, fmt.Errorf("%w: read layers: %w", volume.ErrInvalid, err)
	}
	var layers, added []string
	rec := Image{Name: n, ID: id.String()}
	for i, l := range ls {
		want, err := l.DiffID()
		if err != nil {
			return Image{}, s.abandon(added, fmt.Errorf("%w: layer %d: %w", volume.ErrInvalid, i, err))
		}
		if _, err := s.layerDir(want.String()); err == nil {
			layers = append(layers, want.String())
			continue
		}
		got, err := s.addV1Layer(ctx, l)
		if got != "" {
			added = append(added, got)
		}
		if err != nil {
			return Image{}, s.abandon(added, fmt.Errorf("layer %d: %w", i, err))
		}
		if got != want.String() {
			return Image{}, s.abandon(added, fmt.Errorf("%w: layer %d has diff ID %s, the image says %s", volume.ErrInvalid, i, got, want))
		}
		layers = append(layers, got)
	}
	rec.Config = Config{
		Env:        cf.Config.Env,
		Entrypoint: cf.Config.Entrypoint,
		Cmd:        cf.Config.Cmd,
		WorkingDir: cf.Config.WorkingDir,
		User:       cf.Config.User,
	}
	rec.Created = cf.Created.UTC()
	if rec.Created.IsZero() {
		rec.Created = time.Now().UTC()
	}
	rec.Layers = layers
	return s.record(rec, added)
}

func (s *Store) addV1Layer(ctx context.Context, l v1.Layer) (string, error) {
	rc, err := l.Uncompressed()
	if err != nil {
		return "", fmt.Errorf("%w: open layer: %w", volume.ErrInvalid, err)
	}
	id, err := s.AddLayer(ctx, rc)
	if cerr := rc.Close(); err == nil && cerr != nil {
		return id, fmt.Errorf("%w: read layer: %w", volume.ErrInvalid, cerr)
	}
	return id, err
}

// record stores img; on failure it drops the layers this import added that
// no image uses.
func (s *Store) record(img Image, added []string) (Image, error) {
	out, err := s.put(img)
	if err != nil {
		return Image{}, s.abandon(added, err)
	}
	return out, nil
}

// abandon drops the layers an import added that no image uses, and
// returns err with any error of doing so.
func (s *Store) abandon(added []string, err error) error {
	if len(added) == 0 {
		return err
	}
	unlock, lerr := s.lock()
	if lerr != nil {
		return errors.Join(err, lerr)
	}
	defer unlock()
	return errors.Join(err, s.dropUnused(added, "import"))
}
