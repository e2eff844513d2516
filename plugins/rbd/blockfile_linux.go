package rbd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// device is a block device the provider serves as a file: an open RBD
// image. Its methods are safe for concurrent use.
type device interface {
	// ReadChunks reads n bytes at off and passes them to use in order, in
	// one chunk or in several. A chunk's bytes are the device's: they stay
	// valid only until use returns, so that a reader may send them on
	// without copying them first.
	ReadChunks(off int64, n int, use func(p []byte)) error
	WriteAt(p []byte, off int64) (int, error)
	Flush() error
	// Discard frees the range; the device reads zeros there afterwards.
	Discard(off, length uint64) (int, error)
	// Size returns the current size in bytes.
	Size() (uint64, error)
}

// blockFileName is the name of the one file in a block file mount.
const blockFileName = "image"

// blockFile serves a device as the single file <dir>/image of a FUSE
// mount, so that a loop device can attach it: the userspace path from an
// RBD image to a block device, needing neither krbd nor nbd.
type blockFile struct {
	dir  string
	srv  *fuse.Server
	node *blockNode
}

// flush is the file's fsync, for every flush of its device: the
// snapshot's and the last one before the device is closed go through it
// too, so that none of them takes an error that the file would not see.
func (b *blockFile) flush() error { return b.node.flush() }

// lostWrites returns the error of the write or flush that failed, nil
// while none did: what was written may be lost.
func (b *blockFile) lostWrites() error {
	b.node.flushMu.Lock()
	defer b.node.flushMu.Unlock()
	return b.node.lostErr
}

// path returns the file's path.
func (b *blockFile) path() string { return b.dir + "/" + blockFileName }

// serveBlockFile mounts dir as a FUSE file system holding one file that
// reads and writes dev. It refuses writes when readOnly is set.
func serveBlockFile(dir, name string, dev device, readOnly bool) (*blockFile, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	zero := time.Duration(0)
	root := &blockRoot{file: &blockNode{dev: dev, readOnly: readOnly}}
	opts := &fs.Options{
		// The size changes when the image grows: never cache it.
		AttrTimeout:  &zero,
		EntryTimeout: &zero,
		MountOptions: fuse.MountOptions{
			// 1MiB requests instead of the default 128KiB, as RBD objects
			// are 4MiB.
			MaxWrite: 1 << 20,
			// The loop device's direct I/O submits each request as
			// asynchronous I/O; without ASYNC_DIO the kernel waits for
			// each FUSE request in turn, one in flight per device.
			// Asynchronous requests count against MaxBackground.
			ExtraCapabilities: fuse.CAP_ASYNC_DIO,
			MaxBackground:     64,
			// Without it the kernel asks for the attributes before every
			// read (AUTO_INVAL_DATA, with the attributes never cached), a
			// synchronous round trip that the loop device's worker waits
			// for before it submits the next request. The file has no page
			// cache to keep coherent, as the loop device reads and writes
			// it with direct I/O; a read past the size the kernel knows,
			// and every stat, still ask.
			ExplicitDataCacheControl: true,
			DirectMount:              true, // as root, without fusermount
			FsName:                   "rbd:" + name,
			Name:                     "stowage-rbd",
			DisableXAttrs:            true,
			// Reads come from memory, never from a file descriptor.
			DisableSplice: true,
			Logger:        log.New(io.Discard, "", 0), // libraries never print
		},
	}
	srv, err := fs.Mount(dir, root, opts)
	if err != nil {
		return nil, fmt.Errorf("mount FUSE file at %s: %w", dir, err)
	}
	return &blockFile{dir: dir, srv: srv, node: root.file}, nil
}

