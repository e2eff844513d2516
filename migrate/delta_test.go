package migrate

import (
	"bytes"
	"context"
	"crypto/rand"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/migrate/manifest"
	"github.com/stowage/stowage/migrate/migratetest"
)

// changeBlocks overwrites n random 64 KiB regions of the file at path with
// random data, keeping its size.
func changeBlocks(t *testing.T, path string, n int, seed uint64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	rng := mrand.New(mrand.NewPCG(seed, 1))
	buf := make([]byte, 64<<10)
	regions := fi.Size() / int64(len(buf))
	for range n {
		rand.Read(buf)
		if _, err := f.WriteAt(buf, rng.Int64N(regions)*int64(len(buf))); err != nil {
			t.Fatal(err)
		}
	}
}

func writeRandom(t *testing.T, path string, size int) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestDeltaTransfer(t *testing.T) {
	testenv.Require(t, "sha256sum")
	src, dst := t.TempDir(), t.TempDir()
	const size = 64 << 20
	writeRandom(t, filepath.Join(src, "disk.img"), size)
	r := pipeRun(t, src, dst)
	ctx := t.Context()

	_, srcM, err := r.round(ctx, PhasePrecopy, 1, nil)
	if err != nil {
		t.Fatalf("round 1: %v", err)
	}
	if r.res.SentBytes != size || r.res.MatchedBytes != 0 {
		t.Fatalf("round 1 sent %d bytes and matched %d, want the whole file (%d) and none", r.res.SentBytes, r.res.MatchedBytes, size)
	}

	// A round with nothing changed reads no content on either side: the
	// source reuses its hashes, the target those of what it committed.
	hashed := r.res.HashedBytes
	p, srcM, err := r.round(ctx, PhasePrecopy, 2, srcM)
	if err != nil {
		t.Fatalf("round 2: %v", err)
	}
	if !p.Empty() {
		t.Fatalf("round 2 has %d changes, want none", p.Changes())
	}
	if n := r.res.HashedBytes - hashed; n != 0 {
		t.Errorf("round 2 hashed %d bytes of unchanged files, want 0", n)
	}

	// 1 % of the file changes in place.
	changeBlocks(t, filepath.Join(src, "disk.img"), size/100/(64<<10), 7)
	sent, matched := r.res.SentBytes, r.res.MatchedBytes
	if _, _, err := r.round(ctx, PhasePrecopy, 3, srcM); err != nil {
		t.Fatalf("round 3: %v", err)
	}
	sent, matched = r.res.SentBytes-sent, r.res.MatchedBytes-matched
	t.Logf("1%% changed: sent %d bytes (%.2f%%) and %d bytes of checksums, matched %d", sent, 100*float64(sent)/size, r.res.ChecksumBytes, matched)
	if sent > size/50 {
		t.Errorf("round 3 sent %d bytes for a 1%% change of %d, want at most 2%%", sent, size)
	}
	if sent+matched != size {
		t.Errorf("round 3 sent %d and matched %d bytes, want them to add up to the size %d", sent, matched, size)
	}
	if r.res.ChecksumBytes > size/200 {
		t.Errorf("checksums took %d bytes, want at most 0.5%% of %d", r.res.ChecksumBytes, size)
	}
	if err := r.verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if a, b := migratetest.Run(t, src, "sha256sum", "disk.img"), migratetest.Run(t, dst, "sha256sum", "disk.img"); a != b {
		t.Errorf("content differs after delta transfer:\n%s\n%s", a, b)
	}

	// The file shrinks and grows: what the target lacks is sent, the rest
	// cut.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Truncate(filepath.Join(src, "disk.img"), size/2+12345))
	if _, _, err := r.round(ctx, PhasePrecopy, 4, nil); err != nil {
		t.Fatalf("round 4: %v", err)
	}
	f, err := os.OpenFile(filepath.Join(src, "disk.img"), os.O_WRONLY|os.O_APPEND, 0)
	must(err)
	_, err = f.Write(bytes.Repeat([]byte("tail"), 1<<18))
	must(err)
	must(f.Close())
	sent = r.res.SentBytes
	if _, _, err := r.round(ctx, PhasePrecopy, 5, nil); err != nil {
		t.Fatalf("round 5: %v", err)
	}
	if n := r.res.SentBytes - sent; n > 2<<20 {
		t.Errorf("appending 1 MiB sent %d bytes, want about 1 MiB", n)
	}
	if err := r.verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if a, b := migratetest.Run(t, src, "sha256sum", "disk.img"), migratetest.Run(t, dst, "sha256sum", "disk.img"); a != b {
		t.Errorf("content differs after resizing:\n%s\n%s", a, b)
	}
}

