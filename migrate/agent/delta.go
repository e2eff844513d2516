package agent

import (
	"github.com/stowage/stowage/migrate/manifest"
)

// Delta transfer of a large file whose target copy differs: the agent
// answers a checksum of each fixed-size block of the target's file
// (manifest.BlockSize, manifest.AppendBlockSums) and the sender writes over
// SFTP only the blocks whose checksum differs from its own, then commits.
// Fixed blocks fit the change that matters while a volume is in use: data
// rewritten in place (databases, images); an insertion shifts the rest of
// the file and sends it whole.
//
// Where it can, the agent lets the sender patch the file where it is
// (Request.InPlace): the target volume is the migration's own until the
// switch, and only the changed blocks are written. Otherwise it copies the
// file to a temporary name first (a reflink where the file system can, an
// in-kernel copy otherwise) and the sender patches the copy, which the
// commit renames into place. The checksums come from the hash cache when
// the agent's own walk took them with the hash of the file as it still is
// (same inode, size, mtime and ctime); otherwise the file is read.
//
// An interrupted in-place patch leaves a file that is neither the old nor
// the new content, and no hash vouches for it: before it answers, the
// agent drops its own hash of the file and the saved hashes of the tree,
// and the writes change the file's ctime besides, so the next walk (of
// this agent or of one that resumes after it) hashes the file afresh and
// the next round's comparison finds it differs. Block checksums never
// stand in for a hash: they only pick the blocks to send.

// cachedEntry returns the entry of path in the last manifest with hashes.
func (s *server) cachedEntry(path string) *manifest.Entry {
	if s.prev == nil {
		return nil
	}
	if s.prevIndexOf != s.prev {
		s.prevIndex, s.prevIndexOf = s.prev.Index(), s.prev
	}
	return s.prevIndex[path]
}

// forget drops every hash kept of path, so that the next walk reads the
// file: this agent's, and the saved ones of the tree (all of them: they are
// only a cache, which OpFinish saves again).
func (s *server) forget(path string) {
	if p := s.hashesPath(); p != "" {
		if err := manifest.RemoveHashes(p); err != nil {
			s.log.Debug("drop saved hashes", "error", err)
		}
	}
	if e := s.cachedEntry(path); e != nil {
		*e = manifest.Entry{Path: e.Path, Type: e.Type}
	}
	s.knownMu.Lock()
	delete(s.known, path)
	s.knownMu.Unlock()
}
