// Package manifest describes a directory tree as a sorted list of entries:
// each entry's type, numeric owner, mode, nanosecond mtime, extended
// attributes (POSIX ACLs included), hard-link group and, for regular files,
// a SHA-256 of the content. Two trees hold the same data and metadata when
// their manifests are Equal; Diff says what differs.
//
// Paths are relative to the tree's root, separated by "/", and may hold any
// byte but NUL and "/" in a name (spaces, newlines, non-UTF-8 bytes): they
// are kept as raw bytes in Go strings, and manifests travel as gob, which
// keeps them intact. The root itself is the entry ".".
package manifest

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// Type is the kind of a file.
type Type uint8

// File types.
const (
	Regular Type = iota + 1
	Dir
	Symlink
	CharDevice
	BlockDevice
	FIFO
	Socket
)

var typeNames = map[Type]string{
	Regular: "file", Dir: "dir", Symlink: "symlink", CharDevice: "char device",
	BlockDevice: "block device", FIFO: "fifo", Socket: "socket",
}

func (t Type) String() string {
	if s, ok := typeNames[t]; ok {
		return s
	}
	return "type " + strconv.Itoa(int(t))
}

// Entry is one file of a tree.
type Entry struct {
	// Path is relative to the root, "/"-separated; "." is the root.
	Path string
	Type Type
	// Mode holds the permission bits with setuid, setgid and sticky
	// (07777), without the type.
	Mode uint32
	UID  uint32
	GID  uint32
	// Size is the length of a regular file's content; 0 for other types.
	Size int64
	// MtimeNS is the modification time in nanoseconds since the epoch.
	MtimeNS int64
	// Rdev is a device node's device number.
	Rdev uint64
	// Target is a symlink's target, as stored.
	Target string
	// LinkTo is, for the second and later paths of a hard-linked regular
	// file (in path order), the first path of the group; empty otherwise.
	LinkTo string
	// Xattrs holds every extended attribute by name, POSIX ACLs
	// (system.posix_acl_access, system.posix_acl_default) included.
	Xattrs map[string][]byte
	// SHA256 is the hex SHA-256 of a regular file's content; empty for other
	// types, and when the walk did not hash.
	SHA256 string

	// Local facts of the walking host, not compared: they let a later walk
	// reuse a hash of an unchanged file and the sender find holes.
	Ino     uint64 `json:"-"`
	CtimeNS int64  `json:"-"`
	Blocks  int64  `json:"-"`
	// HashedAt is when the walk that took SHA256 began (ns since the
	// epoch): the file's stat was taken after it. 0 when the hash came
	// from elsewhere (see WalkOptions.Settled).
	HashedAt int64 `json:"-"`
	// sums are the block checksums taken in the read that took SHA256
	// (BlockSums); unexported, so that they stay on the host that took
	// them.
	sums []byte
}

// Manifest is a tree's entries sorted by Path.
type Manifest struct {
	Entries []Entry
	// Hashed is the number of content bytes the walk read to hash (the
	// rest reused earlier hashes).
	Hashed int64
	// budget bounds the block checksums that HashWhere and HashEntry keep.
	budget *sumsBudget
}

// Sort orders the entries by path (byte order, so a directory comes before
// what it holds).
func (m *Manifest) Sort() {
	slices.SortFunc(m.Entries, func(a, b Entry) int { return cmp.Compare(a.Path, b.Path) })
}

// Index returns the entries by path.
func (m *Manifest) Index() map[string]*Entry {
	idx := make(map[string]*Entry, len(m.Entries))
	for i := range m.Entries {
		idx[m.Entries[i].Path] = &m.Entries[i]
	}
	return idx
}

// hashWorkers is the number of files hashed at the same time: small files
// cost more in system calls and waits than in hashing.
const hashWorkers = 4

// parallel calls do(k) for every k in [0, n), workers at a time. A worker
// stops when do returns false; all stop once ctx ends.
func parallel(ctx context.Context, workers, n int, do func(k int) bool) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				k := int(next.Add(1)) - 1
				if k >= n || ctx.Err() != nil || !do(k) {
					return
				}
			}
		})
	}
	wg.Wait()
}

