package migratetest

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// WriteSmall writes below root n files of 1-7 KiB (4 KiB on average) of
// pseudo-random content, the same for the same n, in directories of 1000,
// and returns their total size.
func WriteSmall(tb testing.TB, root string, n int) int64 {
	tb.Helper()
	rng := rand.New(rand.NewPCG(uint64(n), 3))
	buf := make([]byte, 8<<10)
	var total int64
	for i := range n {
		dir := filepath.Join(root, fmt.Sprintf("d%03d", i/1000))
		if i%1000 == 0 {
			if err := os.Mkdir(dir, 0o755); err != nil {
				tb.Fatal(err)
			}
		}
		size := 1<<10 + rng.IntN(6<<10)
		for j := range size {
			buf[j] = byte(rng.Uint32())
		}
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("f%05d", i)), buf[:size], 0o644); err != nil {
			tb.Fatal(err)
		}
		total += int64(size)
	}
	return total
}
