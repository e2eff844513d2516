// Package agent is the side of a migration that runs on the target host,
// as `stow migrate agent` started over SSH: it applies what SFTP cannot carry
// (ownership, modes, nanosecond mtimes, extended attributes and POSIX ACLs,
// hard links, device nodes, fifos, holes) and computes the target's manifest
// for the next round and for verification.
//
// The protocol is a gob stream of Request values on the agent's standard
// input, each answered by one Response on its standard output, in order.
// File content arrives separately (over SFTP) in a temporary directory
// inside the tree, TempDir, that manifests leave out; Commit moves each file
// into place with its metadata.
package agent

import (
	"errors"
	"fmt"
	"strings"

	"github.com/stowage/stowage/migrate/manifest"
)

// Version is the protocol version; Hello fails when the two sides differ.
const Version = 4

// TempDir is the name, directly below the tree's root, of the directory
// where file content arrives before Commit renames it into place.
const TempDir = ".stowage-migrate.tmp"

// Op names a request.
type Op string

// Requests.
const (
	// OpHello opens the session on Root; the answer carries TempPath.
	OpHello Op = "hello"
	// OpManifest answers the tree's manifest, with hashes when Hash; a hash
	// of a file unchanged since the last manifest is reused unless Fresh.
	OpManifest Op = "manifest"
	// OpPrepare makes an empty TempDir, removing what an interrupted run
	// left in it.
	OpPrepare Op = "prepare"
	// OpRemove removes Paths (recursively), deepest first.
	OpRemove Op = "remove"
	// OpApply creates the non-regular Entries that are missing and sets the
	// metadata of every one of them; a regular file must exist already.
	// Directory mtimes are left to OpFinish.
	OpApply Op = "apply"
	// OpCommit gives each temporary file of Commits (written first from
	// inline Data) its size (holes at the end included), metadata and final
	// name.
	OpCommit Op = "commit"
	// OpLink makes each Entry (with LinkTo) a hard link to its LinkTo,
	// replacing what is at its path.
	OpLink Op = "link"
	// OpBlocks answers the checksums of the blocks of BlockSize bytes
	// (Sums) of the target file Paths[0], for a delta transfer: into the
	// file itself when InPlace is asked and granted (the answer's InPlace),
	// otherwise into the temporary file Temp, which it becomes a copy of.
	OpBlocks Op = "blocks"
	// OpSpace answers the free space and size of the tree's file system.
	OpSpace Op = "space"
	// OpFinish removes TempDir and sets the metadata of the directories
	// Entries, deepest first, after everything inside them changed.
	OpFinish Op = "finish"
)

// Request is one request of the protocol.
type Request struct {
	Op      Op
	Version int
	Root    string
	Hash    bool
	Fresh   bool
	// Settled (OpManifest) reuses only hashes that this agent's own walks
	// took of files whose ctime was settled then (manifest.SettledHash):
	// the verification.
	Settled bool
	Paths   []string
	Entries []manifest.Entry
	Commits []Commit
	// Temp and BlockSize are those of OpBlocks.
	Temp      string
	BlockSize int
	// InPlace (OpBlocks) asks to patch the file where it is; Size is the
	// size the sender's file has, which the target's must have for that.
	InPlace bool
	Size    int64
}

// Commit names a temporary file (relative to TempDir) and the entry it
// becomes. A small file's content may come inline as Data instead: the agent
// writes it to Temp itself, which saves the SFTP round trips per file.
type Commit struct {
	Temp  string
	Entry manifest.Entry
	// Inline says that Data is the content (possibly empty).
	Inline bool
	Data   []byte
	// Hashed says that Entry.SHA256 is the hash of the content sent: the
	// file did not change while it was read. The agent then keeps the hash
	// for its next manifest instead of reading the file again (the final
	// verification hashes afresh all the same).
	Hashed bool
	// InPlace says that the content was written into the file at
	// Entry.Path itself (OpBlocks granted InPlace); Temp is then unused.
	InPlace bool
}

// Response answers one Request. Err is empty on success.
type Response struct {
	Err      string
	Version  int
	TempPath string
	Manifest *manifest.Manifest
	// Sums answers OpBlocks: SumSize bytes per block.
	Sums []byte
	// InPlace answers OpBlocks: the sender is to write into the file
	// itself.
	InPlace bool
	// Free and Size answer OpSpace, in bytes.
	Free, Size int64
}

// checkPath refuses a path that could leave the tree.
func checkPath(p string) error {
	if p == "." {
		return nil
	}
	if p == "" || strings.HasPrefix(p, "/") || strings.ContainsRune(p, 0) {
		return fmt.Errorf("invalid path %s: must be relative to the volume's root", manifest.Quote(p))
	}
	for _, c := range strings.Split(p, "/") {
		if c == "" || c == "." || c == ".." {
			return fmt.Errorf("invalid path %s: empty, \".\" or \"..\" component", manifest.Quote(p))
		}
	}
	if p == TempDir || strings.HasPrefix(p, TempDir+"/") {
		return fmt.Errorf("invalid path %s: reserved for the migration's temporary files", manifest.Quote(p))
	}
	return nil
}

// errNoSession is the answer to a request before Hello.
var errNoSession = errors.New("no session: send hello first")
