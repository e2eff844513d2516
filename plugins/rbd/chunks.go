//go:build ceph && linux && cgo

package rbd

/*
#cgo LDFLAGS: -lrbd
#include <stdint.h>
#include <rbd/librbd.h>

extern int stowageRBDChunk(uint64_t off, size_t len, char *buf, uintptr_t h);

static int chunk_cb(uint64_t off, size_t len, const char *buf, void *arg) {
	return stowageRBDChunk(off, len, (char *)buf, (uintptr_t)arg);
}

static int read_chunks(rbd_image_t image, uint64_t off, uint64_t len, uintptr_t h) {
	return rbd_read_iterate2(image, off, len, chunk_cb, (void *)h);
}

static int image_size(rbd_image_t image, uint64_t *size) {
	return rbd_get_size(image, size);
}
*/
import "C"

import (
	"fmt"
	"io"
	"runtime/cgo"
	"syscall"
	"unsafe"

	"github.com/ceph/go-ceph/rados"
	librbd "github.com/ceph/go-ceph/rbd"
)

// imageLayout is the layout of go-ceph's rbd.Image (v0.32.0), which keeps
// librbd's handle of the open image unexported. It is read, never
// written, to call librbd functions go-ceph does not wrap on the same
// handle, so that every read and write of a staged image goes through one
// librbd image context and its cache.
type imageLayout struct {
	io.Reader
	io.Writer
	io.Seeker
	io.ReaderAt
	io.WriterAt
	name   string
	offset int64
	ioctx  *rados.IOContext
	image  C.rbd_image_t
}

// The build fails here when rbd.Image changes size, a sign that its layout
// changed; TestImageHandle checks the handle itself.
var _ [1]struct{} = [unsafe.Sizeof(librbd.Image{}) - unsafe.Sizeof(imageLayout{}) + 1]struct{}{}

// handle returns librbd's handle of img.
func handle(img *librbd.Image) C.rbd_image_t {
	return (*imageLayout)(unsafe.Pointer(img)).image
}

// handleSize returns the size librbd reports through the handle, for the
// test of handle.
func handleSize(img *librbd.Image) (uint64, error) {
	var size C.uint64_t
	if r := C.image_size(handle(img), &size); r < 0 {
		return 0, syscall.Errno(-r)
	}
	return uint64(size), nil
}

// chunkReader is the state of one ReadChunks call, reached from librbd's
// callback through a cgo.Handle.
type chunkReader struct {
	use  func(p []byte)
	read int // bytes passed to use so far
}

// ReadChunks reads n bytes at off with rbd_read_iterate2, which hands over
// the bytes librbd received instead of copying them into a buffer of the
// caller's, one chunk per stripe period (an object, 4MiB by default) the
// range touches.
func (d imageDevice) ReadChunks(off int64, n int, use func(p []byte)) error {
	cr := &chunkReader{use: use}
	h := cgo.NewHandle(cr)
	defer h.Delete()
	if r := C.read_chunks(handle(d.Image), C.uint64_t(off), C.uint64_t(n), C.uintptr_t(h)); r < 0 {
		return fmt.Errorf("read %d bytes at %d: %w", n, off, syscall.Errno(-r))
	}
	if cr.read != n {
		return fmt.Errorf("read %d bytes at %d: got %d: %w", n, off, cr.read, io.ErrUnexpectedEOF)
	}
	return nil
}

//export stowageRBDChunk
func stowageRBDChunk(off C.uint64_t, n C.size_t, buf *C.char, h C.uintptr_t) C.int {
	cr := cgo.Handle(h).Value().(*chunkReader)
	cr.read += int(n)
	if buf == nil {
		// A hole, librbd's documentation says; it has sent zeros instead
		// so far.
		cr.use(make([]byte, int(n)))
		return 0
	}
	cr.use(unsafe.Slice((*byte)(unsafe.Pointer(buf)), int(n)))
	return 0
}
