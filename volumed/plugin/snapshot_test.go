package plugin

import (
	"strings"
	"testing"
)

// TestCreateFrom checks that the option from makes a copy through the
// Docker protocol, that a bad one is refused with a clear error, and that
// removing a volume with snapshots says so.
func TestCreateFrom(t *testing.T) {
	s := start(t, Options{})
	if code, out := s.post(t, "/VolumeDriver.Create", `{"Name":"pg","Opts":{"size":"1MiB"}}`); code != 200 || errOf(out) != "" {
		t.Fatalf("Create pg: %d %v", code, out)
	}
	if _, err := s.m.Snapshot(t.Context(), "pg", "snap1"); err != nil {
		t.Fatal(err)
	}
	if code, out := s.post(t, "/VolumeDriver.Create", `{"Name":"copy","Opts":{"from":"pg@snap1"}}`); code != 200 || errOf(out) != "" {
		t.Fatalf("Create from pg@snap1: %d %v", code, out)
	}
	if v, err := s.m.Get(t.Context(), "copy"); err != nil || v.CapacityBytes != 1<<20 {
		t.Errorf("copy = %+v, %v", v, err)
	}
	for body, want := range map[string]string{
		`{"Name":"c2","Opts":{"from":"pg@"}}`:      "snapshot name is empty",
		`{"Name":"c2","Opts":{"from":"pg@nope"}}`:  `volume "pg" has no snapshot "nope"`,
		`{"Name":"c2","Opts":{"from":"ghost"}}`:    `volume "ghost": not found`,
		`{"Name":"c3","Opts":{"from":"c3@snap1"}}`: "from itself",
	} {
		_, out := s.post(t, "/VolumeDriver.Create", body)
		if msg := errOf(out); !strings.Contains(msg, want) {
			t.Errorf("Create %s: Err %q; want it to say %q", body, msg, want)
		}
	}
	if _, err := s.m.Get(t.Context(), "c2"); err == nil {
		t.Error("a refused copy left a volume")
	}
	_, out := s.post(t, "/VolumeDriver.Remove", `{"Name":"pg"}`)
	if msg := errOf(out); !strings.Contains(msg, "pg@snap1") || !strings.Contains(msg, "stow volume rm --snapshots pg") {
		t.Errorf("Remove of a volume with snapshots: Err %q", msg)
	}
}

func errOf(out map[string]any) string {
	msg, _ := out["Err"].(string)
	return msg
}
