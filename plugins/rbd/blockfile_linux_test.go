package rbd

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
)

// memDevice is a device in memory that counts how often it is asked for
// its size and flushed.
type memDevice struct {
	mu   sync.RWMutex
	data []byte // guarded by mu
	// chunk, when set, makes reads come in chunks that end at multiples
	// of it, as an image's come by object.
	chunk int
	// linger is how long a read stays in the device after its last
	// chunk, as librbd's call does; inReads counts the reads in it.
	linger  time.Duration
	inReads atomic.Int64

	sizeCalls atomic.Int64
	flushes   atomic.Int64
	// failWrite makes writes fail as librbd's do after this host was
	// fenced.
	failWrite atomic.Bool
	// failFlush makes flushes fail as librbd's do after this host was
	// blocklisted.
	failFlush atomic.Bool
}

// ReadChunks passes the bytes from a buffer of its own and scribbles over
// each chunk once use returned, as librbd frees its buffers then: a reader
// that kept using a chunk afterwards gets the scribbles.
func (d *memDevice) ReadChunks(off int64, n int, use func(p []byte)) error {
	d.inReads.Add(1)
	defer d.inReads.Add(-1)
	d.mu.RLock()
	if off < 0 || off+int64(n) > int64(len(d.data)) {
		d.mu.RUnlock()
		return errors.New("read past the end")
	}
	buf := bytes.Clone(d.data[off : off+int64(n)])
	d.mu.RUnlock()
	for len(buf) > 0 {
		k := len(buf)
		if d.chunk > 0 {
			k = min(k, d.chunk-int(off%int64(d.chunk)))
		}
		use(buf[:k])
		for i := range buf[:k] {
			buf[i] = 0xA5
		}
		buf, off = buf[k:], off+int64(k)
	}
	time.Sleep(d.linger)
	return nil
}

