package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/volume"
)

// testLayer returns a layer of the given entries.
func testLayer(t *testing.T, entries ...entry) v1.Layer {
	t.Helper()
	data := mktar(t, entries...)
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil })
	if err != nil {
		t.Fatal(err)
	}
	return l
}

var testConfig = v1.Config{
	Env:        []string{"PATH=/bin", "A=1"},
	Entrypoint: []string{"/bin/app"},
	Cmd:        []string{"--serve"},
	WorkingDir: "/srv",
	User:       "1000:1000",
}

// testImage returns an image of two layers, file etc/os ("one" plus tag)
// below bin/app, with testConfig.
func testImage(t *testing.T, tag string) v1.Image {
	t.Helper()
	img, err := mutate.AppendLayers(empty.Image,
		testLayer(t, dir("etc/"), file("etc/os", "one"+tag)),
		testLayer(t, dir("bin/"), file("bin/app", "two")))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.Config = testConfig
	cf.Created = v1.Time{Time: time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// writeDocker writes a `docker save` archive of imgs by tag.
func writeDocker(t *testing.T, imgs map[string]v1.Image) string {
	t.Helper()
	m := map[name.Tag]v1.Image{}
	for tag, img := range imgs {
		nt, err := name.NewTag(tag)
		if err != nil {
			t.Fatal(err)
		}
		m[nt] = img
	}
	p := filepath.Join(t.TempDir(), "save.tar")
	if err := tarball.MultiWriteToFile(p, m); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeOCI writes an OCI layout of imgs, each annotated with its ref name.
func writeOCI(t *testing.T, imgs map[string]v1.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "oci")
	lp, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for ref, img := range imgs {
		if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{refNameAnnotation: ref})); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// tarDir writes a tar of the files under dir, optionally gzip.
func tarDir(t *testing.T, dir string, gz bool) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dir.tar")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var w io.Writer = f
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(f)
		w = zw
	}
	tw := tar.NewWriter(w)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		hdr, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		hdr.Name, _ = filepath.Rel(dir, p)
		if d.IsDir() {
			hdr.Name += "/"
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			_, err = tw.Write(b)
			return err
		}
		return nil
	})
	if err == nil {
		err = tw.Close()
	}
	if err == nil && zw != nil {
		err = zw.Close()
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// gzipFile writes a gzip copy of p.
func gzipFile(t *testing.T, p string) string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	zw.Close()
	out := filepath.Join(t.TempDir(), filepath.Base(p)+".gz")
	if err := os.WriteFile(out, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return out
}

func writeBytes(t *testing.T, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "archive")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDetect(t *testing.T) {
	img := testImage(t, "")
	rootfs := writeBytes(t, mktar(t, file("etc/os", "x")))
	docker := writeDocker(t, map[string]v1.Image{"a:1": img})
	oci := tarDir(t, writeOCI(t, map[string]v1.Image{"1": img}), false)
	tests := []struct {
		name string
		path string
		want format
		gz   bool
		err  string // wanted in an ErrInvalid
	}{
		{"rootfs", rootfs, formatRootfs, false, ""},
		{"rootfs gzip", gzipFile(t, rootfs), formatRootfs, true, ""},
		{"docker save", docker, formatDocker, false, ""},
		{"docker save gzip", gzipFile(t, docker), formatDocker, true, ""},
		{"oci tar", oci, formatOCI, false, ""},
		{"oci tar gzip", gzipFile(t, oci), formatOCI, true, ""},
		{"not a tar", writeBytes(t, bytes.Repeat([]byte("junk"), 300)), 0, false, "not a tar archive; accepted are"},
		{"empty tar", writeBytes(t, mktar(t)), 0, false, "empty archive"},
		{"bad gzip", writeBytes(t, []byte{0x1f, 0x8b, 0, 0}), 0, false, "bad gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, gz, err := detect(tt.path)
			if tt.err != "" {
				if !errors.Is(err, volume.ErrInvalid) {
					t.Fatalf("detect: %v, want ErrInvalid", err)
				}
				contains(t, err.Error(), tt.err)
				return
			}
			if err != nil || got != tt.want || gz != tt.gz {
				t.Errorf("detect: %v gzip %v, %v; want %v gzip %v", got, gz, err, tt.want, tt.gz)
			}
		})
	}
}

