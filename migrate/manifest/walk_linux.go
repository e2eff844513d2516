package manifest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// WalkOptions tune Walk.
type WalkOptions struct {
	// Hash computes the SHA-256 of regular files.
	Hash bool
	// Previous is an earlier manifest of the same tree on the same host: the
	// hash of a file whose inode, size, mtime and ctime are unchanged is
	// taken from it instead of read again.
	Previous *Manifest
	// Exclude names entries directly below the root that are left out.
	Exclude []string
	// Lazy takes hashes from Previous only and leaves the other files
	// without one, for HashWhere to hash those that need it.
	Lazy bool
	// Settled, when set, reuses a hash from Previous only when it was
	// taken by a walk that saw the file's ctime at least Settled old
	// (Entry.HashedAt), besides the same inode, size, mtime and ctime: a
	// change within the same clock tick as the one before it may leave
	// the ctime as it was, so a hash of a file changed just before its
	// walk is not kept. Verification sets it (see SettledHash).
	Settled time.Duration
	// Settle, with Hash, waits before hashing until every file to hash
	// has a ctime SettledHash old (at most SettledHash), stating again
	// those that were younger, so that a later walk with Settled can
	// reuse all of the hashes.
	Settle bool
}

// SettledHash is the age a file's ctime must have had when its hash was
// taken for a verification to reuse that hash: well above the coarse clock
// tick (at most 10 ms) that file timestamps are taken from.
const SettledHash = 100 * time.Millisecond

// Walk returns the manifest of the tree at root, without following
// symlinks. ctx stops a long walk between files.
func Walk(ctx context.Context, root string, opts WalkOptions) (*Manifest, error) {
	w := &walker{ctx: ctx, root: root, opts: opts, start: time.Now().UnixNano(), budget: newSumsBudget()}
	if opts.Previous != nil {
		w.prev = opts.Previous.Index()
	}
	if err := w.walk("."); err != nil {
		return nil, err
	}
	m := &Manifest{Entries: w.entries, budget: w.budget}
	m.Sort()
	if err := w.finish(m); err != nil {
		return nil, err
	}
	return m, nil
}

type inode struct{ dev, ino uint64 }

type walker struct {
	ctx     context.Context
	root    string
	opts    WalkOptions
	prev    map[string]*Entry
	entries []Entry
	devs    map[string]uint64
	// start is when the walk began: every stat of it came later.
	start int64
	// statAt holds, for entries stated again by settle, when that was.
	statAt map[int]int64
	// budget bounds the block checksums kept.
	budget *sumsBudget
}

func (w *walker) abs(rel string) string {
	if rel == "." {
		return w.root
	}
	return w.root + "/" + rel
}

func (w *walker) walk(rel string) error {
	e, dev, err := Stat(w.abs(rel), rel)
	return w.visit(stated{rel, e, dev, err})
}

// stated is the result of Stat of rel.
type stated struct {
	rel string
	e   Entry
	dev uint64
	err error
}

// statWorkers is the number of entries of a directory stated at the same
// time, and statFanout the size from which a directory's are.
const (
	statWorkers = 4
	statFanout  = 32
)

// statNames states the children names of the directory rel, several at a
// time in a large directory: a walk of many small files costs little but
// system calls.
func (w *walker) statNames(dirfd int, rel string, names []string) []stated {
	out := make([]stated, len(names))
	child := func(i int) string {
		if rel == "." {
			return names[i]
		}
		return rel + "/" + names[i]
	}
	// Each name is looked up in its directory (dirfd), not along its
	// path from the root.
	one := func(i int) {
		c := child(i)
		e, dev, err := statAt(dirfd, names[i], w.abs(c), c)
		out[i] = stated{c, e, dev, err}
	}
	if len(names) < statFanout {
		for i := range names {
			one(i)
		}
		return out
	}
	parallel(w.ctx, statWorkers, len(names), func(i int) bool {
		one(i)
		return true
	})
	return out
}

