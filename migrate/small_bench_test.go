package migrate

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/migrate/migratetest"
)

// benchFiles is the number of small files of BenchmarkSmallFiles:
// MIGRATE_BENCH_FILES, default 2000.
func benchFiles(b *testing.B) int {
	n := 2000
	if s := os.Getenv("MIGRATE_BENCH_FILES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v <= 0 {
			b.Fatalf("MIGRATE_BENCH_FILES=%q: want a positive number", s)
		}
		n = v
	}
	return n
}

// cpuTime returns the user and system CPU time this process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSmallFiles copies a tree of small files (1-7 KiB, in
// directories of 1000, as the migration benchmark's case (b)) through an
// in-process agent and SFTP server as a cold migration does: a pre-copy
// round, fresh hashes of both sides, the final pass and the verification.
// It reports the CPU time of both sides together per file.
func BenchmarkSmallFiles(b *testing.B) {
	n := benchFiles(b)
	src := b.TempDir()
	migratetest.WriteSmall(b, src, n)
	// The source's files are older than manifest.SettledHash, as those of
	// a volume in use for a while.
	old := time.Now().Add(-time.Hour)
	if err := filepath.WalkDir(src, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, old, old)
	}); err != nil {
		b.Fatal(err)
	}
	var cpu time.Duration
	for b.Loop() {
		b.StopTimer()
		dst, err := os.MkdirTemp("", "small-")
		if err != nil {
			b.Fatal(err)
		}
		r := pipeRun(b, src, dst)
		ctx := b.Context()
		c0 := cpuTime(b)
		b.StartTimer()
		_, prev, err := r.round(ctx, PhasePrecopy, 1, nil)
		if err != nil {
			b.Fatal(err)
		}
		if prev, err = r.freshHashes(ctx, prev); err != nil {
			b.Fatal(err)
		}
		_, final, err := r.round(ctx, PhaseFinal, 2, prev)
		if err != nil {
			b.Fatal(err)
		}
		if err := r.verify(ctx, final); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		cpu += cpuTime(b) - c0
		os.RemoveAll(dst)
		b.StartTimer()
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N)/float64(n), "cpu-µs/file")
}
