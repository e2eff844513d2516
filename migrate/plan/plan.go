// Package plan decides what one round of a migration sends: given the
// source's manifest and the target's, which paths to remove on the target,
// which entries to create or give new metadata, which files' content to
// send, which hard links to make and which directories to finish. A round
// that follows its plan makes the target's manifest equal the source's (as
// the source was when walked).
package plan

import (
	"cmp"
	"path"
	"slices"

	"github.com/stowage/stowage/migrate/manifest"
)

// Plan is the work of one round, each list in path order.
type Plan struct {
	// Remove lists target paths to remove (recursively) first: paths the
	// source lacks and paths whose type changed.
	Remove []string
	// Apply lists entries to create (directories, symlinks, devices, fifos,
	// sockets) or to give their metadata (regular files whose content is
	// the same); directory mtimes wait for Finish.
	Apply []manifest.Entry
	// Send lists regular files whose content goes over.
	Send []manifest.Entry
	// Link lists hard links to (re)make after Send.
	Link []manifest.Entry
	// Finish lists directories whose metadata is set last, deepest first by
	// the agent: new and changed ones and those whose content changed.
	Finish []manifest.Entry
	// SendBytes is the content size of Send.
	SendBytes int64
}

// Empty reports whether the target already matches.
func (p *Plan) Empty() bool {
	return len(p.Remove) == 0 && len(p.Apply) == 0 && len(p.Send) == 0 && len(p.Link) == 0 && len(p.Finish) == 0
}

// Changes is the number of entries the plan touches.
func (p *Plan) Changes() int {
	return len(p.Remove) + len(p.Apply) + len(p.Send) + len(p.Link) + len(p.Finish)
}

// Make returns the plan that turns dst into src. Hashes are compared where
// both manifests have them; without, equal size and mtime count as the same
// content.
func Make(src, dst *manifest.Manifest) *Plan {
	p := &Plan{}
	didx := dst.Index()
	sidx := src.Index()
	touched := map[string]bool{} // directories whose content changes
	touch := func(p string) {
		if p != "." {
			touched[parent(p)] = true
		}
	}
	finish := map[string]bool{}
	sent := map[string]bool{}
	for i := range src.Entries {
		e := src.Entries[i]
		d, ok := didx[e.Path]
		var fields []manifest.Field
		if ok {
			fields = manifest.Compare(&e, d)
			if len(fields) == 0 {
				continue
			}
			if slices.Contains(fields, manifest.FieldType) {
				p.Remove = append(p.Remove, e.Path)
				touch(e.Path)
				ok = false
			}
		}
		switch {
		case e.Type == manifest.Dir:
			if !ok {
				p.Apply = append(p.Apply, e)
				touch(e.Path)
			}
			finish[e.Path] = true
		case e.Type == manifest.Regular && e.LinkTo != "":
			p.Link = append(p.Link, e)
			touch(e.Path)
		case e.Type == manifest.Regular:
			// A file that was a link on the target and is not one here
			// must get its own inode: sending it does that.
			if !ok || slices.Contains(fields, manifest.FieldSize) || slices.Contains(fields, manifest.FieldContent) ||
				slices.Contains(fields, manifest.FieldLink) || contentUnknown(&e, d) {
				p.Send = append(p.Send, e)
				p.SendBytes += e.Size
				sent[e.Path] = true
				touch(e.Path)
			} else {
				p.Apply = append(p.Apply, e)
			}
		default:
			if !ok || slices.Contains(fields, manifest.FieldTarget) || slices.Contains(fields, manifest.FieldRdev) {
				touch(e.Path)
			}
			p.Apply = append(p.Apply, e)
		}
	}
	// A link whose first path got new content (a new inode) is made again.
	for i := range src.Entries {
		e := src.Entries[i]
		if e.LinkTo != "" && sent[e.LinkTo] && !slices.ContainsFunc(p.Link, func(l manifest.Entry) bool { return l.Path == e.Path }) {
			p.Link = append(p.Link, e)
			touch(e.Path)
		}
	}
	for _, d := range dst.Entries {
		if _, ok := sidx[d.Path]; !ok {
			p.Remove = append(p.Remove, d.Path)
			touch(d.Path)
		}
	}
	slices.SortFunc(p.Link, func(a, b manifest.Entry) int { return cmp.Compare(a.Path, b.Path) })
	slices.Sort(p.Remove)
	if len(p.Send) > 0 {
		// The temporary directory comes and goes in the root.
		touched["."] = true
	}
	for dir := range touched {
		finish[dir] = true
	}
	for dir := range finish {
		if e, ok := sidx[dir]; ok && e.Type == manifest.Dir {
			p.Finish = append(p.Finish, *e)
		}
	}
	slices.SortFunc(p.Finish, func(a, b manifest.Entry) int { return cmp.Compare(a.Path, b.Path) })
	return p
}

// contentUnknown reports whether a regular file's content cannot be judged
// equal: a hash is missing and the mtimes differ.
func contentUnknown(s, d *manifest.Entry) bool {
	return (s.SHA256 == "" || d.SHA256 == "") && s.MtimeNS != d.MtimeNS
}

func parent(p string) string {
	dir := path.Dir(p)
	if dir == "" {
		return "."
	}
	return dir
}
