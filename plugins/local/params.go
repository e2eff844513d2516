package local

import (
	"fmt"

	"github.com/stowage/stowage/plugins/volume"
)

// Option keys and values; the package doc is their reference.
const (
	keyType = "type"
	keyFS   = "fs"

	typeDir = "dir"
	typeFS  = "fs"

	fsExt4 = "ext4"
	fsXFS  = "xfs"
)

// minSize is the smallest image each file system accepts. mkfs.xfs (xfsprogs
// 5.19 and later) refuses file systems below 300MiB; ext4 works from about
// 2MiB, and 4MiB leaves room for a journal.
var minSize = map[string]int64{
	fsExt4: 4 << 20,
	fsXFS:  300 << 20,
}

// sizeAlign is the granularity of image sizes: requests are rounded up to it.
const sizeAlign = 4096

// spec is a resolved, valid volume configuration.
type spec struct {
	Type          string
	FS            string // empty for type dir
	CapacityBytes int64  // 0 for type dir
}

// parseParameters checks params and capacity and resolves the defaults:
// a capacity without a type means type fs, and fs defaults to ext4.
func parseParameters(capacity int64, params map[string]string) (spec, error) {
	if err := volume.CheckParameters(params, keyType, keyFS); err != nil {
		return spec{}, err
	}
	if capacity < 0 {
		return spec{}, fmt.Errorf("%w: size must not be negative", volume.ErrInvalid)
	}
	typ, hasType := params[keyType]
	switch {
	case !hasType && capacity > 0:
		typ = typeFS
	case !hasType:
		typ = typeDir
	case typ != typeDir && typ != typeFS:
		return spec{}, fmt.Errorf("%w: type %q is not supported (use dir or fs)", volume.ErrInvalid, typ)
	}
	fs, hasFS := params[keyFS]
	if hasFS && fs != fsExt4 && fs != fsXFS {
		return spec{}, fmt.Errorf("%w: fs %q is not supported (use ext4 or xfs)", volume.ErrInvalid, fs)
	}
	if typ == typeDir {
		if hasFS {
			return spec{}, fmt.Errorf("%w: option fs needs type=fs and a size", volume.ErrInvalid)
		}
		if capacity > 0 {
			return spec{}, fmt.Errorf("%w: type=dir cannot enforce a size (use type=fs, or no size)", volume.ErrInvalid)
		}
		return spec{Type: typeDir}, nil
	}
	if !hasFS {
		fs = fsExt4
	}
	if capacity == 0 {
		return spec{}, fmt.Errorf("%w: type=fs needs a size (e.g. size=1GiB)", volume.ErrInvalid)
	}
	if capacity < minSize[fs] {
		return spec{}, fmt.Errorf("%w: size %s is below the minimum for %s of %s",
			volume.ErrInvalid, volume.FormatSize(capacity), fs, volume.FormatSize(minSize[fs]))
	}
	if capacity > (1<<63-1)-sizeAlign {
		return spec{}, fmt.Errorf("%w: size %d is too large", volume.ErrInvalid, capacity)
	}
	capacity = (capacity + sizeAlign - 1) / sizeAlign * sizeAlign
	return spec{Type: typeFS, FS: fs, CapacityBytes: capacity}, nil
}

// maxIDLen keeps IDs within one path component.
const maxIDLen = 255

// checkID returns an ErrInvalid error unless id is a valid volume name
// (volume.ValidName), which local uses as IDs: the first character is never
// a dot, so an ID is never ".", ".." or one of the provider's own
// dot-files, and it has no slash, so it names one directory directly under
// the root.
func checkID(id string) error {
	if len(id) > maxIDLen || !volume.ValidName(id) {
		return fmt.Errorf("%w: volume name %q is not valid (use "+volume.NameRule+", at most %d characters)",
			volume.ErrInvalid, id, maxIDLen)
	}
	return nil
}
