package agent

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/stowage/stowage/migrate/manifest"
)

// TestCommitInline commits small files inline, several requests in flight:
// each takes its place (replacing a file or a directory in the way) with
// its metadata, and the answers come in order, a failed request's too.
func TestCommitInline(t *testing.T) {
	c := startSession(t)
	root := t.TempDir()
	if err := c.Hello(root); err != nil {
		t.Fatal(err)
	}
	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	if err := c.Apply([]manifest.Entry{{Path: "d", Type: manifest.Dir, Mode: 0o755, UID: uid, GID: gid}}); err != nil {
		t.Fatal(err)
	}
	// In the way: a file with other content and a directory with content.
	if err := os.WriteFile(filepath.Join(root, "d", "f3"), []byte("old content"), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "d", "f5", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.Prepare(); err != nil {
		t.Fatal(err)
	}
	const n = 40
	var batches [][]Commit
	for b := range 4 {
		var cs []Commit
		for i := b * n / 4; i < (b+1)*n/4; i++ {
			data := []byte(fmt.Sprintf("content of file %d", i))
			e := manifest.Entry{Path: fmt.Sprintf("d/f%d", i), Type: manifest.Regular, Mode: 0o640 | uint32(i%2)*0o4000,
				UID: uid, GID: gid, Size: int64(len(data)), MtimeNS: 1_600_000_000_000_000_000 + int64(i)}
			if i%3 == 0 {
				e.Xattrs = map[string][]byte{"user.i": []byte(fmt.Sprint(i))}
			}
			if i == 7 {
				// Size beyond the data: the rest is a hole.
				e.Size = 1 << 16
			}
			cs = append(cs, Commit{Temp: fmt.Sprintf("f%d", i), Entry: e, Inline: true, Data: data})
		}
		batches = append(batches, cs)
	}
	bad := []Commit{{Temp: "../x", Entry: manifest.Entry{Path: "d/x", Type: manifest.Regular}, Inline: true}}
	// The answers are read while later requests are sent, as the sender
	// of a migration does: the agent writes an answer before it reads on.
	waits := make(chan func() error, 2)
	go func() {
		defer close(waits)
		for i, cs := range batches {
			waits <- c.CommitAsync(cs)
			if i == 1 {
				waits <- c.CommitAsync(bad)
			}
		}
	}()
	i := -1
	for wait := range waits {
		i++
		err := wait()
		if i == 2 {
			if err == nil || !errors.Is(err, ErrAgent) {
				t.Errorf("commit with a bad temporary name: %v, want an error of the agent", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("commit request %d: %v", i, err)
		}
	}
	m, err := c.Manifest(true)
	if err != nil {
		t.Fatal(err)
	}
	idx := m.Index()
	for _, cs := range batches {
		for _, cm := range cs {
			want := cm.Entry
			got := idx[want.Path]
			if got == nil {
				t.Errorf("%s missing", want.Path)
				continue
			}
			if got.Type != manifest.Regular || got.Size != want.Size || got.Mode != want.Mode || got.MtimeNS != want.MtimeNS ||
				len(got.Xattrs) != len(want.Xattrs) || string(got.Xattrs["user.i"]) != string(want.Xattrs["user.i"]) {
				t.Errorf("%s = %+v, want %+v", want.Path, got, want)
			}
			content := append(cm.Data, make([]byte, want.Size-int64(len(cm.Data)))...)
			h := sha256.Sum256(content)
			if got.SHA256 != hex.EncodeToString(h[:]) {
				t.Errorf("%s: content hash %s, want that of %q", want.Path, got.SHA256, cm.Data)
			}
		}
	}
	if _, ok := idx["d/f5/sub"]; ok {
		t.Error("the directory in the way of d/f5 is still there")
	}
	if _, ok := idx["d/x"]; ok {
		t.Error("d/x of the failed request exists")
	}
	if err := c.Finish(nil); err != nil {
		t.Fatal(err)
	}
}
