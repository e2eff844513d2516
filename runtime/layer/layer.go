// Package layer reads a container's writable layer: the upper directory of
// its overlayfs root.
//
// Changes lists what the container added, changed and deleted: the lines
// `docker diff` prints for the same operations (Docker 20.10 on overlay2).
// Only the upper directory is walked, so the cost grows with the changes,
// not with the image; the lower layers are only asked about the paths the
// upper directory holds, and listed only under a directory that was removed
// and made again.
//
// Write writes the upper directory as an OCI layer tar: overlay whiteouts
// (0:0 character devices) become ".wh.NAME" files, opaque directories get a
// ".wh..wh..opq" entry, and the output is deterministic, so the same tree
// gives the same bytes and the same diff ID.
//
// Both expect an upper directory that overlayfs wrote without redirect_dir
// and without metacopy (mount with redirect_dir=off,metacopy=off, the
// kernel defaults): a renamed directory or a metadata-only copy-up keeps part
// of its content in a lower layer, which Changes reports conservatively and
// Write reads from the lower layer (metacopy) or refuses with
// volume.ErrNotSupported (redirect).
package layer

import "fmt"

// Kind says how a path changed.
type Kind byte

// The kinds of change, with the letters `docker diff` prints.
const (
	Added   Kind = 'A'
	Changed Kind = 'C'
	Deleted Kind = 'D'
)

// Change is one line of a diff.
type Change struct {
	Kind Kind
	// Path is absolute inside the container, for example "/etc/passwd".
	Path string
}

// String formats c as `docker diff` does: "C /etc/passwd".
func (c Change) String() string { return fmt.Sprintf("%c %s", c.Kind, c.Path) }

// Overlayfs's own extended attributes. The trusted.* names are used when
// the overlay is mounted by root, the user.* names with the userxattr
// option (rootless mounts).
const (
	xattrTrustedOverlay = "trusted.overlay."
	xattrUserOverlay    = "user.overlay."
	xattrOpaque         = "opaque"
	xattrRedirect       = "redirect"
	xattrMetacopy       = "metacopy"
)

// OCI layer whiteout names.
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
)
