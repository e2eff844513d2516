package e2e_test

import (
	"encoding/json"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/tests/e2e/harness"
	"github.com/stowage/stowage/volumed/api"
)

// decodeVolumes reads stow's JSON output: a list of volumes or one volume.
func decodeVolumes(t *testing.T, out string) []api.Volume {
	t.Helper()
	var vols []api.Volume
	if err := json.Unmarshal([]byte(out), &vols); err == nil {
		return vols
	}
	var one api.Volume
	if err := json.Unmarshal([]byte(out), &one); err != nil {
		t.Fatalf("decode stow JSON output: %v\n%s", err, out)
	}
	return []api.Volume{one}
}

// listVolumes returns the sorted names of `stow volume ls`.
func listVolumes(t *testing.T, v *harness.Volumed) []string {
	t.Helper()
	var names []string
	for _, vol := range decodeVolumes(t, v.MustStow("--format", "json", "volume", "ls")) {
		names = append(names, vol.Name)
	}
	sort.Strings(names)
	return names
}

// inspectVolume returns `stow volume inspect NAME`.
func inspectVolume(t *testing.T, v *harness.Volumed, name string) api.Volume {
	t.Helper()
	vols := decodeVolumes(t, v.MustStow("--format", "json", "volume", "inspect", name))
	if len(vols) != 1 || vols[0].Name != name {
		t.Fatalf("stow volume inspect %s returned %+v", name, vols)
	}
	return vols[0]
}

// TestStowCLI drives volumed through stow alone: create, list, inspect and
// remove, and requests that must fail without changing anything.
func TestStowCLI(t *testing.T) {
	testenv.Require(t, "root", "loop", "mkfs.ext4", "mkfs.xfs")
	v := harness.StartVolumed(t, harness.BuildBinaries(t))

	v.MustStow("status")
	v.MustStow("version")
	if out := v.MustStow("provider", "ls"); !strings.Contains(out, "local") {
		t.Errorf("stow provider ls does not list local:\n%s", out)
	}

	for _, args := range [][]string{
		{"alpha"},
		{"-o", "type=dir", "beta"},
		{"-o", "size=64MiB", "gamma"},
		{"--provider", "local", "-o", "type=fs", "-o", "fs=xfs", "-o", "size=300MiB", "delta"},
	} {
		name := args[len(args)-1]
		if got := v.MustStow(append([]string{"volume", "create"}, args...)...); got != name {
			t.Errorf("stow volume create %v printed %q, want %q", args, got, name)
		}
	}
	want := []string{"alpha", "beta", "delta", "gamma"}
	if got := listVolumes(t, v); !slices.Equal(got, want) {
		t.Fatalf("stow volume ls = %v, want %v", got, want)
	}
	table := v.MustStow("volume", "ls")
	for _, name := range want {
		if !strings.Contains(table, name) {
			t.Errorf("stow volume ls (table) lacks %s:\n%s", name, table)
		}
	}
	for _, name := range want {
		vol := inspectVolume(t, v, name)
		if vol.Provider != "local" || vol.State != api.StateReady {
			t.Errorf("%s: provider %q state %q, want local ready", name, vol.Provider, vol.State)
		}
	}
	if got := inspectVolume(t, v, "gamma").CapacityBytes; got != 64<<20 {
		t.Errorf("gamma: capacity %d, want %d", got, 64<<20)
	}
	if got := len(decodeVolumes(t, v.MustStow("--format", "json", "volume", "inspect", "alpha", "beta"))); got != 2 {
		t.Errorf("stow volume inspect alpha beta returned %d volumes", got)
	}

	failures := []struct {
		name string
		args []string
		// mention is a word the error must name, if any.
		mention string
	}{
		{"dot dot name", []string{"volume", "create", "../x"}, ""},
		{"empty name", []string{"volume", "create", ""}, ""},
		{"long name", []string{"volume", "create", strings.Repeat("a", 300)}, ""},
		{"slash name", []string{"volume", "create", "a/b"}, ""},
		{"no name", []string{"volume", "create"}, ""},
		{"unknown option", []string{"volume", "create", "-o", "bogus=1", "epsilon"}, "bogus"},
		{"bad size", []string{"volume", "create", "-o", "size=lots", "epsilon"}, "size"},
		{"unknown provider", []string{"volume", "create", "-p", "nosuch", "epsilon"}, "nosuch"},
		{"unknown flag", []string{"volume", "create", "--bogus", "epsilon"}, "bogus"},
		{"same name, other options", []string{"volume", "create", "-o", "size=32MiB", "alpha"}, "alpha"},
		{"inspect missing", []string{"volume", "inspect", "nosuch"}, "nosuch"},
	}
	for _, tc := range failures {
		t.Run(tc.name, func(t *testing.T) {
			r := v.Stow(tc.args...)
			if r.Code == 0 {
				t.Fatalf("stow %q succeeded:\n%s", tc.args, r)
			}
			msg := strings.TrimSpace(r.Stderr)
			if msg == "" || strings.Contains(msg, "goroutine ") {
				t.Errorf("stow %q: no clear message:\n%s", tc.args, r)
			}
			if tc.mention != "" && !strings.Contains(msg, tc.mention) {
				t.Errorf("stow %q: message does not name %q: %s", tc.args, tc.mention, msg)
			}
			if got := listVolumes(t, v); !slices.Equal(got, want) {
				t.Errorf("stow volume ls after a failed request = %v, want %v", got, want)
			}
		})
	}

	v.MustStow(append([]string{"volume", "rm"}, want...)...)
	if got := listVolumes(t, v); len(got) != 0 {
		t.Errorf("stow volume ls after rm = %v", got)
	}
	if m := harness.MountsUnder(t, v.Root); len(m) != 0 {
		t.Errorf("mounts left below volumed's root: %v", m)
	}
	if l := harness.LoopsBackedUnder(t, v.Root); len(l) != 0 {
		t.Errorf("loop devices left for volumed's root: %v", l)
	}
}