// visit adds the entry st.rel, stated as st, and walks it if it is a
// directory.
func (w *walker) visit(st stated) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	rel, e, dev, err := st.rel, st.e, st.dev, st.err
	if rel != "." && errors.Is(err, fs.ErrNotExist) {
		// Removed since its directory was read (the tree is in use): the
		// next walk sees it gone.
		return nil
	}
	if err != nil {
		return err
	}
	if w.devs == nil {
		w.devs = map[string]uint64{}
	}
	w.devs[rel] = dev
	w.entries = append(w.entries, e)
	if e.Type != Dir {
		return nil
	}
	dir, err := os.OpenFile(w.abs(rel), os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if rel != "." && (errors.Is(err, fs.ErrNotExist) || errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR)) {
		return nil // removed or replaced since it was seen, as above
	}
	if err != nil {
		return err
	}
	names, err := readNames(dir)
	if rel == "." {
		names = slices.DeleteFunc(names, func(name string) bool { return slices.Contains(w.opts.Exclude, name) })
	}
	var stats []stated
	if err == nil {
		stats = w.statNames(int(dir.Fd()), rel, names)
	}
	// The children are walked with their directory closed: a deep tree
	// holds no descriptor per level.
	if cerr := dir.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	for _, st := range stats {
		if err := w.visit(st); err != nil {
			return err
		}
	}
	return nil
}

// finish assigns hard-link groups in path order and hashes regular files.
func (w *walker) finish(m *Manifest) error {
	if err := w.settle(m); err != nil {
		return err
	}
	// The files to hash are hashed first, by a pool of workers; the pass
	// in path order below takes their hashes (and hashes itself a file
	// that takes the place of one removed meanwhile).
	sums, err := w.prefetch(m)
	if err != nil {
		return err
	}
	first := map[inode]int{}
	// gone are files removed since the walk saw them.
	var gone []int
	defer func() {
		for _, i := range slices.Backward(gone) {
			m.Entries = slices.Delete(m.Entries, i, i+1)
		}
	}()
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type != Regular {
			continue
		}
		key := inode{w.devs[e.Path], e.Ino}
		if j, ok := first[key]; ok {
			e.LinkTo = m.Entries[j].Path
			e.SHA256 = m.Entries[j].SHA256
			e.sums = nil // kept by the group's first path
			e.HashedAt = m.Entries[j].HashedAt
			continue
		}
		first[key] = i
		if !w.opts.Hash {
			continue
		}
		if p := w.reusable(e); p != nil {
			e.SHA256, e.HashedAt = p.SHA256, p.HashedAt
			if p.sums != nil && w.budget.take(e.Size) {
				e.sums = p.sums
			}
			continue
		}
		if w.opts.Lazy {
			continue
		}
		if err := w.ctx.Err(); err != nil {
			return err
		}
		r, ok := sums[i]
		if !ok {
			r.sum, r.sums, r.err = hashFile(w.ctx, w.abs(e.Path), e.Size, w.budget)
		}
		if errors.Is(r.err, fs.ErrNotExist) {
			// Another link of the same inode, if any, takes its place.
			gone = append(gone, i)
			delete(first, key)
			continue
		}
		if r.err != nil {
			return r.err
		}
		e.SHA256, e.HashedAt, e.sums = r.sum, w.start, r.sums
		if at, ok := w.statAt[i]; ok {
			e.HashedAt = at
		}
		m.Hashed += e.Size
	}
	return nil
}

// settle carries out WalkOptions.Settle: it waits until the regular files
// whose ctime was younger than SettledHash when the walk began are that
// old, and states them again. A file that is no longer a regular file
// keeps its entry without a walk time for its hash.
func (w *walker) settle(m *Manifest) error {
	if !w.opts.Settle || !w.opts.Hash || w.opts.Lazy {
		return nil
	}
	margin := SettledHash.Nanoseconds()
	var young []int
	newest := int64(0)
	for i := range m.Entries {
		if e := &m.Entries[i]; e.Type == Regular && e.CtimeNS > w.start-margin {
			young = append(young, i)
			newest = max(newest, e.CtimeNS)
		}
	}
	if len(young) == 0 {
		return nil
	}
	wait := time.Duration(min(newest+margin-time.Now().UnixNano(), margin))
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-w.ctx.Done():
			t.Stop()
			return w.ctx.Err()
		case <-t.C:
		}
	}
	at := time.Now().UnixNano()
	w.statAt = make(map[int]int64, len(young))
	for _, i := range young {
		e := &m.Entries[i]
		now, dev, err := Stat(w.abs(e.Path), e.Path)
		if err != nil || now.Type != Regular || dev != w.devs[e.Path] {
			// Gone or replaced: the hash below is not reused later.
			w.statAt[i] = 0
			continue
		}
		*e = now
		w.statAt[i] = at
	}
	return nil
}

// reusable returns the entry of Previous whose hash e may take, or nil.
func (w *walker) reusable(e *Entry) *Entry {
	p, ok := w.prev[e.Path]
	if !ok || p.SHA256 == "" || p.Ino != e.Ino || p.Size != e.Size || p.MtimeNS != e.MtimeNS || p.CtimeNS != e.CtimeNS {
		return nil
	}
	if w.opts.Settled > 0 && (p.HashedAt == 0 || p.CtimeNS > p.HashedAt-w.opts.Settled.Nanoseconds()) {
		return nil
	}
	return p
}