// HashWhere hashes the regular files of the tree at root that have no
// hash yet and for which need is true (for a hard-link group, the group's
// first path stands for all), and gives the group's other paths the same
// hash.
func (m *Manifest) HashWhere(ctx context.Context, root string, need func(e *Entry) bool) error {
	want := map[string]bool{}
	for i := range m.Entries {
		e := &m.Entries[i]
		if e.Type == Regular && e.SHA256 == "" && need(e) {
			want[cmp.Or(e.LinkTo, e.Path)] = true
		}
	}
	if len(want) == 0 {
		return nil
	}
	var todo []*Entry
	sums := map[string]string{}
	for i := range m.Entries {
		e := &m.Entries[i]
		switch {
		case e.LinkTo != "" || !want[e.Path]:
		case e.SHA256 != "":
			sums[e.Path] = e.SHA256 // hashed already, the links not
		default:
			todo = append(todo, e)
		}
	}
	// hashWorkers files at a time, as a walk hashes.
	budget := m.sumsBudget()
	errs := make([]error, len(todo))
	parallel(ctx, hashWorkers, len(todo), func(k int) bool {
		e := todo[k]
		e.SHA256, e.sums, errs[k] = hashFile(ctx, root+"/"+e.Path, e.Size, budget)
		return errs[k] == nil
	})
	if err := ctx.Err(); err != nil {
		return err
	}
	for k, e := range todo {
		if errs[k] != nil {
			return errs[k]
		}
		if e.SHA256 != "" {
			sums[e.Path] = e.SHA256
			m.Hashed += e.Size
		}
	}
	for i := range m.Entries {
		if e := &m.Entries[i]; e.LinkTo != "" && sums[e.LinkTo] != "" {
			e.SHA256 = sums[e.LinkTo]
			e.sums = nil // kept by the group's first path
		}
	}
	return nil
}

// Totals returns the number of entries and the bytes of regular files that
// are not hard links to an earlier path.
func (m *Manifest) Totals() (files int, bytes int64) {
	for _, e := range m.Entries {
		if e.Type == Regular && e.LinkTo == "" {
			bytes += e.Size
		}
	}
	return len(m.Entries), bytes
}

// Field names a difference between two entries of the same path.
type Field string

// Fields that Compare reports.
const (
	FieldMissing Field = "missing"
	FieldExtra   Field = "extra"
	FieldType    Field = "type"
	FieldContent Field = "content"
	FieldSize    Field = "size"
	FieldMode    Field = "mode"
	FieldOwner   Field = "owner"
	FieldMtime   Field = "mtime"
	FieldRdev    Field = "rdev"
	FieldTarget  Field = "target"
	FieldLink    Field = "hard link"
	FieldXattrs  Field = "xattrs"
)

// Compare returns the fields in which have differs from want, both entries
// of the same path; nil when they are the same. Content is compared by hash
// when both have one, and by size always.
func Compare(want, have *Entry) []Field {
	if want.Type != have.Type {
		return []Field{FieldType}
	}
	var fs []Field
	if want.LinkTo != have.LinkTo {
		fs = append(fs, FieldLink)
	}
	if want.Type == Regular {
		if want.Size != have.Size {
			fs = append(fs, FieldSize)
		}
		if want.SHA256 != "" && have.SHA256 != "" && want.SHA256 != have.SHA256 {
			fs = append(fs, FieldContent)
		}
	}
	if want.Type != Symlink && want.Mode != have.Mode {
		fs = append(fs, FieldMode)
	}
	if want.UID != have.UID || want.GID != have.GID {
		fs = append(fs, FieldOwner)
	}
	if want.MtimeNS != have.MtimeNS {
		fs = append(fs, FieldMtime)
	}
	if (want.Type == CharDevice || want.Type == BlockDevice) && want.Rdev != have.Rdev {
		fs = append(fs, FieldRdev)
	}
	if want.Target != have.Target {
		fs = append(fs, FieldTarget)
	}
	if !maps.EqualFunc(want.Xattrs, have.Xattrs, func(a, b []byte) bool { return string(a) == string(b) }) {
		fs = append(fs, FieldXattrs)
	}
	return fs
}

// Difference is one path whose entries differ.
type Difference struct {
	Path   string
	Fields []Field
}

func (d Difference) String() string {
	names := make([]string, len(d.Fields))
	for i, f := range d.Fields {
		names[i] = string(f)
	}
	return fmt.Sprintf("%s: %s", Quote(d.Path), strings.Join(names, ", "))
}

// Diff returns every path where have differs from want, in path order: a
// path only in want is FieldMissing, one only in have FieldExtra.
func Diff(want, have *Manifest) []Difference {
	hidx := have.Index()
	var out []Difference
	for i := range want.Entries {
		w := &want.Entries[i]
		h, ok := hidx[w.Path]
		if !ok {
			out = append(out, Difference{Path: w.Path, Fields: []Field{FieldMissing}})
			continue
		}
		if fs := Compare(w, h); fs != nil {
			out = append(out, Difference{Path: w.Path, Fields: fs})
		}
	}
	widx := want.Index()
	for _, h := range have.Entries {
		if _, ok := widx[h.Path]; !ok {
			out = append(out, Difference{Path: h.Path, Fields: []Field{FieldExtra}})
		}
	}
	slices.SortStableFunc(out, func(a, b Difference) int { return cmp.Compare(a.Path, b.Path) })
	return out
}

// Quote returns p quoted for messages, with control and non-UTF-8 bytes
// escaped, so that any name prints on one line.
func Quote(p string) string { return strconv.Quote(p) }