// close unmounts the FUSE file system and waits until its server stops.
// A mount the kernel already dropped counts as unmounted.
func (b *blockFile) close() error {
	err := b.srv.Unmount()
	if err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("unmount FUSE file at %s: %w", b.dir, err)
	}
	b.srv.Wait()
	// A read answered from the device's memory returns from the device
	// after its reply went out.
	b.node.reads.Wait()
	if err := os.Remove(b.dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// blockRoot is the root directory of a block file mount.
type blockRoot struct {
	fs.Inode
	file *blockNode
	once sync.Once
}

var _ fs.NodeOnAdder = (*blockRoot)(nil)

// OnAdd adds the one file.
func (r *blockRoot) OnAdd(ctx context.Context) {
	r.once.Do(func() {
		ch := r.NewPersistentInode(ctx, r.file, fs.StableAttr{Mode: syscall.S_IFREG, Ino: 2})
		r.AddChild(blockFileName, ch, false)
	})
}

// blockNode is the file: every read and write goes to the device.
//
// A write the device failed, or a flush, leaves its contents in doubt: a
// flush waits for every write before it and fails if one of them failed
// (a device may acknowledge a write before it is safe, as a disk with a
// volatile write cache does), and a write may have reached part of its
// range. So once one of them failed, every later read, write and flush
// fails too, until the file is served anew. So that a flush's failure
// reaches the flush that waited for the write, and no later flush reports
// success first, one flush runs at a time.
type blockNode struct {
	fs.Inode
	dev      device
	readOnly bool

	flushMu sync.Mutex
	lostErr error       // the write or flush that failed; guarded by flushMu
	lost    atomic.Bool // lostErr is set, for reads and writes

	reads sync.WaitGroup // reads still in the device (see read)
}

// errLostWrites is what every flush returns after a write or flush failed.
var errLostWrites = errors.New("an earlier write or flush failed: the device's contents are in doubt")

var (
	_ fs.NodeOpener    = (*blockNode)(nil)
	_ fs.NodeGetattrer = (*blockNode)(nil)
	_ fs.NodeSetattrer = (*blockNode)(nil)
	_ fs.NodeReader    = (*blockNode)(nil)
	_ fs.NodeWriter    = (*blockNode)(nil)
	_ fs.NodeFsyncer   = (*blockNode)(nil)
	_ fs.NodeFlusher   = (*blockNode)(nil)
	_ fs.NodeAllocater = (*blockNode)(nil)
)

// Open allows read-write opens only of a writable device.
func (n *blockNode) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	if n.readOnly && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	return nil, 0, 0
}

// Getattr reports the device's current size.
func (n *blockNode) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	size, err := n.dev.Size()
	if err != nil {
		return errno(err)
	}
	out.Mode = syscall.S_IFREG | 0o600
	if n.readOnly {
		out.Mode = syscall.S_IFREG | 0o400
	}
	out.Size = size
	out.Blksize = 4096
	out.Blocks = (size + 511) / 512
	out.Nlink = 1
	return 0
}

// Setattr accepts only what changes nothing: the size is the image's.
func (n *blockNode) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	if sz, ok := in.GetSize(); ok {
		cur, err := n.dev.Size()
		if err != nil {
			return errno(err)
		}
		if sz != cur {
			return syscall.EPERM
		}
	}
	return n.Getattr(ctx, f, out)
}

// Read reads from the device; reads past the end are short.
func (n *blockNode) Read(ctx context.Context, f fs.FileHandle, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if n.lost.Load() {
		return nil, syscall.EIO
	}
	size, err := n.dev.Size()
	if err != nil {
		return nil, errno(err)
	}
	if off >= int64(size) {
		return fuse.ReadResultData(nil), 0
	}
	if rest := int64(size) - off; int64(len(dest)) > rest {
		dest = dest[:rest]
	}
	return n.read(dest, off)
}

// read reads len(dest) bytes at off. When the device returns them in one
// chunk, the reply to the kernel is written from the device's own memory,
// which the device lends until then; otherwise the chunks are copied into
// dest. The copy a lent read saves is one of three for each byte on this
// path (the network, this one, the reply to the kernel). The device's call
// returns only after the reply went out: close waits for it.
func (n *blockNode) read(dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	lent := make(chan []byte)
	done := make(chan struct{})
	errc := make(chan error, 1)
	n.reads.Add(1)
	go func() {
		defer n.reads.Done()
		copied := 0
		errc <- n.dev.ReadChunks(off, len(dest), func(p []byte) {
			if copied == 0 && len(p) == len(dest) {
				lent <- p
				<-done // the reply is written
				return
			}
			copied += copy(dest[copied:], p)
		})
	}()
	select {
	case p := <-lent:
		// ReadChunks has nothing left to read and no error to return.
		return &lentRead{data: p, done: done}, 0
	case err := <-errc:
		if err != nil {
			return nil, errno(err)
		}
		return fuse.ReadResultData(dest), 0
	}
}

