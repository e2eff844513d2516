// Package store keeps volumed's volume records in a bbolt database.
//
// One file holds everything. Each record is JSON with a schema version, so
// later versions of volumed can read what earlier ones wrote. Every write is
// a bbolt transaction, durable when Put or Delete returns.
package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the version written into every record.
const SchemaVersion = 1

var (
	bucketVolumes = []byte("volumes")
	bucketMeta    = []byte("meta")
	keySchema     = []byte("schema")
)

// Record is what volumed knows about one volume.
type Record struct {
	Version  int    `json:"v"`
	Name     string `json:"name"`
	Provider string `json:"provider"`
	// ID is the provider's ID; empty until the provider created it.
	ID            string            `json:"id,omitempty"`
	State         string            `json:"state"`
	CapacityBytes int64             `json:"capacity_bytes,omitempty"`
	Options       map[string]string `json:"options,omitempty"`
	// Context is the provider's volume context, passed back on mount.
	Context   map[string]string `json:"context,omitempty"`
	CreatedAt time.Time         `json:"created_at"`
	// Mounts counts mounts per mount ID.
	Mounts map[string]int `json:"mounts,omitempty"`
	// Staged and Published say what the provider did on this host.
	Staged    bool `json:"staged,omitempty"`
	Published bool `json:"published,omitempty"`
	// MigratedTo names where the volume was migrated to; the volume then
	// mounts read-only until it is removed.
	MigratedTo string `json:"migrated_to,omitempty"`
}

// MountCount returns the number of mounts over all mount IDs.
func (r *Record) MountCount() int {
	n := 0
	for _, c := range r.Mounts {
		n += c
	}
	return n
}

// Store is an open database.
type Store struct {
	db *bolt.DB
}

// Open opens or creates the database at path. It waits at most timeout for
// the file lock, so a second daemon on the same file fails fast.
func Open(path string, timeout time.Duration) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: timeout})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open state %s: locked by another process (is another volumed running?)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if _, err := tx.CreateBucketIfNotExists(bucketVolumes); err != nil {
			return err
		}
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if v := meta.Get(keySchema); v != nil {
			var n int
			if err := json.Unmarshal(v, &n); err != nil {
				return fmt.Errorf("read schema version: %w", err)
			}
			if n > SchemaVersion {
				return fmt.Errorf("state has schema version %d, this volumed reads up to %d", n, SchemaVersion)
			}
		}
		return meta.Put(keySchema, []byte(fmt.Sprint(SchemaVersion)))
	})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open state %s: %w", path, err)
	}
	return &Store{db: db}, nil
}

// Close closes the database.
func (s *Store) Close() error {
	return s.db.Close()
}

// Put writes r, replacing any record of the same name.
func (s *Store) Put(r Record) error {
	r.Version = SchemaVersion
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode volume %q: %w", r.Name, err)
	}
	err = s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).Put([]byte(r.Name), b)
	})
	if err != nil {
		return fmt.Errorf("store volume %q: %w", r.Name, err)
	}
	return nil
}

// Delete removes the record of name; a missing record is no error.
func (s *Store) Delete(name string) error {
	err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).Delete([]byte(name))
	})
	if err != nil {
		return fmt.Errorf("delete volume %q: %w", name, err)
	}
	return nil
}

// List returns every record, ordered by name.
func (s *Store) List() ([]Record, error) {
	var out []Record
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode volume %q: %w", k, err)
			}
			if r.Version > SchemaVersion {
				return fmt.Errorf("volume %q has schema version %d, this volumed reads up to %d", k, r.Version, SchemaVersion)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return out, nil
}
