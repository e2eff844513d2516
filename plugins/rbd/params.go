package rbd

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/stowage/stowage/plugins/volume"
)

// Option keys and values; the package doc is their reference.
const (
	keyFS = "fs"

	fsExt4 = "ext4"
	fsXFS  = "xfs"
)

// minSize is the smallest image each file system accepts: mkfs.xfs
// refuses below 300MiB, ext4 leaves room for a journal from 4MiB.
var minSize = map[string]int64{
	fsExt4: 4 << 20,
	fsXFS:  300 << 20,
}

// DefaultSize is the size of a volume created without one (CSI lets a
// request leave the capacity to the driver). Images are thin, so it costs
// only what is written.
const DefaultSize = 1 << 30

// sizeAlign is the granularity of image sizes: requests are rounded up to
// it.
const sizeAlign = 1 << 20

// maxSize keeps sizes far from overflow; RBD itself allows more.
const maxSize = 1 << 50

// spec is a resolved, valid volume configuration, as recorded in the
// image's metadata.
type spec struct {
	FS            string `json:"fs"`
	CapacityBytes int64  `json:"capacity_bytes"`
	// Source is the snapshot ID the volume was cloned from, if any.
	Source string `json:"source,omitempty"`
	// SourceVolume is the volume it is a copy of, if any.
	SourceVolume string `json:"source_volume,omitempty"`
}

// parseParameters checks params and capacity and resolves the defaults.
func parseParameters(capacity int64, params map[string]string) (spec, error) {
	if err := volume.CheckParameters(params, keyFS); err != nil {
		return spec{}, err
	}
	fs, ok := params[keyFS]
	switch {
	case !ok:
		fs = fsExt4
	case fs != fsExt4 && fs != fsXFS:
		return spec{}, fmt.Errorf("%w: fs %q is not supported (use ext4 or xfs)", volume.ErrInvalid, fs)
	}
	c, err := checkSize(capacity, fs)
	if err != nil {
		return spec{}, err
	}
	return spec{FS: fs, CapacityBytes: c}, nil
}

// checkSize checks a requested size for a file system and rounds it up;
// 0 means DefaultSize.
func checkSize(capacity int64, fs string) (int64, error) {
	switch {
	case capacity < 0:
		return 0, fmt.Errorf("%w: size %d must not be negative (use e.g. size=1GiB)", volume.ErrInvalid, capacity)
	case capacity == 0:
		capacity = DefaultSize
	case capacity > maxSize:
		return 0, fmt.Errorf("%w: size %s is too large (at most %s)", volume.ErrInvalid, volume.FormatSize(capacity), volume.FormatSize(maxSize))
	}
	if capacity < minSize[fs] {
		return 0, fmt.Errorf("%w: size %s is below the minimum for %s of %s",
			volume.ErrInvalid, volume.FormatSize(capacity), fs, volume.FormatSize(minSize[fs]))
	}
	return (capacity + sizeAlign - 1) / sizeAlign * sizeAlign, nil
}

// maxNameLen keeps names within RBD's limits.
const maxNameLen = 128

// checkName returns an ErrInvalid error unless name is a valid volume or
// snapshot name; what says which. The provider uses Docker's volume names
// (volume.ValidName) as RBD image and snapshot names: they exclude "/" and
// "@", which RBD gives a meaning, and a leading dot, which marks the
// provider's work images.
func checkName(what, name string) error {
	if len(name) > maxNameLen || !volume.ValidName(name) {
		return fmt.Errorf("%w: %s name %q is not valid (use "+volume.NameRule+", at most %d characters)",
			volume.ErrInvalid, what, name, maxNameLen)
	}
	return nil
}

// snapshotID returns the ID of snapshot snap of image: "image@snap", as
// the rbd command names it.
func snapshotID(image, snap string) string { return image + "@" + snap }

// parseSnapshotID splits a snapshot ID into image and snapshot names; an
// ID that is not of that form is ErrNotFound.
func parseSnapshotID(id string) (image, snap string, err error) {
	image, snap, ok := strings.Cut(id, "@")
	if !ok || checkName("volume", image) != nil || checkName("snapshot", snap) != nil {
		// No snapshot of the provider has such an ID.
		return "", "", fmt.Errorf("%w: snapshot %q (snapshot IDs are VOLUME@SNAPSHOT)", volume.ErrNotFound, id)
	}
	return image, snap, nil
}

// validHostID matches host IDs, which go into lock cookies.
var validHostID = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.:-]{0,62}$`)

// checkHostID returns an ErrInvalid error unless id is a valid host ID.
func checkHostID(id string) error {
	if !validHostID.MatchString(id) {
		return fmt.Errorf("%w: host ID %q is not valid (use [a-zA-Z0-9][a-zA-Z0-9_.:-]*, at most 63 characters)", volume.ErrInvalid, id)
	}
	return nil
}

// cookiePrefix starts the cookie of every lock the provider takes; the
// host ID follows.
const cookiePrefix = "stowage:"

// lockTag is the tag of the provider's shared (read-only) locks.
const lockTag = "stowage"

// hostOfCookie returns the host ID in a lock cookie, or "" for a lock the
// provider did not take.
func hostOfCookie(cookie string) string {
	h, ok := strings.CutPrefix(cookie, cookiePrefix)
	if !ok {
		return ""
	}
	return h
}
