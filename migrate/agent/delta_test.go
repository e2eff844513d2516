package agent

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stowage/stowage/migrate/manifest"
)

// TestBlocks: the checksums answer the file as it is (the cached ones only
// while it is unchanged), and a patch in place is granted only for a
// regular file with one link and the sender's size; otherwise the file is
// copied to the temporary name.
func TestBlocks(t *testing.T) {
	c := startSession(t)
	root := t.TempDir()
	path := filepath.Join(root, "f")
	content := make([]byte, 2<<20+999)
	rand.Read(content)
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := c.Hello(root); err != nil {
		t.Fatal(err)
	}
	if err := c.Prepare(); err != nil {
		t.Fatal(err)
	}
	size := int64(len(content))
	bs := manifest.BlockSize(size)
	want := func() []byte { return manifest.AppendBlockSums(nil, content, bs) }
	// The agent's walk keeps the checksums with the hash.
	if _, err := c.FreshManifest(); err != nil {
		t.Fatal(err)
	}
	sums, inPlace, err := c.Blocks("f", "t1", bs, size, false)
	if err != nil {
		t.Fatal(err)
	}
	if inPlace || !bytes.Equal(sums, want()) {
		t.Errorf("Blocks = %d bytes of checksums, in place %v; want the content's and a copy", len(sums), inPlace)
	}
	if got, err := os.ReadFile(filepath.Join(c.TempPath, "t1")); err != nil || !bytes.Equal(got, content) {
		t.Errorf("temporary copy: %d bytes, %v; want the file's content", len(got), err)
	}

	// A change that keeps size and mtime: the cached checksums are not
	// used.
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	copy(content[bs+5:], "changed on the target")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, time.Time{}, fi.ModTime()); err != nil {
		t.Fatal(err)
	}
	if sums, _, err = c.Blocks("f", "t2", bs, size, false); err != nil || !bytes.Equal(sums, want()) {
		t.Errorf("Blocks after a change: %v; want the checksums of the new content", err)
	}

	// Refused in place: a second link, another size.
	if err := os.Link(path, filepath.Join(root, "g")); err != nil {
		t.Fatal(err)
	}
	if _, inPlace, err = c.Blocks("f", "t3", bs, size, true); err != nil || inPlace {
		t.Errorf("Blocks in place of a file with two links: in place %v, %v; want a copy", inPlace, err)
	}
	if err := os.Remove(filepath.Join(root, "g")); err != nil {
		t.Fatal(err)
	}
	if _, inPlace, err = c.Blocks("f", "t4", bs, size+1, true); err != nil || inPlace {
		t.Errorf("Blocks in place for another size: in place %v, %v; want a copy", inPlace, err)
	}
	if _, err := os.Stat(filepath.Join(c.TempPath, "t4")); err != nil {
		t.Errorf("no temporary copy when in place was refused: %v", err)
	}

	if err := os.Symlink("f", filepath.Join(root, "s")); err != nil {
		t.Fatal(err)
	}
	if _, inPlace, err = c.Blocks("s", "t6", bs, size, true); err == nil {
		t.Errorf("Blocks of a symlink: in place %v, want an error", inPlace)
	}

	// Granted: no copy; what the sender writes is in the file, and the
	// next walk hashes what is there.
	if _, err := c.Manifest(true); err != nil {
		t.Fatal(err)
	}
	sums, inPlace, err = c.Blocks("f", "t5", bs, size, true)
	if err != nil || !inPlace || !bytes.Equal(sums, want()) {
		t.Fatalf("Blocks in place: in place %v, %v; want granted with the content's checksums", inPlace, err)
	}
	if _, err := os.Stat(filepath.Join(c.TempPath, "t5")); !os.IsNotExist(err) {
		t.Errorf("temporary file of a patch in place: %v, want none", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("half a patch"), 3*int64(bs)); err != nil {
		t.Fatal(err)
	}
	f.Close()
	copy(content[3*bs:], "half a patch")
	m, err := c.Manifest(true)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(content)
	if got := m.Index()["f"].SHA256; got != hex.EncodeToString(h[:]) {
		t.Errorf("hash after an interrupted patch = %s, want that of the content as it is", got)
	}
}

// TestInPlaceDropsSavedHashes: granting a patch in place removes the hashes
// saved for an agent that resumes, so that one cut off in the middle of the
// patch leaves no hash of the file's old content behind.
func TestInPlaceDropsSavedHashes(t *testing.T) {
	sessions, root := t.TempDir(), t.TempDir()
	content := make([]byte, 2<<20)
	rand.Read(content)
	path := filepath.Join(root, "f")
	if err := os.WriteFile(path, content, 0o644); err != nil {
		t.Fatal(err)
	}
	agentIn := func() *Client {
		reqR, reqW := io.Pipe()
		resR, resW := io.Pipe()
		done := make(chan error, 1)
		go func() {
			done <- Serve(t.Context(), reqR, resW, Config{Log: slog.New(slog.DiscardHandler), SessionDir: sessions})
		}()
		t.Cleanup(func() {
			reqW.Close()
			<-done
		})
		c := NewClient(resR, reqW)
		if err := c.Hello(root); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := agentIn()
	if _, err := c.FreshManifest(); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(nil); err != nil {
		t.Fatal(err)
	}
	saved := hashesPath(sessions, root)
	if manifest.LoadHashes(saved) == nil {
		t.Fatalf("no hashes saved at %s after finish", saved)
	}
	size := int64(len(content))
	if err := c.Prepare(); err != nil {
		t.Fatal(err)
	}
	if _, inPlace, err := c.Blocks("f", "t0", manifest.BlockSize(size), size, true); err != nil || !inPlace {
		t.Fatalf("Blocks in place: in place %v, %v", inPlace, err)
	}
	if _, err := os.Stat(saved); !os.IsNotExist(err) {
		t.Errorf("saved hashes after a patch in place was granted: %v, want none", err)
	}
	// Part of the patch is written; an agent that takes over hashes what is
	// there.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("part of a patch"), 12345); err != nil {
		t.Fatal(err)
	}
	f.Close()
	copy(content[12345:], "part of a patch")
	m, err := agentIn().Manifest(true)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(content)
	if got := m.Index()["f"]; got == nil || got.SHA256 != hex.EncodeToString(h[:]) {
		t.Errorf("the next agent's hash of the file = %+v, want that of its content as it is", got)
	}
}
