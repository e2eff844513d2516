package store

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SnapshotSchemaVersion is the version written into every snapshot record.
const SnapshotSchemaVersion = 1

// bucketSnapshots holds the snapshot records, keyed "VOLUME@SNAPSHOT"
// ('@' is not allowed in names, so keys are unique). It
// is created with the first snapshot; a database without it has none.
var bucketSnapshots = []byte("snapshots")

// Snapshot is what volumed knows about one snapshot of a volume.
type Snapshot struct {
	Version int `json:"v"`
	// Volume and Name are the user's names; the pair is unique.
	Volume string `json:"volume"`
	Name   string `json:"name"`
	// Provider is the volume's provider, ID the provider's snapshot ID
	// (empty until the provider took it).
	Provider string `json:"provider"`
	ID       string `json:"id,omitempty"`
	// State is "creating", "ready" or "removing", as for volumes.
	State      string    `json:"state"`
	SizeBytes  int64     `json:"size_bytes,omitempty"`
	ReadyToUse bool      `json:"ready_to_use,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

func snapshotKey(vol, name string) []byte { return []byte(vol + "@" + name) }

// PutSnapshot writes s, replacing any record of the same volume and name.
func (s *Store) PutSnapshot(r Snapshot) error {
	r.Version = SnapshotSchemaVersion
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode snapshot %s@%s: %w", r.Volume, r.Name, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketSnapshots)
		if err != nil {
			return err
		}
		return bk.Put(snapshotKey(r.Volume, r.Name), b)
	})
	if err != nil {
		return fmt.Errorf("store snapshot %s@%s: %w", r.Volume, r.Name, err)
	}
	return nil
}

// DeleteSnapshot removes the record of a snapshot; a missing record is no
// error.
func (s *Store) DeleteSnapshot(vol, name string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketSnapshots)
		if bk == nil {
			return nil
		}
		return bk.Delete(snapshotKey(vol, name))
	})
	if err != nil {
		return fmt.Errorf("delete snapshot %s@%s: %w", vol, name, err)
	}
	return nil
}

// Snapshot returns the record of a snapshot and whether there is one.
func (s *Store) Snapshot(vol, name string) (Snapshot, bool, error) {
	var r Snapshot
	found := false
	err := s.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketSnapshots)
		if bk == nil {
			return nil
		}
		v := bk.Get(snapshotKey(vol, name))
		if v == nil {
			return nil
		}
		found = true
		return decodeSnapshot(v, &r)
	})
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("read snapshot %s@%s: %w", vol, name, err)
	}
	return r, found, nil
}

// Snapshots returns the snapshot records of a volume, or of every volume
// when vol is empty, ordered by volume and name.
func (s *Store) Snapshots(vol string) ([]Snapshot, error) {
	out := []Snapshot{}
	err := s.db.View(func(tx *bolt.Tx) error {
		bk := tx.Bucket(bucketSnapshots)
		if bk == nil {
			return nil
		}
		c := bk.Cursor()
		prefix := []byte(vol + "@")
		k, v := c.First()
		if vol != "" {
			k, v = c.Seek(prefix)
		}
		for ; k != nil; k, v = c.Next() {
			if vol != "" && !strings.HasPrefix(string(k), string(prefix)) {
				break
			}
			var r Snapshot
			if err := decodeSnapshot(v, &r); err != nil {
				return fmt.Errorf("snapshot %s: %w", k, err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	slices.SortFunc(out, func(a, b Snapshot) int {
		return cmp.Or(strings.Compare(a.Volume, b.Volume), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

func decodeSnapshot(b []byte, r *Snapshot) error {
	if err := json.Unmarshal(b, r); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	if r.Version > SnapshotSchemaVersion {
		return fmt.Errorf("schema version %d, this volumed reads up to %d", r.Version, SnapshotSchemaVersion)
	}
	return nil
}
