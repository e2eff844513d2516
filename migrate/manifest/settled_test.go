package manifest

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSettledHashes: a verification walk reuses only hashes that a walk of
// its own took of files settled then; a file whose content changed with
// its size and mtime put back is hashed again (its ctime moved), and so is
// every file whose hash came from elsewhere or was taken too soon after
// its last change.
func TestSettledHashes(t *testing.T) {
	root := t.TempDir()
	names := []string{"a", "b", "c", "d", "e", "f"}
	for _, name := range names {
		if err := os.WriteFile(filepath.Join(root, name), []byte("content of "+name), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(root, "a"), filepath.Join(root, "g")); err != nil {
		t.Fatal(err)
	}
	all := int64(len(names) * len("content of a"))
	fresh, err := Walk(t.Context(), root, WalkOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Hashed != all {
		t.Fatalf("fresh walk hashed %d bytes, want %d", fresh.Hashed, all)
	}
	for _, e := range fresh.Entries {
		if e.Type == Regular && e.HashedAt == 0 {
			t.Errorf("%s: fresh hash without HashedAt", e.Path)
		}
	}
	// A ctime older than the walk's start by 1 ns counts as settled here.
	const settled = time.Nanosecond
	same, err := Walk(t.Context(), root, WalkOptions{Hash: true, Previous: fresh, Settled: settled})
	if err != nil {
		t.Fatal(err)
	}
	if same.Hashed != 0 {
		t.Errorf("walk of an unchanged tree hashed %d bytes, want 0", same.Hashed)
	}
	if d := Diff(fresh, same); len(d) != 0 {
		t.Errorf("reused hashes differ from fresh ones: %v", d)
	}

	// Same size, same mtime, other content.
	b := filepath.Join(root, "b")
	st, err := os.Stat(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, []byte("CONTENT of b"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(b, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
	changed, err := Walk(t.Context(), root, WalkOptions{Hash: true, Previous: same, Settled: settled})
	if err != nil {
		t.Fatal(err)
	}
	if changed.Hashed != int64(len("CONTENT of b")) {
		t.Errorf("walk after a change hashed %d bytes, want only b", changed.Hashed)
	}
	if d := Diff(fresh, changed); len(d) != 1 || d[0].Path != "b" {
		t.Errorf("differences after changing b with its mtime put back: %v, want b's content", d)
	}

	// Hashes without a walk time (taken from elsewhere) are not reused.
	other := &Manifest{Entries: append([]Entry(nil), changed.Entries...)}
	for i := range other.Entries {
		other.Entries[i].HashedAt = 0
	}
	again, err := Walk(t.Context(), root, WalkOptions{Hash: true, Previous: other, Settled: settled})
	if err != nil {
		t.Fatal(err)
	}
	if again.Hashed != all {
		t.Errorf("walk with hashes of no walk hashed %d bytes, want %d", again.Hashed, all)
	}
	// Files changed within Settled before their hash are hashed again.
	young, err := Walk(t.Context(), root, WalkOptions{Hash: true, Previous: changed, Settled: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if young.Hashed != all {
		t.Errorf("walk with unsettled hashes hashed %d bytes, want %d", young.Hashed, all)
	}
	// Without Settled, the pre-copy rounds' rule: same inode facts.
	lax, err := Walk(t.Context(), root, WalkOptions{Hash: true, Previous: other})
	if err != nil {
		t.Fatal(err)
	}
	if lax.Hashed != 0 {
		t.Errorf("walk without Settled hashed %d bytes, want 0", lax.Hashed)
	}
}
