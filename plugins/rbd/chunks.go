//go:build ceph && linux && cgo

package rbd

/*
#cgo LDFLAGS: -lrbd
#include <stdint.h>
#include <rbd/librbd.h>

// chunks.c; a file with //export may only declare C functions.
int stowage_read_chunks(rbd_image_t image, uint64_t off, uint64_t len, uintptr_t h);
*/
import "C"

import (
	"fmt"
	"io"
	"reflect"
	"runtime/cgo"
	"syscall"
	"unsafe"

	librbd "github.com/ceph/go-ceph/rbd"
)

// handleOffset is where go-ceph's rbd.Image keeps librbd's handle of the
// open image, in an unexported field; handleFound is false when the
// go-ceph of this build has no such field (New refuses to start then).
// The handle serves the librbd calls go-ceph does not wrap, on the image
// context that every other read and write of the image goes through.
var handleOffset, handleFound = func() (uintptr, bool) {
	f, ok := reflect.TypeFor[librbd.Image]().FieldByName("image")
	return f.Offset, ok && f.Type.Kind() == reflect.UnsafePointer
}()

// handle returns librbd's handle of img.
func handle(img *librbd.Image) C.rbd_image_t {
	return *(*C.rbd_image_t)(unsafe.Add(unsafe.Pointer(img), handleOffset))
}

// handleSize returns the size librbd reports through the handle, for
// TestRBD/ReadChunks.
func handleSize(img *librbd.Image) (uint64, error) {
	var size C.uint64_t
	if r := C.rbd_get_size(handle(img), &size); r < 0 {
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
// librbd's buffer of the bytes instead of copying them into one of the
// caller's: one chunk per stripe period (an object, 4MiB by default) that
// the range touches, made contiguous by librbd where the data came in
// pieces.
func (d imageDevice) ReadChunks(off int64, n int, use func(p []byte)) error {
	cr := &chunkReader{use: use}
	h := cgo.NewHandle(cr)
	defer h.Delete()
	if r := C.stowage_read_chunks(handle(d.Image), C.uint64_t(off), C.uint64_t(n), C.uintptr_t(h)); r < 0 {
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