// TestChangeDuringPrecopy changes a file after a round planned to send it:
// the round may send either version, the next one must end with the last.
func TestChangeDuringPrecopy(t *testing.T) {
	testenv.Require(t, "sha256sum")
	src, dst := t.TempDir(), t.TempDir()
	writeRandom(t, filepath.Join(src, "big.bin"), 8<<20)
	writeRandom(t, filepath.Join(src, "small.bin"), 1000)
	r := pipeRun(t, src, dst)
	ctx := t.Context()
	changed := false
	r.opts.Progress = func(e Event) {
		if e.Round == 1 && !changed {
			changed = true
			changeBlocks(t, filepath.Join(src, "big.bin"), 4, 3)
			if err := os.WriteFile(filepath.Join(src, "small.bin"), []byte("rewritten while the round ran"), 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	_, srcM, err := r.round(ctx, PhasePrecopy, 1, nil)
	if err != nil {
		t.Fatalf("round 1: %v", err)
	}
	if !changed {
		t.Fatal("the round reported no progress before it sent")
	}
	p, _, err := r.round(ctx, PhasePrecopy, 2, srcM)
	if err != nil {
		t.Fatalf("round 2: %v", err)
	}
	if len(p.Send) == 0 {
		t.Error("round 2 sent nothing after files changed during round 1")
	}
	if err := r.verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"big.bin", "small.bin"} {
		if a, b := migratetest.Run(t, src, "sha256sum", name), migratetest.Run(t, dst, "sha256sum", name); a != b {
			t.Errorf("%s differs after the next round:\n%s\n%s", name, a, b)
		}
	}
}

// TestInPlacePatchInterrupted: a delta transfer that patches the target's
// file in place and is cut off after part of its writes leaves a file that
// no hash vouches for: the next round finds it differs, patches it again
// and the verification passes.
func TestInPlacePatchInterrupted(t *testing.T) {
	testenv.Require(t, "sha256sum")
	src, dst := t.TempDir(), t.TempDir()
	const size = 8 << 20
	path := filepath.Join(src, "disk.img")
	writeRandom(t, path, size)
	r := pipeRun(t, src, dst)
	if _, _, err := r.round(t.Context(), PhasePrecopy, 1, nil); err != nil {
		t.Fatalf("round 1: %v", err)
	}
	// The target hashes its copy itself, keeping the block checksums.
	if _, err := r.agent.FreshManifest(); err != nil {
		t.Fatal(err)
	}
	old := migratetest.Run(t, dst, "sha256sum", "disk.img")

	// Two blocks far apart change: two writes. The limiter lets the first
	// through and holds the second until the round is cut off.
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, size / 2} {
		if _, err := f.WriteAt([]byte("new content"), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	r.lim = &limiter{rate: 1}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		_, _, err := r.round(ctx, PhasePrecopy, 2, nil)
		done <- err
	}()
	target := filepath.Join(dst, "disk.img")
	deadline := time.Now().Add(30 * time.Second)
	for {
		b := make([]byte, len("new content"))
		if f, err := os.Open(target); err == nil {
			_, _ = f.ReadAt(b, 0)
			f.Close()
		}
		if string(b) == "new content" {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("the first write of the patch did not arrive: %v", <-done)
		}
		select {
		case err := <-done:
			t.Fatalf("round 2 ended before its first write arrived: %v", err)
		case <-time.After(time.Millisecond):
		}
	}
	cancel()
	if err := <-done; err == nil {
		t.Fatal("round 2 finished although it was cut off")
	}
	half := migratetest.Run(t, dst, "sha256sum", "disk.img")
	if half == old || half == migratetest.Run(t, src, "sha256sum", "disk.img") {
		t.Fatal("the target's file is not half patched: the test cut off nothing")
	}

	r.lim = &limiter{}
	p, _, err := r.round(t.Context(), PhasePrecopy, 3, nil)
	if err != nil {
		t.Fatalf("round 3: %v", err)
	}
	if len(p.Send) != 1 {
		t.Errorf("round 3 sent %d files, want the half patched one", len(p.Send))
	}
	if err := r.verify(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if a, b := migratetest.Run(t, src, "sha256sum", "disk.img"), migratetest.Run(t, dst, "sha256sum", "disk.img"); a != b {
		t.Errorf("content differs after the resumed patch:\n%s\n%s", a, b)
	}
}

// TestHashAhead: the hashes taken ahead are those of the content, with
// the block checksums, and HashWhere reads no file twice; a file that
// turns out not to need its hash is left without one or with the right
// one.
func TestHashAhead(t *testing.T) {
	testenv.Require(t, "sha256sum")
	src := t.TempDir()
	for _, name := range []string{"a.img", "b.img", "c.img"} {
		writeRandom(t, filepath.Join(src, name), deltaMin+4096)
	}
	if err := os.WriteFile(filepath.Join(src, "small"), []byte("small"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := &run{srcRoot: src}
	m, err := manifest.Walk(t.Context(), src, manifest.WalkOptions{Hash: true, Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	a := r.hashAhead(t.Context(), m)
	need := func(e *manifest.Entry) bool { return e.Path != "c.img" }
	a.stop(need)
	if err := m.HashWhere(t.Context(), src, need); err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, e := range m.Entries {
		if e.Type != manifest.Regular {
			continue
		}
		sum := migratetest.Run(t, src, "sha256sum", e.Path)
		switch {
		case e.SHA256 != "" && !strings.HasPrefix(sum, e.SHA256+" "):
			t.Errorf("%s: hash %s, sha256sum says %s", e.Path, e.SHA256, sum)
		case e.SHA256 == "" && need(&e):
			t.Errorf("%s: no hash although needed", e.Path)
		case e.SHA256 != "" && e.Size >= deltaMin:
			b, err := os.ReadFile(filepath.Join(src, e.Path))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(e.BlockSums(), manifest.AppendBlockSums(nil, b, manifest.BlockSize(e.Size))) {
				t.Errorf("%s: block checksums are not those of the content", e.Path)
			}
		}
		if e.SHA256 != "" {
			want += e.Size
		}
	}
	if m.Hashed != want {
		t.Errorf("read %d bytes to hash, want each hashed file once (%d)", m.Hashed, want)
	}
}

// TestHashAheadPastFailure: a file removed since the walk does not end
// the hashing ahead; the files after it are hashed.
func TestHashAheadPastFailure(t *testing.T) {
	src := t.TempDir()
	for _, name := range []string{"a.img", "b.img", "c.img"} {
		writeRandom(t, filepath.Join(src, name), deltaMin+4096)
	}
	m, err := manifest.Walk(t.Context(), src, manifest.WalkOptions{Hash: true, Lazy: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(src, "a.img")); err != nil {
		t.Fatal(err)
	}
	a := (&run{srcRoot: src}).hashAhead(t.Context(), m)
	<-a.done // every file was tried
	a.stop(func(*manifest.Entry) bool { return true })
	for _, e := range m.Entries {
		if e.Type == manifest.Regular && e.Path != "a.img" && e.SHA256 == "" {
			t.Errorf("%s was not hashed ahead after a.img failed", e.Path)
		}
	}
}
