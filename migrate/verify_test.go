package migrate

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestVerifyReusesSettledHashes: after both sides hashed afresh before the
// final pass, the verification reads no unchanged file again, yet a
// target file whose content changed with its size and mtime put back is
// caught, and so is one changed on the source.
func TestVerifyReusesSettledHashes(t *testing.T) {
	src, dst := t.TempDir(), t.TempDir()
	for i := range 20 {
		data := []byte(strings.Repeat(fmt.Sprintf("file %d ", i), 100))
		if err := os.WriteFile(filepath.Join(src, fmt.Sprintf("f%02d", i)), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := pipeRun(t, src, dst)
	ctx := t.Context()
	_, first, err := r.round(ctx, PhasePrecopy, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	prev, err := r.freshHashes(ctx, first)
	if err != nil {
		t.Fatal(err)
	}
	_, final, err := r.round(ctx, PhaseFinal, 2, prev)
	if err != nil {
		t.Fatal(err)
	}
	before := r.res.HashedBytes
	if err := r.verify(ctx, final); err != nil {
		t.Fatal(err)
	}
	if n := r.res.HashedBytes - before; n != 0 {
		t.Errorf("verification after fresh hashes read %d bytes, want 0", n)
	}

	// Same size, same mtime, other content, on the target.
	changeKeepingTimes(t, filepath.Join(dst, "f03"), 'X')
	err = r.verify(ctx, final)
	if err == nil || !strings.Contains(err.Error(), "f03") || !strings.Contains(err.Error(), "content") {
		t.Fatalf("verify after changing f03 on the target = %v, want a content difference of f03", err)
	}
	// Put back on the target (the verification takes its new hash), and
	// changed on the source.
	changeKeepingTimes(t, filepath.Join(dst, "f03"), 'f')
	changeKeepingTimes(t, filepath.Join(src, "f07"), 'X')
	err = r.verify(ctx, final)
	if err == nil || !strings.Contains(err.Error(), "f07") || strings.Contains(err.Error(), "f03") {
		t.Fatalf("verify after changing f07 on the source = %v, want a difference of f07 only", err)
	}
}

// changeKeepingTimes sets the first byte of path to b and puts its mtime
// back.
func changeKeepingTimes(t *testing.T, path string, b byte) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte{b}, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, st.ModTime(), st.ModTime()); err != nil {
		t.Fatal(err)
	}
}
