package store

import (
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

// mustOpen opens the store at path, failing the test when it cannot.
func mustOpen(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(path, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestPutListDelete(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	recs := []Record{
		{Name: "b", Provider: "local", ID: "b", State: "ready", CreatedAt: created, Mounts: map[string]int{"m1": 2}, Published: true},
		{Name: "a", Provider: "local", State: "creating", Options: map[string]string{"size": "1G"}, CreatedAt: created},
	}
	for _, r := range recs {
		if err := s.Put(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = mustOpen(t, path) // survives reopening
	defer s.Close()
	got, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	want := []Record{recs[1], recs[0]}
	for i := range want {
		want[i].Version = SchemaVersion
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("List = %+v\nwant %+v", got, want)
	}
	if n := got[1].MountCount(); n != 2 {
		t.Errorf("MountCount = %d; want 2", n)
	}
	if err := s.Delete("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("a"); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	got, _ = s.List()
	if len(got) != 1 || got[0].Name != "b" {
		t.Fatalf("after Delete, List = %+v", got)
	}
}

func TestOpenLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	defer s.Close()
	_, err := Open(path, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "another volumed") {
		t.Fatalf("second Open: err = %v; want a lock error naming another volumed", err)
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	s := mustOpen(t, path)
	r := Record{Name: "x", State: "ready"}
	if err := s.Put(r); err != nil {
		t.Fatal(err)
	}
	// Write a record as a newer volumed would.
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketVolumes).Put([]byte("y"), []byte(`{"v":99,"name":"y"}`))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(); err == nil || !strings.Contains(err.Error(), "schema version 99") {
		t.Fatalf("List: err = %v; want a schema version error", err)
	}
	s.Close()
}