// checkImported checks an import of testImage(tag).
func checkImported(t *testing.T, s *Store, got Image, name, tag string) {
	t.Helper()
	want := testImage(t, tag)
	id, _ := want.ConfigName()
	cf, _ := want.ConfigFile()
	var diffIDs []string
	for _, d := range cf.RootFS.DiffIDs {
		diffIDs = append(diffIDs, d.String())
	}
	if got.Name != name || got.ID != id.String() || !slices.Equal(got.Layers, diffIDs) {
		t.Errorf("imported %s %s %v, want %s %s %v", got.Name, got.ID, got.Layers, name, id, diffIDs)
	}
	wantCfg := Config{Env: testConfig.Env, Entrypoint: testConfig.Entrypoint, Cmd: testConfig.Cmd,
		WorkingDir: testConfig.WorkingDir, User: testConfig.User}
	if !slices.Equal(got.Config.Env, wantCfg.Env) || !slices.Equal(got.Config.Entrypoint, wantCfg.Entrypoint) ||
		!slices.Equal(got.Config.Cmd, wantCfg.Cmd) || got.Config.WorkingDir != wantCfg.WorkingDir || got.Config.User != wantCfg.User {
		t.Errorf("config %+v, want %+v", got.Config, wantCfg)
	}
	if !got.Created.Equal(cf.Created.Time) {
		t.Errorf("created %v, want %v", got.Created, cf.Created.Time)
	}
	stored, err := s.Get(name)
	if err != nil || stored.ID != got.ID {
		t.Errorf("Get(%s): %+v, %v", name, stored, err)
	}
	dirs, err := s.LayerDirs(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs) != 2 || readFile(t, filepath.Join(dirs[0], "bin/app")) != "two" ||
		readFile(t, filepath.Join(dirs[1], "etc/os")) != "one"+tag {
		t.Errorf("LayerDirs %v: want the bin/app layer first", dirs)
	}
}

func TestImport(t *testing.T) {
	img := testImage(t, "")
	docker := writeDocker(t, map[string]v1.Image{"a:1": img})
	ociDir := writeOCI(t, map[string]v1.Image{"1": img})
	tests := []struct {
		name string
		path string
	}{
		{"docker save", docker},
		{"docker save gzip", gzipFile(t, docker)},
		{"oci layout", ociDir},
		{"oci tar", tarDir(t, ociDir, false)},
		{"oci tar gzip", tarDir(t, ociDir, true)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			got, err := s.Import(t.Context(), tt.path, "app")
			if err != nil {
				t.Fatal(err)
			}
			checkImported(t, s, got, "app:latest", "")
			again, err := s.Import(t.Context(), tt.path, "app:latest")
			if err != nil || again.ID != got.ID {
				t.Errorf("import again: %+v, %v", again, err)
			}
			other := writeDocker(t, map[string]v1.Image{"b:1": testImage(t, "other")})
			if _, err := s.Import(t.Context(), other, "app"); !errors.Is(err, volume.ErrExists) {
				t.Errorf("import of another image as app: %v, want ErrExists", err)
			}
			if got := tree(t, s.tmpDir()); len(got) != 0 {
				t.Errorf("tmp holds %v", got)
			}
			// The other image's layer that app does not share is gone.
			if ents, _ := os.ReadDir(s.layersDir()); len(ents) != 4 {
				t.Errorf("%d entries in the layer directory, want 2 layers", len(ents))
			}
		})
	}
}

