package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/stowage/stowage/internal/atomicfile"
)

// lock takes the store's exclusive flock and returns its release.
func (s *Store) lock() (func(), error) {
	f, err := os.OpenFile(filepath.Join(s.root, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock image store: %w", err)
	}
	if err := flock(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("lock image store: %w", err)
	}
	// Closing the file releases the lock.
	return func() { f.Close() }, nil
}

// digestReader hashes and counts what is read through it.
type digestReader struct {
	r    io.Reader
	h    hash.Hash
	size int64
}

func (d *digestReader) Read(p []byte) (int, error) {
	n, err := d.r.Read(p)
	d.h.Write(p[:n])
	d.size += int64(n)
	return n, err
}

// AddLayer extracts the uncompressed layer tar r into the store and returns
// its diff ID "sha256:<hex>" (of all of r). A layer already present is kept
// as it is, so AddLayer is idempotent. An entry that would be written
// outside the layer is ErrInvalid naming it; on any error nothing is left
// behind. ctx stops the extraction between entries.
func (s *Store) AddLayer(ctx context.Context, r io.Reader) (string, error) {
	tmp, err := os.MkdirTemp(s.tmpDir(), "layer-")
	if err != nil {
		return "", fmt.Errorf("add layer: %w", err)
	}
	d := &digestReader{r: r, h: sha256.New()}
	err = extract(ctx, d, tmp, s.log)
	if err == nil {
		// The diff ID covers the whole stream, padding after the tar's end
		// included.
		_, err = io.Copy(io.Discard, d)
	}
	if err != nil {
		return "", errors.Join(err, removeAll(tmp))
	}
	h := hex.EncodeToString(d.h.Sum(nil))
	id := "sha256:" + h
	if err := s.commitLayer(tmp, h, layerRecord{Version: recordVersion, DiffID: id, Size: d.size}); err != nil {
		return "", errors.Join(fmt.Errorf("add layer %s: %w", id, err), removeAll(tmp))
	}
	s.log.Info("added layer", "op", "add-layer", "layer", id, "size", d.size)
	return id, nil
}

// commitLayer moves the extracted layer tmp into place under the store
// lock, or drops it when the layer is present already.
func (s *Store) commitLayer(tmp, h string, rec layerRecord) error {
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	dir := filepath.Join(s.layersDir(), h)
	meta := filepath.Join(s.layersDir(), h+".json")
	_, derr := os.Lstat(dir)
	_, merr := os.Stat(meta)
	if derr == nil && merr == nil {
		return removeAll(tmp)
	}
	// A directory without metadata is left from an interrupted add or
	// remove, and may be incomplete.
	if err := removeAll(dir); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(s.layersDir()); err != nil {
		return err
	}
	return atomicfile.WriteJSON(meta, rec)
}
