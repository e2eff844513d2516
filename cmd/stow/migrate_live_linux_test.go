package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFreezerDir(t *testing.T) {
	for _, tc := range []struct {
		name, cgroup, want, err string
	}{
		{"v1", "12:pids:/docker/abc\n4:freezer:/docker/abc\n1:name=systemd:/docker/abc\n0::/system.slice/containerd.service\n", "/sys/fs/cgroup/freezer/docker/abc", ""},
		{"v1 freezer shared", "3:cpu,freezer:/x/y\n", "/sys/fs/cgroup/freezer/x/y", ""},
		{"v2", "0::/system.slice/docker-abc.scope\n", "/sys/fs/cgroup/system.slice/docker-abc.scope", ""},
		{"hybrid", "0::/init.scope\n7:freezer:/docker/abc\n", "/sys/fs/cgroup/freezer/docker/abc", ""},
		{"none", "5:memory:/docker/abc\n", "", "names no freezer cgroup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "cgroup")
			if err := os.WriteFile(file, []byte(tc.cgroup), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := freezerDir("/sys/fs/cgroup", file)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("freezerDir = %q, %v; want an error saying %q", got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("freezerDir = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

// TestKillCgroupOfChecksName checks that a cgroup that does not name the
// container is refused before anything is killed: this test's own.
func TestKillCgroupOfChecksName(t *testing.T) {
	const id = "0123456789abcdef-no-such-container"
	n, err := killCgroupOf(os.Getpid(), id)
	if err == nil || n != 0 {
		t.Fatalf("killCgroupOf(this process, another container) = %d, %v; want a refusal", n, err)
	}
	// Where this process has a freezer cgroup, its name is what is wrong.
	if _, ferr := freezerDir("/sys/fs/cgroup", "/proc/self/cgroup"); ferr == nil && !strings.Contains(err.Error(), "does not name container "+id) {
		t.Errorf("killCgroupOf refusal = %v; want it to say the cgroup does not name the container", err)
	}
}
