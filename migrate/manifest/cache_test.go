package manifest

import (
	"os"
	"path/filepath"
	"testing"
)

// TestSavedHashes: hashes saved by one process spare the next one reading
// unchanged files, and a file changed since is hashed again.
func TestSavedHashes(t *testing.T) {
	root := t.TempDir()
	for _, name := range []string{"a", "b"} {
		if err := os.WriteFile(filepath.Join(root, name), []byte("content of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := Walk(t.Context(), root, WalkOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	if m.Hashed != int64(len("content of a")+len("content of b")) {
		t.Errorf("first walk hashed %d bytes, want both files", m.Hashed)
	}
	path := filepath.Join(t.TempDir(), "state", "v.hashes")
	if err := SaveHashes(path, m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "b"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	prev := LoadHashes(path)
	if prev == nil || len(prev.Entries) != 2 {
		t.Fatalf("LoadHashes = %+v, want the two files", prev)
	}
	again, err := Walk(t.Context(), root, WalkOptions{Hash: true, Previous: prev})
	if err != nil {
		t.Fatal(err)
	}
	if again.Hashed != int64(len("changed")) {
		t.Errorf("walk with saved hashes read %d bytes, want only the changed file (%d)", again.Hashed, len("changed"))
	}
	fresh, err := Walk(t.Context(), root, WalkOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	if d := Diff(fresh, again); len(d) != 0 {
		t.Errorf("walk with saved hashes differs from a fresh one: %v", d)
	}
	if err := RemoveHashes(path); err != nil {
		t.Fatal(err)
	}
	if LoadHashes(path) != nil {
		t.Error("hashes still load after RemoveHashes")
	}
	if err := os.WriteFile(path, []byte("not gob"), 0o600); err != nil {
		t.Fatal(err)
	}
	if LoadHashes(path) != nil {
		t.Error("a damaged hashes file loads")
	}
}
