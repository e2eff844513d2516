package manifest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestBlockSums: the read that hashes a large file keeps its block
// checksums; a walk reuses them with the hash only while the file is as it
// was, saved hashes keep them, and a changed file gets those of its new
// content.
func TestBlockSums(t *testing.T) {
	root := t.TempDir()
	big := make([]byte, SumsMin+12345)
	rand.Read(big)
	path := filepath.Join(root, "big")
	if err := os.WriteFile(path, big, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "small"), []byte("small"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := func(b []byte) []byte { return AppendBlockSums(nil, b, BlockSize(int64(len(b)))) }
	m, err := Walk(t.Context(), root, WalkOptions{Hash: true})
	if err != nil {
		t.Fatal(err)
	}
	idx := m.Index()
	if got := idx["big"].BlockSums(); !bytes.Equal(got, want(big)) {
		t.Fatalf("walk kept %d bytes of block checksums, want %d of the content's", len(got), len(want(big)))
	}
	if got := idx["small"].BlockSums(); got != nil {
		t.Errorf("walk kept block checksums of a file below SumsMin: %d bytes", len(got))
	}

	saved := filepath.Join(t.TempDir(), "v.hashes")
	if err := SaveHashes(saved, m); err != nil {
		t.Fatal(err)
	}
	again, err := Walk(t.Context(), root, WalkOptions{Hash: true, Previous: LoadHashes(saved)})
	if err != nil {
		t.Fatal(err)
	}
	if again.Hashed != 0 || !bytes.Equal(again.Index()["big"].BlockSums(), want(big)) {
		t.Errorf("walk with saved hashes read %d bytes and kept other checksums, want no read and the same", again.Hashed)
	}

	// One block changes, the size stays.
	copy(big[BlockSize(int64(len(big)))+7:], "changed")
	if err := os.WriteFile(path, big, 0o644); err != nil {
		t.Fatal(err)
	}
	// Another mtime, so that the change shows even within the clock tick
	// of the first write.
	if err := os.Chtimes(path, time.Time{}, time.Unix(1, 0)); err != nil {
		t.Fatal(err)
	}
	changed, err := Walk(t.Context(), root, WalkOptions{Hash: true, Previous: again})
	if err != nil {
		t.Fatal(err)
	}
	e := changed.Index()["big"]
	if e.SHA256 == idx["big"].SHA256 || !bytes.Equal(e.BlockSums(), want(big)) {
		t.Error("a changed file kept the hash or block checksums of its old content")
	}

	// HashEntry and HashWhere keep them too.
	lazy, err := Walk(t.Context(), root, WalkOptions{Hash: true, Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	l := lazy.Index()
	if err := lazy.HashEntry(t.Context(), root, l["big"]); err != nil {
		t.Fatal(err)
	}
	if l["big"].SHA256 != e.SHA256 || !bytes.Equal(l["big"].BlockSums(), want(big)) {
		t.Error("HashEntry took another hash or other checksums than a walk")
	}
	if err := lazy.HashWhere(t.Context(), root, func(*Entry) bool { return true }); err != nil {
		t.Fatal(err)
	}
	if lazy.Hashed != int64(len(big))+int64(len("small")) {
		t.Errorf("HashWhere after HashEntry read %d bytes in all, want the big file once and the small one", lazy.Hashed)
	}
}

// TestSumsBudget: the block checksums kept stay within MaxSums.
func TestSumsBudget(t *testing.T) {
	b := newSumsBudget()
	const size = 1 << 40 // 8 MiB of checksums each
	n := 0
	for b.take(size) {
		n++
	}
	if want := MaxSums / int((size+int64(BlockSize(size))-1)/int64(BlockSize(size))*SumSize); n != want {
		t.Errorf("budget kept the checksums of %d files of 1 TiB, want %d", n, want)
	}
	if b.take(SumsMin - 1) {
		t.Error("budget keeps checksums of a file below SumsMin")
	}
}

// TestHashCancelled: a cancelled hash stops, with or without block
// checksums, and gives back the checksums it reserved.
func TestHashCancelled(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, budget := range []*sumsBudget{nil, newSumsBudget()} {
		if _, _, err := hashFile(ctx, path, 1<<20, budget); !errors.Is(err, context.Canceled) {
			t.Errorf("hash with budget %v after cancel: %v, want context.Canceled", budget != nil, err)
		}
		if budget != nil && budget.left.Load() != MaxSums {
			t.Errorf("a cancelled hash kept %d bytes of the budget", MaxSums-budget.left.Load())
		}
	}
}

// TestHashBudget: a hash keeps the checksums it reserved only when the
// file has the size it was hashed for; otherwise they go back.
func TestHashBudget(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	budget := newSumsBudget()
	if _, sums, err := hashFile(t.Context(), path, 1<<20, budget); err != nil || len(sums) != int(SumsLen(1<<20)) {
		t.Fatalf("hash of a file of its size: %d bytes of checksums, %v; want %d", len(sums), err, SumsLen(1<<20))
	}
	if got, want := budget.left.Load(), MaxSums-SumsLen(1<<20); got != want {
		t.Errorf("budget after kept checksums = %d, want %d", got, want)
	}
	// The file grew since it was stated.
	if _, sums, err := hashFile(t.Context(), path, 2<<20, budget); err != nil || sums != nil {
		t.Fatalf("hash of a file of another size: %d bytes of checksums, %v; want none", len(sums), err)
	}
	if got, want := budget.left.Load(), MaxSums-SumsLen(1<<20); got != want {
		t.Errorf("budget after checksums not kept = %d, want %d", got, want)
	}
	if _, _, err := hashFile(t.Context(), path+".gone", 1<<20, budget); err == nil {
		t.Fatal("hash of a missing file succeeded")
	}
	if got, want := budget.left.Load(), MaxSums-SumsLen(1<<20); got != want {
		t.Errorf("budget after a failed hash = %d, want %d", got, want)
	}
}

// TestBlockSumsOfSize: an entry's block checksums are given only when
// they fit its size.
func TestBlockSumsOfSize(t *testing.T) {
	sums := make([]byte, SumsLen(2<<20))
	e := Entry{Size: 2 << 20, sums: sums}
	if got := e.BlockSums(); len(got) != len(sums) {
		t.Errorf("checksums of an entry of their size: %d bytes, want %d", len(got), len(sums))
	}
	e.Size = 3 << 20
	if got := e.BlockSums(); got != nil {
		t.Errorf("checksums of an entry of another size: %d bytes, want none", len(got))
	}
}