type hashResult struct {
	sum  string
	sums []byte
	err  error
}

// prefetch hashes, with hashWorkers at a time, the regular files that
// finish would hash: the first path of each inode that has no reusable
// hash. It returns the results by entry index.
func (w *walker) prefetch(m *Manifest) (map[int]hashResult, error) {
	if !w.opts.Hash || w.opts.Lazy {
		return nil, nil
	}
	seen := map[inode]bool{}
	var todo []int
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type != Regular {
			continue
		}
		key := inode{w.devs[e.Path], e.Ino}
		if seen[key] {
			continue
		}
		seen[key] = true
		if w.reusable(e) == nil {
			todo = append(todo, i)
		}
	}
	sums := make(map[int]hashResult, len(todo))
	if len(todo) == 0 {
		return sums, nil
	}
	results := make([]hashResult, len(todo))
	parallel(w.ctx, hashWorkers, len(todo), func(k int) bool {
		e := &m.Entries[todo[k]]
		sum, sums, err := hashFile(w.ctx, w.abs(e.Path), e.Size, w.budget)
		results[k] = hashResult{sum, sums, err}
		return err == nil || errors.Is(err, fs.ErrNotExist)
	})
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	for k, i := range todo {
		if r := results[k]; r.sum != "" || r.err != nil {
			sums[i] = r
		}
	}
	return sums, nil
}

// Stat returns the entry of the file at path, named rel, and the device it
// lives on. It does not follow a symlink and does not hash.
func Stat(path, rel string) (Entry, uint64, error) {
	return statAt(unix.AT_FDCWD, path, path, rel)
}

// statAt is Stat of name in the directory dirfd, which is path.
func statAt(dirfd int, name, path, rel string) (Entry, uint64, error) {
	var st unix.Stat_t
	if err := unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil {
		return Entry{}, 0, &os.PathError{Op: "lstat", Path: path, Err: err}
	}
	e := Entry{
		Path:    rel,
		Mode:    st.Mode & 0o7777,
		UID:     st.Uid,
		GID:     st.Gid,
		MtimeNS: st.Mtim.Nano(),
		CtimeNS: st.Ctim.Nano(),
		Ino:     st.Ino,
		Blocks:  st.Blocks,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		e.Type = Regular
		e.Size = st.Size
	case unix.S_IFDIR:
		e.Type = Dir
	case unix.S_IFLNK:
		e.Type = Symlink
		t, err := readlinkAt(dirfd, name, path, st.Size)
		if err != nil {
			return Entry{}, 0, err
		}
		e.Target = t
	case unix.S_IFCHR:
		e.Type = CharDevice
		e.Rdev = st.Rdev
	case unix.S_IFBLK:
		e.Type = BlockDevice
		e.Rdev = st.Rdev
	case unix.S_IFIFO:
		e.Type = FIFO
	case unix.S_IFSOCK:
		e.Type = Socket
	default:
		return Entry{}, 0, fmt.Errorf("stat %s: unknown file type %#o", Quote(path), st.Mode&unix.S_IFMT)
	}
	x, err := xattrsAt(dirfd, name, path)
	if err != nil {
		return Entry{}, 0, err
	}
	e.Xattrs = x
	return e, st.Dev, nil
}

// readlinkAt returns the target of the symlink name in dirfd (path), of
// size bytes as stat saw it.
func readlinkAt(dirfd int, name, path string, size int64) (string, error) {
	buf := make([]byte, max(size+1, 128))
	for {
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", &os.PathError{Op: "readlink", Path: path, Err: err}
		}
		if n < len(buf) {
			return string(buf[:n]), nil
		}
		// Longer than stat said: it was replaced meanwhile.
		buf = make([]byte, 2*len(buf))
	}
}

// noListxattrat is set once listxattrat turned out to be missing: before
// Linux 6.13 (ENOSYS), or refused by a seccomp filter that predates it,
// as in containers (EPERM). Names are then listed by path.
var noListxattrat atomic.Bool

