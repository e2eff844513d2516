package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/volume"
)

func TestExtractRejects(t *testing.T) {
	tests := []struct {
		name    string
		entries []entry
		entry   string // named in the error
	}{
		{"dotdot", []entry{file("../x", "x")}, "../x"},
		{"absolute", []entry{file("/etc/x", "x")}, "/etc/x"},
		{"dotdot inside", []entry{dir("a/"), file("a/../../x", "x")}, "a/../../x"},
		{"symlink to root", []entry{symlink("l", "/"), file("l/etc/x", "x")}, "l/etc/x"},
		{"symlink up", []entry{symlink("l", "../.."), file("l/x", "x")}, "l/x"},
		{"nested symlink up", []entry{dir("d/"), symlink("d/l", "../.."), dir("d/l/x/")}, "d/l/x/"},
		{"symlink chain up", []entry{symlink("a", "b"), symlink("b", "c/../.."), file("a/x", "x")}, "a/x"},
		{"symlink loop", []entry{symlink("a", "b"), symlink("b", "a"), file("a/x", "x")}, "a/x"},
		{"hard link up", []entry{hardlink("h", "../../x")}, "h"},
		{"hard link absolute", []entry{hardlink("h", "/etc/passwd")}, "h"},
		{"hard link through symlink", []entry{symlink("l", "/etc"), hardlink("h", "l/passwd")}, "h"},
		{"hard link to missing", []entry{hardlink("h", "nothere")}, "h"},
		{"hard link to directory", []entry{dir("d/"), hardlink("h", "d")}, "h"},
		{"through a file", []entry{file("f", "x"), file("f/x", "x")}, "f/x"},
		{"whiteout of nothing", []entry{file(".wh.", "")}, ".wh."},
		{"root not a dir", []entry{file(".", "")}, "."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newStore(t)
			outside := filepath.Dir(s.root)
			before := tree(t, outside)
			_, err := s.AddLayer(t.Context(), bytes.NewReader(mktar(t, tt.entries...)))
			if !errors.Is(err, volume.ErrInvalid) {
				t.Fatalf("AddLayer: %v, want ErrInvalid", err)
			}
			contains(t, err.Error(), `"`+tt.entry+`"`)
			for _, d := range []string{s.tmpDir(), s.layersDir()} {
				if got := tree(t, d); len(got) != 0 {
					t.Errorf("%s holds %v after a failed import", d, got)
				}
			}
			if after := tree(t, outside); !slices.Equal(before, after) {
				t.Errorf("outside the store: %v, was %v", after, before)
			}
		})
	}
}

