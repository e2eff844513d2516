// Package atomicfile writes files so that a crash leaves either the old or
// the new content, never a mix: write a temporary file beside the target,
// fsync it, rename it over the target, fsync the directory. Replace skips
// the fsyncs, for state that cannot outlive the host anyway.
package atomicfile

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
)

// WriteFile writes data to path durably with permissions perm.
func WriteFile(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, true)
}

// Replace writes data to path with permissions perm by temporary file and
// rename, without fsync: a process that crashes leaves the old or the new
// content, but a host that crashes may leave neither. It is for state that
// means nothing after the host restarts, such as what a running process is
// doing; its readers must treat a missing or empty file as such.
func Replace(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, false)
}

func write(path string, data []byte, perm os.FileMode, durable bool) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	err = f.Chmod(perm)
	if err == nil {
		_, err = f.Write(data)
	}
	if err == nil && durable {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		if rerr := os.Remove(tmp); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
		return err
	}
	if !durable {
		return nil
	}
	return SyncDir(dir)
}

// WriteJSON writes v as indented JSON to path durably with mode 0600.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return WriteFile(path, append(b, '\n'), 0o600)
}

// ReplaceJSON writes v as indented JSON to path like Replace, mode 0600.
func ReplaceJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return Replace(path, append(b, '\n'), 0o600)
}

// SyncDir fsyncs a directory, making renames and creations in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