// xattrsAt is Xattrs of name in the directory dirfd, which is path. The
// names are listed relative to dirfd where the kernel can; the values,
// which few files have, are read by path.
func xattrsAt(dirfd int, name, path string) (map[string][]byte, error) {
	if dirfd == unix.AT_FDCWD || noListxattrat.Load() {
		return Xattrs(path)
	}
	var small [256]byte
	buf := small[:]
	for {
		n, err := listxattrat(dirfd, name, buf)
		switch {
		case errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM):
			noListxattrat.Store(true)
			return Xattrs(path)
		case errors.Is(err, unix.ERANGE):
			buf = make([]byte, 2*len(buf))
			continue
		case errors.Is(err, unix.ENOTSUP):
			return nil, nil
		case err != nil:
			return nil, &os.PathError{Op: "listxattrat", Path: path, Err: err}
		case n == 0:
			return nil, nil
		}
		return readXattrs(path, splitNames(buf[:n]))
	}
}

// listxattrat lists the extended attribute names of name in dirfd, not
// following a symlink, into buf.
func listxattrat(dirfd int, name string, buf []byte) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	r, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(unsafe.SliceData(buf))), uintptr(len(buf)), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}

// splitNames splits a list of NUL-terminated names.
func splitNames(b []byte) []string {
	var names []string
	for start := 0; start < len(b); {
		end := start
		for end < len(b) && b[end] != 0 {
			end++
		}
		if end > start {
			names = append(names, string(b[start:end]))
		}
		start = end + 1
	}
	return names
}

// Xattrs returns the extended attributes of path (not following a symlink),
// or nil when it has none.
func Xattrs(path string) (map[string][]byte, error) {
	names, err := listXattrs(path)
	if err != nil || len(names) == 0 {
		return nil, err
	}
	return readXattrs(path, names)
}

// readXattrs returns the values of the extended attributes names of path;
// one removed meanwhile is left out.
func readXattrs(path string, names []string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(names))
	for _, name := range names {
		v, err := getXattr(path, name)
		if errors.Is(err, unix.ENODATA) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[name] = v
	}
	return out, nil
}

func listXattrs(path string) ([]string, error) {
	buf := make([]byte, 1024)
	for {
		n, err := unix.Llistxattr(path, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err := unix.Llistxattr(path, nil)
			if err != nil {
				return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
			}
			buf = make([]byte, sz+1)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, &os.PathError{Op: "llistxattr", Path: path, Err: err}
		}
		return splitNames(buf[:n]), nil
	}
}

func getXattr(path, name string) ([]byte, error) {
	buf := make([]byte, 256)
	for {
		n, err := unix.Lgetxattr(path, name, buf)
		if errors.Is(err, unix.ERANGE) {
			sz, err := unix.Lgetxattr(path, name, nil)
			if err != nil {
				return nil, &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
			}
			buf = make([]byte, sz+1)
			continue
		}
		if err != nil {
			return nil, &os.PathError{Op: "lgetxattr " + name, Path: path, Err: err}
		}
		return append([]byte{}, buf[:n]...), nil
	}
}

// readNames returns the names in the open directory dir, sorted.
func readNames(dir *os.File) ([]string, error) {
	names, err := dir.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("read directory %s: %w", Quote(dir.Name()), err)
	}
	slices.Sort(names)
	return names, nil
}

// Extents returns the data regions of the file at path as (offset, length)
// pairs, skipping holes; a file without holes is one region.
func Extents(f *os.File, size int64) ([][2]int64, error) {
	fd := int(f.Fd())
	var out [][2]int64
	for off := int64(0); off < size; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break
		}
		if err != nil {
			if errors.Is(err, unix.EINVAL) {
				return [][2]int64{{0, size}}, nil
			}
			return nil, fmt.Errorf("seek data in %s: %w", Quote(f.Name()), err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return nil, fmt.Errorf("seek hole in %s: %w", Quote(f.Name()), err)
		}
		hole = min(hole, size)
		if hole > data {
			out = append(out, [2]int64{data, hole - data})
		}
		off = hole
	}
	return out, nil
}

// hashBufs holds the read buffers of hashWhole.
var hashBufs = sync.Pool{New: func() any { return new([64 << 10]byte) }}

// hashWhole returns the hex SHA-256 of the file at path. It reads with
// plain system calls and a pooled buffer: os.Open costs several more calls
// per file (poller registration, file status flags) and io.Copy a buffer,
// which a walk of many small files feels.
func hashWhole(ctx context.Context, path string) (string, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", fmt.Errorf("hash file: %w", &os.PathError{Op: "open", Path: path, Err: err})
	}
	defer unix.Close(fd)
	buf := hashBufs.Get().(*[64 << 10]byte)
	defer hashBufs.Put(buf)
	h := sha256.New()
	for {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		n, err := unix.Read(fd, buf[:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("hash %s: %w", Quote(path), err)
		}
		if n == 0 {
			break
		}
		h.Write(buf[:n])
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])), nil
}
