package store

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestSnapshots(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	if got, err := s.Snapshots(""); err != nil || len(got) != 0 {
		t.Fatalf("Snapshots of a new store = %+v, %v", got, err)
	}
	if _, ok, err := s.Snapshot("a", "s"); ok || err != nil {
		t.Fatalf("Snapshot of a new store = %v, %v", ok, err)
	}
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, r := range []Snapshot{
		{Volume: "a.b", Name: "s1", Provider: "rbd", ID: "x", State: "ready", CreatedAt: created},
		{Volume: "a", Name: "s2", Provider: "rbd", State: "creating", CreatedAt: created},
		{Volume: "a", Name: "s1", Provider: "rbd", ID: "y", State: "ready", SizeBytes: 1 << 20, ReadyToUse: true, CreatedAt: created},
	} {
		if err := s.PutSnapshot(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = mustOpen(t, path) // survives reopening
	defer s.Close()
	names := func(rs []Snapshot) string {
		var out []string
		for _, r := range rs {
			out = append(out, r.Volume+"@"+r.Name)
		}
		return strings.Join(out, " ")
	}
	if got, err := s.Snapshots(""); err != nil || names(got) != "a@s1 a@s2 a.b@s1" {
		t.Errorf("Snapshots(\"\") = %q, %v", names(got), err)
	}
	if got, err := s.Snapshots("a"); err != nil || names(got) != "a@s1 a@s2" {
		t.Errorf("Snapshots(a) = %q, %v", names(got), err)
	}
	r, ok, err := s.Snapshot("a", "s1")
	if err != nil || !ok || r.ID != "y" || r.Version != SnapshotSchemaVersion || !r.CreatedAt.Equal(created) || r.SizeBytes != 1<<20 {
		t.Errorf("Snapshot(a, s1) = %+v, %v, %v", r, ok, err)
	}
	for i := 0; i < 2; i++ { // a missing record is no error
		if err := s.DeleteSnapshot("a", "s1"); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.Snapshots("a"); err != nil || names(got) != "a@s2" {
		t.Errorf("Snapshots(a) after delete = %q, %v", names(got), err)
	}
}

func TestSnapshotFromTheFuture(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	defer s.Close()
	err := s.db.Update(func(tx *bolt.Tx) error {
		bk, err := tx.CreateBucketIfNotExists(bucketSnapshots)
		if err != nil {
			return err
		}
		return bk.Put([]byte("a@s"), []byte(`{"v":99,"volume":"a","name":"s"}`))
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Snapshots(""); err == nil || !strings.Contains(err.Error(), "schema version 99") {
		t.Errorf("Snapshots = %v; want an error naming schema version 99", err)
	}
}