// lentRead is the result of a read whose bytes the device lends until the
// reply is written. go-fuse writes a result that has Slices straight from
// them, and calls Done after it wrote the reply, or found it could not.
type lentRead struct {
	data []byte
	done chan struct{}
	once sync.Once
}

func (r *lentRead) Size() int { return len(r.data) }

// Slices returns the bytes to write.
func (r *lentRead) Slices() ([][]byte, fuse.Status) { return [][]byte{r.data}, fuse.OK }

// Bytes returns the bytes, which stay valid until Done.
func (r *lentRead) Bytes([]byte) ([]byte, fuse.Status) { return r.data, fuse.OK }

// Done gives the bytes back to the device.
func (r *lentRead) Done() { r.once.Do(func() { close(r.done) }) }

// Write writes to the device; writes past the end fail with ENOSPC, as
// the image cannot grow by writing.
func (n *blockNode) Write(ctx context.Context, f fs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	if n.readOnly {
		return 0, syscall.EROFS
	}
	if n.lost.Load() {
		return 0, syscall.EIO
	}
	size, err := n.dev.Size()
	if err != nil {
		return 0, errno(err)
	}
	if off+int64(len(data)) > int64(size) {
		return 0, syscall.ENOSPC
	}
	w, err := n.dev.WriteAt(data, off)
	if err != nil {
		n.fail(err)
		return uint32(w), errno(err)
	}
	return uint32(w), 0
}

// Fsync waits until the device has every write acknowledged before it, one
// flush at a time (see blockNode).
func (n *blockNode) Fsync(ctx context.Context, f fs.FileHandle, flags uint32) syscall.Errno {
	err := n.flush()
	if errors.Is(err, errLostWrites) {
		return syscall.EIO
	}
	return errno(err)
}

// flush flushes the device, one flush at a time; after one failed, it
// fails without flushing (see blockNode).
func (n *blockNode) flush() error {
	if n.readOnly {
		return nil
	}
	n.flushMu.Lock()
	defer n.flushMu.Unlock()
	if n.lostErr != nil {
		return errLostWrites
	}
	if err := n.dev.Flush(); err != nil {
		n.lostErr = err
		n.lost.Store(true)
		return err
	}
	return nil
}

// fail records that a write or discard of the device failed (see
// blockNode).
func (n *blockNode) fail(err error) {
	n.flushMu.Lock()
	defer n.flushMu.Unlock()
	if n.lostErr == nil {
		n.lostErr = err
		n.lost.Store(true)
	}
}

// Flush flushes on close, as Fsync does.
func (n *blockNode) Flush(ctx context.Context, f fs.FileHandle) syscall.Errno {
	return n.Fsync(ctx, f, 0)
}

// Allocate supports punching holes, which the loop device sends for
// discards, so that trimming the file system frees space in the cluster.
func (n *blockNode) Allocate(ctx context.Context, f fs.FileHandle, off, size uint64, mode uint32) syscall.Errno {
	const punch = 0x01 | 0x02 // FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
	if mode&punch != punch {
		return syscall.EOPNOTSUPP
	}
	if n.readOnly {
		return syscall.EROFS
	}
	if n.lost.Load() {
		return syscall.EIO
	}
	if _, err := n.dev.Discard(off, size); err != nil {
		n.fail(err)
		return errno(err)
	}
	return 0
}

// errno returns the errno of a device error; librbd errors carry a
// negative one.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e := errnoOf(err); e != 0 {
		return e
	}
	return syscall.EIO
}
