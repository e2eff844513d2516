package agent

import (
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/migrate/manifest"
)

// session runs Serve in-process and returns a client of it.
func startSession(t *testing.T) *Client {
	t.Helper()
	reqR, reqW := io.Pipe()
	resR, resW := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Serve(t.Context(), reqR, resW, Config{Log: slog.New(slog.DiscardHandler), SessionDir: t.TempDir()})
	}()
	t.Cleanup(func() {
		reqW.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return NewClient(resR, reqW)
}

func TestCheckPath(t *testing.T) {
	for _, p := range []string{".", "a", "a/b", "new\nline", "bad\xff", ".hidden", "a/..b"} {
		if err := checkPath(p); err != nil {
			t.Errorf("checkPath(%q) = %v, want nil", p, err)
		}
	}
	for _, p := range []string{"", "/etc", "..", "a/../b", "a//b", "a/", "./a", "a\x00b", TempDir, TempDir + "/f0"} {
		if err := checkPath(p); err == nil {
			t.Errorf("checkPath(%q) = nil, want an error", p)
		}
	}
}

func TestServe(t *testing.T) {
	c := startSession(t)
	if _, err := c.Manifest(false); err == nil || !strings.Contains(err.Error(), "hello") {
		t.Errorf("request before hello: %v, want an error asking for hello", err)
	}
	if _, err := c.call(&Request{Op: OpHello, Version: Version + 1, Root: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "version") {
		t.Errorf("hello with another version: %v", err)
	}
	if err := c.Hello("relative"); err == nil {
		t.Error("hello with a relative root succeeded")
	}
	root := t.TempDir()
	if err := c.Hello(root); err != nil {
		t.Fatal(err)
	}
	if c.TempPath != filepath.Join(root, TempDir) {
		t.Errorf("TempPath = %q", c.TempPath)
	}
	// A request that fails leaves the session usable.
	if err := c.Remove([]string{"../x"}); err == nil {
		t.Error("remove of ../x succeeded")
	}
	if err := c.Remove([]string{"."}); err == nil {
		t.Error("remove of the root succeeded")
	}
	if err := c.Prepare(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.TempPath, "f0"), []byte("abc"), 0o600); err != nil {
		t.Fatal(err)
	}
	file := manifest.Entry{Path: "d/file", Type: manifest.Regular, Mode: 0o640, Size: 1 << 20, MtimeNS: 1_600_000_000_123_456_789,
		UID: uint32(os.Getuid()), GID: uint32(os.Getgid()), Xattrs: map[string][]byte{"user.k": []byte("v")}}
	dir := manifest.Entry{Path: "d", Type: manifest.Dir, Mode: 0o711, MtimeNS: 1_500_000_000_000_000_001, UID: file.UID, GID: file.GID}
	if err := c.Apply([]manifest.Entry{dir, {Path: "d/l", Type: manifest.Symlink, Target: "file", UID: file.UID, GID: file.GID, MtimeNS: 7}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit([]Commit{{Temp: "f0", Entry: file}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit([]Commit{{Temp: "../f0", Entry: file}}); err == nil {
		t.Error("commit of a temporary name outside the temporary directory succeeded")
	}
	if err := c.Link([]manifest.Entry{{Path: "hl", Type: manifest.Regular, LinkTo: "d/file"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish([]manifest.Entry{{Path: ".", Type: manifest.Dir, Mode: 0o755, MtimeNS: 42, UID: file.UID, GID: file.GID}, dir}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.TempPath); !os.IsNotExist(err) {
		t.Errorf("temporary directory after finish: %v", err)
	}
	m, err := c.Manifest(true)
	if err != nil {
		t.Fatal(err)
	}
	idx := m.Index()
	got := idx["d/file"]
	if got == nil || got.Size != 1<<20 || got.Mode != 0o640 || got.MtimeNS != file.MtimeNS || string(got.Xattrs["user.k"]) != "v" {
		t.Fatalf("d/file = %+v", got)
	}
	if d := idx["d"]; d.MtimeNS != dir.MtimeNS || d.Mode != 0o711 {
		t.Errorf("d = %+v: directory metadata not set after its content", d)
	}
	if r := idx["."]; r.MtimeNS != 42 {
		t.Errorf("root mtime = %d, want 42", r.MtimeNS)
	}
	if l := idx["hl"]; l == nil || l.LinkTo != "d/file" {
		t.Errorf("hl = %+v, want a hard link to d/file", l)
	}
	if l := idx["d/l"]; l == nil || l.Target != "file" || l.MtimeNS != 7 {
		t.Errorf("d/l = %+v", l)
	}
	// The file keeps its hole: 3 bytes of data in 1 MiB.
	if got.Blocks*512 >= 1<<20 {
		t.Errorf("d/file has %d blocks: the hole was filled", got.Blocks)
	}
}
