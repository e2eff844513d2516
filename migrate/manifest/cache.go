package manifest

import (
	"encoding/gob"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// SaveHashes writes the hashes of m's regular files, with their block
// checksums where kept, and the local facts (inode, size, mtime, ctime)
// that tell whether they still hold, so that a later process can pass them
// as WalkOptions.Previous (LoadHashes).
func SaveHashes(path string, m *Manifest) error {
	keep := &Manifest{}
	for _, e := range m.Entries {
		if e.Type == Regular && e.LinkTo == "" && e.SHA256 != "" {
			keep.Entries = append(keep.Entries, Entry{Path: e.Path, Type: e.Type, Size: e.Size, MtimeNS: e.MtimeNS,
				SHA256: e.SHA256, Ino: e.Ino, CtimeNS: e.CtimeNS, sums: e.sums})
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("save hashes: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".hashes-*")
	if err != nil {
		return fmt.Errorf("save hashes: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := gob.NewEncoder(tmp).Encode(toCached(keep)); err != nil {
		tmp.Close()
		return fmt.Errorf("save hashes: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save hashes: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save hashes: %w", err)
	}
	return nil
}

// LoadHashes reads what SaveHashes wrote; nil when there is nothing (or
// nothing readable: the hashes are only a cache).
func LoadHashes(path string) *Manifest {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var c []cached
	if err := gob.NewDecoder(f).Decode(&c); err != nil {
		return nil
	}
	m := &Manifest{Entries: make([]Entry, len(c))}
	for i, e := range c {
		m.Entries[i] = Entry{Path: e.Path, Type: Regular, Size: e.Size, MtimeNS: e.MtimeNS, SHA256: e.SHA256, Ino: e.Ino, CtimeNS: e.CtimeNS}
		if int64(len(e.Sums)) == SumsLen(e.Size) {
			m.Entries[i].sums = e.Sums
		}
	}
	return m
}

// RemoveHashes removes what SaveHashes wrote.
func RemoveHashes(path string) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove hashes: %w", err)
	}
	return nil
}

type cached struct {
	Path    string
	Size    int64
	MtimeNS int64
	CtimeNS int64
	Ino     uint64
	SHA256  string
	Sums    []byte
}

func toCached(m *Manifest) []cached {
	c := make([]cached, len(m.Entries))
	for i, e := range m.Entries {
		c[i] = cached{Path: e.Path, Size: e.Size, MtimeNS: e.MtimeNS, CtimeNS: e.CtimeNS, Ino: e.Ino, SHA256: e.SHA256, Sums: e.sums}
	}
	return c
}
