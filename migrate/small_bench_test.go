package migrate

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkSmallFiles copies a tree of small files through an in-process
// agent and SFTP server (one round, then verification).
func BenchmarkSmallFiles(b *testing.B) {
	src := b.TempDir()
	buf := make([]byte, 4<<10)
	for i := range 2000 {
		dir := filepath.Join(src, fmt.Sprintf("d%d", i/500))
		os.MkdirAll(dir, 0o755)
		buf[0] = byte(i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), buf, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() {
		b.StopTimer()
		dst, err := os.MkdirTemp("", "small-")
		if err != nil {
			b.Fatal(err)
		}
		r := pipeRun(b, src, dst)
		b.StartTimer()
		if _, _, err := r.round(b.Context(), PhasePrecopy, 1, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		os.RemoveAll(dst)
		b.StartTimer()
	}
}
