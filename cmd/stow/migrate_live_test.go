package main

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/stowage/stowage/runtime/container"
)

// TestMapConsumers: each mount ID of a volume maps to the stow or Docker
// container that holds it; what none holds is reported.
func TestMapConsumers(t *testing.T) {
	stowC := func(id, name string, st container.Status, mounts ...container.MountedVolume) container.Container {
		return container.Container{Config: container.Config{ID: id, Name: name}, State: container.State{Status: st, Mounts: mounts}}
	}
	stow := []container.Container{
		stowC("s1", "writer", container.Running,
			container.MountedVolume{Name: "db", ID: "s1-0"}, container.MountedVolume{Name: "db", ID: "s1-1"}, container.MountedVolume{Name: "logs", ID: "s1-2"}),
		stowC("s2", "other", container.Running, container.MountedVolume{Name: "logs", ID: "s2-0"}),
		stowC("s3", "gone", container.Exited, container.MountedVolume{Name: "db", ID: "s3-0"}),
	}
	docker := []dockerHolder{
		{ID: "d1", Name: "web", Running: true, MountIDs: []string{"m-web"}},
		{ID: "d2", Name: "held", Running: true, Paused: true, MountIDs: []string{"m-held"}},
	}
	tests := []struct {
		name        string
		mounts      map[string]int
		want        []string
		wantUnknown []string
	}{
		{"none", map[string]int{}, nil, nil},
		{"stow container with two mounts, once", map[string]int{"s1-0": 1, "s1-1": 2}, []string{"stow:writer running"}, nil},
		{"stow and docker", map[string]int{"s1-0": 1, "m-web": 1}, []string{"docker:web running", "stow:writer running"}, nil},
		{"exited stow container", map[string]int{"s3-0": 1}, []string{"stow:gone"}, nil},
		{"paused by someone else", map[string]int{"m-held": 1}, []string{"docker:held running paused"}, nil},
		{"another volume's mount ID does not count", map[string]int{"s2-0": 1}, nil, []string{"s2-0"}},
		{"unknown", map[string]int{"zz": 1, "s1-0": 1, "aa": 3}, []string{"stow:writer running"}, []string{"aa", "zz"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			found, unknown := mapConsumers("db", tc.mounts, stow, docker)
			var got []string
			for _, c := range found {
				s := c.String()
				if c.running {
					s += " running"
				}
				if c.paused {
					s += " paused"
				}
				got = append(got, s)
			}
			if !slices.Equal(got, tc.want) || !slices.Equal(unknown, tc.wantUnknown) {
				t.Errorf("mapConsumers = %q, unknown %q; want %q, %q", got, unknown, tc.want, tc.wantUnknown)
			}
		})
	}
}

// TestDockerMountIDs reads the mount IDs dockerd keeps for a container's
// volumes, in the shape of its config.v2.json.
func TestDockerMountIDs(t *testing.T) {
	file := filepath.Join(t.TempDir(), "config.v2.json")
	cfg := `{"ID":"abc","MountPoints":{
		"/data":{"Source":"","Destination":"/data","RW":true,"Name":"db","Driver":"stowage","Type":"volume","ID":"0f3e","Spec":{"Type":"volume","Source":"db","Target":"/data"}},
		"/logs":{"Destination":"/logs","Name":"logs","Driver":"stowage","Type":"volume","ID":"77aa"},
		"/again":{"Destination":"/again","Name":"db","Driver":"stowage","Type":"volume","ID":"1b2c"},
		"/host":{"Source":"/srv","Destination":"/host","Type":"bind"}}}`
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := dockerMountIDs(file, "db")
	slices.Sort(got)
	if err != nil || !slices.Equal(got, []string{"0f3e", "1b2c"}) {
		t.Errorf("dockerMountIDs = %q, %v; want [0f3e 1b2c]", got, err)
	}
	if _, err := dockerMountIDs(filepath.Join(t.TempDir(), "none.json"), "db"); err == nil {
		t.Error("dockerMountIDs of a missing file: no error")
	}
}

// TestNewDockerClient: only a local unix socket is accepted, and a
// missing socket means no Docker.
func TestNewDockerClient(t *testing.T) {
	if _, err := newDockerClient("tcp://10.0.0.1:2375"); err == nil {
		t.Error("tcp DOCKER_HOST accepted")
	}
	d, err := newDockerClient("unix://" + t.TempDir() + "/none.sock")
	if err != nil || d != nil {
		t.Errorf("missing socket: %v, %v; want nil, nil", d, err)
	}
}
