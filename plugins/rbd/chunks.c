//go:build ceph && linux && cgo

#include "_cgo_export.h"

// chunk_cb passes a chunk of a read to the Go function of the call (h).
static int chunk_cb(uint64_t off, size_t len, const char *buf, void *arg) {
	return stowageRBDChunk(off, len, (char *)buf, (uintptr_t)arg);
}

// stowage_read_chunks reads len bytes at off and hands librbd's buffers to
// chunk_cb (imageDevice.ReadChunks).
int stowage_read_chunks(rbd_image_t image, uint64_t off, uint64_t len, uintptr_t h) {
	return rbd_read_iterate2(image, off, len, chunk_cb, (void *)h);
}
