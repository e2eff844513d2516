package migrate

import (
	"slices"
	"testing"

	"github.com/stowage/stowage/migrate/manifest"
)

func TestAcrossDirs(t *testing.T) {
	var files []manifest.Entry
	for _, p := range []string{"a/1", "a/2", "a/3", "b/1", "c", "d", "e/f/1", "e/f/2"} {
		files = append(files, manifest.Entry{Path: p})
	}
	got := acrossDirs(files)
	// Directories in their first appearance's order: a, b, ., e/f.
	want := []int{0, 3, 4, 6, 1, 5, 7, 2}
	if !slices.Equal(got, want) {
		t.Errorf("acrossDirs = %v, want %v", got, want)
	}
	if got := acrossDirs(nil); len(got) != 0 {
		t.Errorf("acrossDirs(nil) = %v", got)
	}
}