func TestImportPicksImage(t *testing.T) {
	imgs := map[string]v1.Image{"x:v1": testImage(t, "v1"), "x:v2": testImage(t, "v2")}
	oci := map[string]v1.Image{"v1": imgs["x:v1"], "x:v2": imgs["x:v2"]}
	for _, tt := range []struct {
		name string
		path string
	}{
		{"docker save", writeDocker(t, imgs)},
		{"oci layout", writeOCI(t, oci)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			for _, tag := range []string{"v1", "v2"} {
				got, err := s.Import(t.Context(), tt.path, "x:"+tag)
				if err != nil {
					t.Fatal(err)
				}
				checkImported(t, s, got, "x:"+tag, tag)
			}
			_, err := s.Import(t.Context(), tt.path, "x:v3")
			if !errors.Is(err, volume.ErrInvalid) {
				t.Fatalf("import of x:v3: %v, want ErrInvalid", err)
			}
			contains(t, err.Error(), "x:v3")
		})
	}
}

func TestImportRejects(t *testing.T) {
	bad, err := mutate.AppendLayers(empty.Image,
		testLayer(t, file("good", "g")),
		testLayer(t, file("ok", "o"), file("../escape", "e")))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		path  string
		class error
		text  string
	}{
		{"escaping layer", writeDocker(t, map[string]v1.Image{"bad:1": bad}), volume.ErrInvalid, `"../escape"`},
		{"plain directory", t.TempDir(), volume.ErrInvalid, "accepted are"},
		{"not a tar", writeBytes(t, []byte("hello")), volume.ErrInvalid, "accepted are"},
		{"missing", filepath.Join(t.TempDir(), "nothere"), volume.ErrNotFound, "nothere"},
		{"broken oci layout", writeBytes(t, mktar(t, file("oci-layout", "{"), file("index.json", "{"))), volume.ErrInvalid, "OCI"},
		{"broken docker save", writeBytes(t, mktar(t, file("manifest.json", "[]"))), volume.ErrInvalid, "manifest.json lists no image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			_, err := s.Import(t.Context(), tt.path, "bad")
			if !errors.Is(err, tt.class) {
				t.Fatalf("Import: %v, want %v", err, tt.class)
			}
			contains(t, err.Error(), tt.text)
			for _, d := range []string{s.tmpDir(), s.layersDir(), s.imagesDir()} {
				if got := tree(t, d); len(got) != 0 {
					t.Errorf("%s holds %v after a failed import", d, got)
				}
			}
		})
	}
	if _, err := (&Store{}).Import(t.Context(), "x", "Bad Name"); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("Import with a bad name: %v", err)
	}
}

func TestImportBusybox(t *testing.T) {
	testenv.Require(t, "busybox")
	bb, err := testenv.StaticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	body, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	rootfs := writeBytes(t, mktar(t,
		dir("bin/"),
		entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755}, body: string(body)},
		symlink("bin/sh", "busybox"),
		dir("etc/"),
		file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
	))
	s, _ := newStore(t)
	img, err := s.Import(t.Context(), gzipFile(t, rootfs), "busybox")
	if err != nil {
		t.Fatal(err)
	}
	if img.Name != "busybox:latest" || len(img.Layers) != 1 || img.ID != digestOf([]byte(img.Layers[0])) {
		t.Errorf("imported %+v", img)
	}
	if !slices.Equal(img.Config.Env, []string{defaultPath}) || !slices.Equal(img.Config.Cmd, []string{"/bin/sh"}) {
		t.Errorf("config %+v", img.Config)
	}
	dirs, err := s.LayerDirs(img)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dirs[0], "bin/sh"))
	if err != nil || fi.Size() != int64(len(body)) || fi.Mode() != 0o755 {
		t.Errorf("bin/sh: %v, %v", fi, err)
	}
	if again, err := s.Import(t.Context(), rootfs, "busybox"); err != nil || again.ID != img.ID {
		t.Errorf("import of the uncompressed tar: %+v, %v; want the same image", again, err)
	}
}