func (d *memDevice) WriteAt(p []byte, off int64) (int, error) {
	if d.failWrite.Load() {
		return 0, syscall.ESHUTDOWN
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if off+int64(len(p)) > int64(len(d.data)) {
		return 0, errors.New("write past the end")
	}
	return copy(d.data[off:], p), nil
}

func (d *memDevice) Flush() error {
	d.flushes.Add(1)
	if d.failFlush.Load() {
		return syscall.ESHUTDOWN
	}
	return nil
}

func (d *memDevice) Discard(off, length uint64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	clear(d.data[off : off+length])
	return int(length), nil
}

func (d *memDevice) Size() (uint64, error) {
	d.sizeCalls.Add(1)
	d.mu.RLock()
	defer d.mu.RUnlock()
	return uint64(len(d.data)), nil
}

// grow appends n zero bytes, as an image grows.
func (d *memDevice) grow(n int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.data = append(d.data, make([]byte, n)...)
}

// snapshot returns a copy of the contents.
func (d *memDevice) snapshot() []byte {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return bytes.Clone(d.data)
}

// serveMem serves dev as a block file for the test, opened with direct
// I/O as the loop device opens it.
func serveMem(t *testing.T, dev *memDevice, readOnly bool) (*blockFile, *os.File) {
	t.Helper()
	testenv.Require(t, "root")
	if _, err := os.Stat("/dev/fuse"); err != nil {
		testenv.Unavailable(t, "no FUSE: %v", err)
	}
	b, err := serveBlockFile(filepath.Join(t.TempDir(), "fuse"), "test", dev, readOnly)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := b.close(); err != nil {
			t.Errorf("close block file: %v", err)
		}
	})
	mode := os.O_RDWR
	if readOnly {
		mode = os.O_RDONLY
	}
	f, err := os.OpenFile(b.path(), mode|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return b, f
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBlockFileConcurrentIO writes and reads the file from many goroutines
// at once, each in a region of its own, at the loop device's request sizes
// and at odd offsets and sizes, and checks every byte read back, then the
// device's contents.
//
// Reads that the device answers in one chunk are sent from its memory;
// "chunked" makes reads that cross a multiple of 64KiB come in several
// chunks, which are copied.
func TestBlockFileConcurrentIO(t *testing.T) {
	for _, chunk := range []int{0, 64 << 10} {
		name := "whole"
		if chunk > 0 {
			name = "chunked"
		}
		t.Run(name, func(t *testing.T) { testConcurrentIO(t, chunk) })
	}
}

func testConcurrentIO(t *testing.T, chunk int) {
	const (
		workers = 16
		region  = 3<<20 + 4093 // odd, so that regions start at odd offsets
	)
	dev := &memDevice{data: make([]byte, workers*region+12345), chunk: chunk}
	_, f := serveMem(t, dev, false)
	want := make([]byte, len(dev.data))
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		base := int64(w * region)
		data := randomBytes(t, region)
		copy(want[base:], data)
		wg.Go(func() {
			errs <- exercise(f, base, data)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if got := dev.snapshot(); !bytes.Equal(got, want) {
		t.Errorf("device contents differ from what was written (first difference at %d)", firstDiff(got, want))
	}
}

// exercise writes data at base in pieces of varied sizes, reads it back
// in pieces of other sizes, aligned and not, and compares.
func exercise(f *os.File, base int64, data []byte) error {
	sizes := []int{512 << 10, 1 << 20, 4096, 1, 777, 65536 + 3, 128<<10 - 1}
	for i, off := 0, 0; off < len(data); i++ {
		n := min(sizes[i%len(sizes)], len(data)-off)
		if _, err := f.WriteAt(data[off:off+n], base+int64(off)); err != nil {
			return fmt.Errorf("write %d bytes at %d: %w", n, base+int64(off), err)
		}
		off += n
	}
	got := make([]byte, len(data))
	for i, off := 0, 0; off < len(data); i++ {
		n := min(sizes[(i+3)%len(sizes)], len(data)-off)
		if _, err := f.ReadAt(got[off:off+n], base+int64(off)); err != nil {
			return fmt.Errorf("read %d bytes at %d: %w", n, base+int64(off), err)
		}
		off += n
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("region at %d: read back differs from what was written (first difference at +%d)", base, firstDiff(got, data))
	}
	return nil
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestBlockFileCloseWaitsForReads checks that close returns only after
// every read left the device, which a lent read does after its reply went
// out: the provider closes the image next.
func TestBlockFileCloseWaitsForReads(t *testing.T) {
	testenv.Require(t, "root")
	dev := &memDevice{data: randomBytes(t, 1<<20), linger: 200 * time.Millisecond}
	b, err := serveBlockFile(filepath.Join(t.TempDir(), "fuse"), "test", dev, true)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(b.path(), os.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		b.close()
		t.Fatal(err)
	}
	buf := make([]byte, 64<<10)
	_, rerr := f.ReadAt(buf, 0)
	f.Close()
	if err := b.close(); err != nil {
		t.Fatal(err)
	}
	if rerr != nil {
		t.Fatal(rerr)
	}
	if !bytes.Equal(buf, dev.data[:len(buf)]) {
		t.Error("read differs from the device's contents")
	}
	if n := dev.inReads.Load(); n != 0 {
		t.Errorf("close returned with %d reads still in the device", n)
	}
}

// TestBlockFileBounds checks the ends of the file: a read across the end
// is short, one at the end reads nothing, a write across it fails with
// ENOSPC and changes nothing; fsync reaches the device.
func TestBlockFileBounds(t *testing.T) {
	const size = 1<<20 + 512
	dev := &memDevice{data: randomBytes(t, size)}
	orig := dev.snapshot()
	_, f := serveMem(t, dev, false)

	buf := make([]byte, 4096)
	n, err := f.ReadAt(buf, size-100)
	if n != 100 || !bytes.Equal(buf[:n], orig[size-100:]) {
		t.Errorf("read across the end = %d bytes, %v; want the last 100 bytes", n, err)
	}
	if n, err := f.ReadAt(buf, size); n != 0 {
		t.Errorf("read at the end = %d bytes, %v; want none", n, err)
	}
	if _, err := f.WriteAt(buf, size-100); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("write across the end: %v, want ENOSPC", err)
	}
	if !bytes.Equal(dev.snapshot(), orig) {
		t.Error("a failed write changed the device")
	}
	before := dev.flushes.Load()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if dev.flushes.Load() == before {
		t.Error("fsync succeeded without flushing the device")
	}
}

// TestBlockFileReadsSkipAttributes checks that a read inside the file
// does not make the kernel ask for the attributes first, and that the
// file still takes the device's new size when it grows.
func TestBlockFileReadsSkipAttributes(t *testing.T) {
	const size = 8 << 20
	dev := &memDevice{data: randomBytes(t, size)}
	b, f := serveMem(t, dev, false)

	const reads = 64
	buf := make([]byte, 128<<10)
	before := dev.sizeCalls.Load()
	for i := range reads {
		if _, err := f.ReadAt(buf, int64(i)*int64(len(buf))); err != nil {
			t.Fatal(err)
		}
	}
	// Each read asks for the size once to bound itself; asking for the
	// attributes as well would double that.
	if calls := dev.sizeCalls.Load() - before; calls > reads+2 {
		t.Errorf("%d reads asked the device for its size %d times; want at most %d (one per read)", reads, calls, reads+2)
	}

	dev.grow(1 << 20)
	fi, err := os.Stat(b.path())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != size+1<<20 {
		t.Errorf("size after the device grew = %d, want %d", fi.Size(), size+1<<20)
	}
	n, err := f.ReadAt(buf, size)
	if n != len(buf) || !bytes.Equal(buf, make([]byte, len(buf))) {
		t.Errorf("read of the grown part = %d bytes, %v; want %d zero bytes", n, err, len(buf))
	}
}

// TestBlockFileReadOnly checks that a read-only file refuses to open for
// writing and reads the device.
func TestBlockFileReadOnly(t *testing.T) {
	dev := &memDevice{data: randomBytes(t, 1<<20)}
	b, f := serveMem(t, dev, true)
	if _, err := os.OpenFile(b.path(), os.O_RDWR, 0); !errors.Is(err, syscall.EROFS) {
		t.Errorf("open for writing: %v, want EROFS", err)
	}
	buf := make([]byte, 1<<20)
	if n, err := f.ReadAt(buf, 0); n != len(buf) || !bytes.Equal(buf, dev.snapshot()) {
		t.Errorf("read = %d bytes, %v; want the device's contents", n, err)
	}
}

// TestBlockFileLostWrites: the first flush that fails reports the device's
// error, and from then on every flush, read and write fails, also once
// the device flushes again: writes acknowledged before the failed flush
// may be lost. That holds whether the failed flush was the file's fsync
// or a flush of the device through the file (a snapshot's).
func TestBlockFileLostWrites(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flush func(b *blockFile, f *os.File) error
	}{
		{"fsync", func(_ *blockFile, f *os.File) error { return f.Sync() }},
		{"device flush", func(b *blockFile, _ *os.File) error { return b.flush() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := &memDevice{data: make([]byte, 1<<20)}
			b, f := serveMem(t, dev, false)
			block := randomBytes(t, 4096)
			if _, err := f.WriteAt(block, 0); err != nil {
				t.Fatal(err)
			}
			if err := tc.flush(b, f); err != nil {
				t.Fatal(err)
			}
			if err := b.lostWrites(); err != nil {
				t.Fatalf("lost writes reported after a flush that succeeded: %v", err)
			}
			dev.failFlush.Store(true)
			if _, err := f.WriteAt(block, 4096); err != nil {
				t.Fatalf("write before the failed flush: %v", err)
			}
			if err := tc.flush(b, f); !errors.Is(err, syscall.ESHUTDOWN) {
				t.Errorf("first failed flush: %v, want the device's ESHUTDOWN", err)
			}
			dev.failFlush.Store(false)
			checkFailed(t, b, f, dev, "a failed flush")
		})
	}
}

// checkFailed checks that after what failed (the device's ESHUTDOWN), every
// fsync, device flush, write and read of the file fails, without the
// device being flushed again.
func checkFailed(t *testing.T, b *blockFile, f *os.File, dev *memDevice, what string) {
	t.Helper()
	flushes := dev.flushes.Load()
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Errorf("fsync after %s: %v, want EIO", what, err)
	}
	if err := b.flush(); !errors.Is(err, errLostWrites) {
		t.Errorf("device flush after %s: %v, want errLostWrites", what, err)
	}
	if n := dev.flushes.Load(); n != flushes {
		t.Errorf("the device was flushed %d times after %s", n-flushes, what)
	}
	if _, err := f.WriteAt(make([]byte, 4096), 8192); !errors.Is(err, syscall.EIO) {
		t.Errorf("write after %s: %v, want EIO", what, err)
	}
	if _, err := f.ReadAt(make([]byte, 4096), 0); !errors.Is(err, syscall.EIO) {
		t.Errorf("read after %s: %v, want EIO", what, err)
	}
	if err := b.lostWrites(); !errors.Is(err, syscall.ESHUTDOWN) {
		t.Errorf("lost writes after %s: %v, want the device's ESHUTDOWN", what, err)
	}
}

// TestBlockFileFailedWrite checks that a write the device failed makes
// every later read, write and flush fail, as a failed flush does: what
// was written is in doubt.
func TestBlockFileFailedWrite(t *testing.T) {
	dev := &memDevice{data: make([]byte, 1<<20)}
	b, f := serveMem(t, dev, false)
	block := randomBytes(t, 4096)
	if _, err := f.WriteAt(block, 0); err != nil {
		t.Fatal(err)
	}
	dev.failWrite.Store(true)
	if _, err := f.WriteAt(block, 4096); !errors.Is(err, syscall.ESHUTDOWN) {
		t.Errorf("failed write: %v, want the device's ESHUTDOWN", err)
	}
	dev.failWrite.Store(false)
	checkFailed(t, b, f, dev, "a failed write")
}