func TestExtract(t *testing.T) {
	mtime := time.Date(2021, 3, 4, 5, 6, 7, 0, time.UTC)
	data := mktar(t,
		entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "./", Mode: 0o755}},
		dir("usr/lib/"),
		symlink("lib", "usr/lib"),
		file("lib/libc.so", "libc"),
		symlink("etc", "/etc"),
		file("etc", "replaces the symlink"),
		file("a/b/c", "parents made"),
		hardlink("a/hard", "lib/libc.so"),
		entry{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Devmajor: 1, Devminor: 3, Mode: 0o666}},
		entry{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda", Devmajor: 8, Mode: 0o660}},
		entry{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "fifo", Mode: 0o640}},
		entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/su", Mode: 0o4755, ModTime: mtime}, body: "su"},
		entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "tmp/", Mode: 0o1777, ModTime: mtime}},
		entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "ro/", Mode: 0o555, ModTime: mtime}},
		file("ro/f", "in a read-only dir"),
		symlink("dangling", "/nowhere"),
		file(".wh..wh..plnk/x", ""),
	)
	s, log := newStore(t)
	id, err := s.AddLayer(t.Context(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if want := "sha256:" + hex.EncodeToString(sum[:]); id != want {
		t.Errorf("diff ID %s, want %s", id, want)
	}
	root := filepath.Join(s.layersDir(), id[len("sha256:"):])
	want := []string{"a", "a/b", "a/b/c", "a/hard", "bin", "bin/su", "dangling", "dev", "etc", "fifo", "lib",
		"ro", "ro/f", "tmp", "usr", "usr/lib", "usr/lib/libc.so"}
	if got := tree(t, root); !slices.Equal(got, want) {
		t.Errorf("layer holds %v, want %v", got, want)
	}
	if got := readFile(t, filepath.Join(root, "etc")); got != "replaces the symlink" {
		t.Errorf("etc = %q", got)
	}
	a, _ := os.Stat(filepath.Join(root, "a/hard"))
	b, _ := os.Stat(filepath.Join(root, "usr/lib/libc.so"))
	if !os.SameFile(a, b) {
		t.Error("a/hard is not a hard link of usr/lib/libc.so")
	}
	modes := map[string]fs.FileMode{
		"":       fs.ModeDir | 0o755,
		"bin/su": fs.ModeSetuid | 0o755,
		"tmp":    fs.ModeDir | fs.ModeSticky | 0o777,
		"ro":     fs.ModeDir | 0o555,
		"fifo":   fs.ModeNamedPipe | 0o640,
		"lib":    fs.ModeSymlink | 0o777,
	}
	for p, m := range modes {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != m {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode(), m)
		}
	}
	for _, p := range []string{"bin/su", "tmp", "ro"} {
		fi, _ := os.Lstat(filepath.Join(root, p))
		if !fi.ModTime().Equal(mtime) {
			t.Errorf("%s: mtime %v, want %v", p, fi.ModTime(), mtime)
		}
	}
	contains(t, log.String(), "skipped device node")
	contains(t, log.String(), "dev/sda")
	var rec layerRecord
	if err := readJSON(root+".json", &rec); err != nil {
		t.Fatal(err)
	}
	if rec != (layerRecord{Version: 1, DiffID: id, Size: int64(len(data))}) {
		t.Errorf("layer record %+v", rec)
	}

	// Idempotent: the same layer again keeps the one directory.
	again, err := s.AddLayer(t.Context(), bytes.NewReader(data))
	if err != nil || again != id {
		t.Fatalf("AddLayer again: %s, %v", again, err)
	}
	if got := tree(t, s.tmpDir()); len(got) != 0 {
		t.Errorf("tmp holds %v", got)
	}
}

func TestExtractCanceled(t *testing.T) {
	s, _ := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.AddLayer(ctx, bytes.NewReader(mktar(t, file("x", "x"))))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("AddLayer: %v, want context.Canceled", err)
	}
	if got := tree(t, s.tmpDir()); len(got) != 0 {
		t.Errorf("tmp holds %v", got)
	}
}

// FuzzExtract extracts arbitrary bytes as a layer and checks that nothing
// is written beside the layer directory. Run it with a short
// -fuzzminimizetime (e.g. 1s): coverage of the file system calls varies a
// little between runs, which keeps the default minimisation busy.
func FuzzExtract(f *testing.F) {
	seeds := [][]entry{
		{file("../x", "x")},
		{symlink("l", "../.."), file("l/x", "x")},
		{symlink("l", "/"), file("l/tmp/x", "x")},
		{dir("d/"), symlink("d/l", ".."), symlink("d/m", "l/.."), file("d/m/x", "x")},
		{hardlink("h", "../x"), file(".wh.x", ""), file("d/.wh..wh..opq", "")},
		{dir("a/"), file("a/f", "x"), hardlink("a/g", "a/f"), symlink("a/s", "f")},
	}
	for _, s := range seeds {
		f.Add(mktar(f, s...))
	}
	log := slog.New(slog.DiscardHandler)
	f.Fuzz(func(t *testing.T, data []byte) {
		parent := t.TempDir()
		root := filepath.Join(parent, "root")
		if err := os.Mkdir(root, 0o700); err != nil {
			t.Fatal(err)
		}
		_ = extract(t.Context(), bytes.NewReader(data), root, log)
		ents, err := os.ReadDir(parent)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "root" {
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			t.Errorf("beside the layer: %v", names)
		}
		if err := removeAll(root); err != nil {
			t.Fatal(err)
		}
	})
}
