package cgroup

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/volume"
)

// fakeFiles writes files (path relative to root -> content) under root,
// as cgroupfs would present them.
func fakeFiles(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// fakeV1 builds a cgroup v1 tree with group name already present in every
// controller, the memsw file only when memsw is set.
func fakeV1(t *testing.T, name string, memsw bool) tree {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"memory/" + name + "/memory.limit_in_bytes": "9223372036854771712\n",
		"memory/" + name + "/memory.oom_control":    "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
		"memory/" + name + "/cgroup.procs":          "",
		"cpu/" + name + "/cpu.cfs_period_us":        "100000\n",
		"cpu/" + name + "/cpu.cfs_quota_us":         "-1\n",
		"cpu/" + name + "/cgroup.procs":             "",
		"cpuacct/" + name + "/cgroup.procs":         "",
		"pids/" + name + "/pids.max":                "max\n",
		"pids/" + name + "/cgroup.procs":            "",
		"freezer/" + name + "/freezer.state":        "THAWED\n",
		"freezer/" + name + "/cgroup.procs":         "",
	}
	if memsw {
		files["memory/"+name+"/memory.memsw.limit_in_bytes"] = "9223372036854771712\n"
	}
	fakeFiles(t, root, files)
	return tree{root: root, version: 1}
}

// fakeV2 builds a cgroup v2 tree with group name present; the root offers
// rootControllers and every level below offers memory, cpu and pids.
func fakeV2(t *testing.T, name, rootControllers string) tree {
	t.Helper()
	root := t.TempDir()
	files := map[string]string{
		"cgroup.controllers":      rootControllers + "\n",
		"cgroup.subtree_control":  "\n",
		name + "/memory.max":      "max\n",
		name + "/memory.swap.max": "max\n",
		name + "/memory.events":   "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
		name + "/cpu.max":         "max 100000\n",
		name + "/pids.max":        "max\n",
		name + "/cgroup.procs":    "",
		name + "/cgroup.freeze":   "0\n",
		name + "/cgroup.events":   "populated 0\nfrozen 0\n",
	}
	dir := ""
	parts := strings.Split(name, "/")
	for _, p := range parts[:len(parts)-1] {
		dir = filepath.Join(dir, p)
		files[dir+"/cgroup.controllers"] = "cpu memory pids\n"
		files[dir+"/cgroup.subtree_control"] = "\n"
	}
	fakeFiles(t, root, files)
	return tree{root: root, version: 2}
}

// createAndCheck creates group name in tr with r and checks the files
// (relative to the root) it must have written.
func createAndCheck(t *testing.T, tr tree, name string, r Resources, want map[string]string) {
	t.Helper()
	g, err := tr.create(name, r)
	if err != nil {
		t.Fatal(err)
	}
	if g.Version() != tr.version {
		t.Errorf("Version() = %d, want %d", g.Version(), tr.version)
	}
	for f, w := range want {
		if got := readFile(t, filepath.Join(tr.root, f)); got != w {
			t.Errorf("%s = %q, want %q", f, got, w)
		}
	}
}

func TestCreateV1(t *testing.T) {
	const name = "stowage/c1"
	tests := []struct {
		name  string
		r     Resources
		memsw bool
		want  map[string]string // file under root -> content
	}{
		{
			name:  "limits",
			r:     Resources{MemoryBytes: 32 << 20, CPUs: 1.5, PidsMax: 16},
			memsw: true,
			want: map[string]string{
				"memory/" + name + "/memory.limit_in_bytes":       "33554432",
				"memory/" + name + "/memory.memsw.limit_in_bytes": "33554432",
				"cpu/" + name + "/cpu.cfs_period_us":              "100000",
				"cpu/" + name + "/cpu.cfs_quota_us":               "150000",
				"pids/" + name + "/pids.max":                      "16",
			},
		},
		{
			name: "no swap accounting",
			r:    Resources{MemoryBytes: 1 << 30, CPUs: 0.25},
			want: map[string]string{
				"memory/" + name + "/memory.limit_in_bytes": "1073741824",
				"cpu/" + name + "/cpu.cfs_quota_us":         "25000",
				"pids/" + name + "/pids.max":                "max",
			},
		},
		{
			name:  "no limits",
			memsw: true,
			want: map[string]string{
				"memory/" + name + "/memory.limit_in_bytes":       "-1",
				"memory/" + name + "/memory.memsw.limit_in_bytes": "-1",
				"cpu/" + name + "/cpu.cfs_quota_us":               "-1",
				"pids/" + name + "/pids.max":                      "max",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := fakeV1(t, name, tt.memsw)
			createAndCheck(t, tr, name, tt.r, tt.want)
			if !tt.memsw && exists(filepath.Join(tr.root, "memory", name, "memory.memsw.limit_in_bytes")) {
				t.Error("created memory.memsw.limit_in_bytes")
			}
		})
	}
}

func TestCreateV1SharedCPUHierarchy(t *testing.T) {
	// Many distributions mount cpu,cpuacct once with two symlinks.
	root := t.TempDir()
	fakeFiles(t, root, map[string]string{
		"memory/g/memory.limit_in_bytes":  "",
		"cpu,cpuacct/g/cpu.cfs_quota_us":  "",
		"cpu,cpuacct/g/cpu.cfs_period_us": "",
		"pids/g/pids.max":                 "",
		"freezer/g/freezer.state":         "",
	})
	for _, l := range []string{"cpu", "cpuacct"} {
		if err := os.Symlink("cpu,cpuacct", filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	g, err := tree{root: root, version: 1}.create("g", Resources{CPUs: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(g.dirs) != 4 {
		t.Errorf("dirs = %v, want memory, cpu, pids, freezer", g.dirs)
	}
	if got := readFile(t, filepath.Join(root, "cpu,cpuacct/g/cpu.cfs_quota_us")); got != "200000" {
		t.Errorf("cpu.cfs_quota_us = %q", got)
	}
}

func TestCreateV1MissingController(t *testing.T) {
	tr := fakeV1(t, "g", false)
	if err := os.RemoveAll(filepath.Join(tr.root, "pids")); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.create("g", Resources{}); !errors.Is(err, volume.ErrNotSupported) {
		t.Fatalf("create without pids controller: %v, want ErrNotSupported", err)
	}
}

func TestCreateV2(t *testing.T) {
	const name = "stowage/c1"
	tests := []struct {
		name        string
		r           Resources
		rootEnabled string // root cgroup.subtree_control before
		want        map[string]string
	}{
		{
			name: "limits",
			r:    Resources{MemoryBytes: 32 << 20, CPUs: 0.5, PidsMax: 16},
			want: map[string]string{
				"cgroup.subtree_control":         "+memory +cpu +pids",
				"stowage/cgroup.subtree_control": "+memory +cpu +pids",
				name + "/memory.max":             "33554432",
				name + "/memory.swap.max":        "0",
				name + "/cpu.max":                "50000 100000",
				name + "/pids.max":               "16",
			},
		},
		{
			name:        "no limits, memory already enabled",
			rootEnabled: "memory",
			want: map[string]string{
				"cgroup.subtree_control":  "+cpu +pids",
				name + "/memory.max":      "max",
				name + "/memory.swap.max": "max",
				name + "/cpu.max":         "max 100000",
				name + "/pids.max":        "max",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := fakeV2(t, name, "cpuset cpu io memory hugetlb pids rdma misc")
			fakeFiles(t, tr.root, map[string]string{"cgroup.subtree_control": tt.rootEnabled})
			createAndCheck(t, tr, name, tt.r, tt.want)
		})
	}
}

func TestCreateV2MissingController(t *testing.T) {
	// A hybrid host's unified hierarchy offers only what v1 does not use.
	tr := fakeV2(t, "stowage/c1", "hugetlb")
	if _, err := tr.create("stowage/c1", Resources{}); !errors.Is(err, volume.ErrNotSupported) {
		t.Fatalf("create: %v, want ErrNotSupported", err)
	}
}

func TestCreateInvalid(t *testing.T) {
	tests := []struct {
		name  string
		group string
		r     Resources
	}{
		{"negative memory", "g", Resources{MemoryBytes: -1}},
		{"negative cpus", "g", Resources{CPUs: -1}},
		{"NaN cpus", "g", Resources{CPUs: math.NaN()}},
		{"infinite cpus", "g", Resources{CPUs: math.Inf(1)}},
		{"cpus below 0.01", "g", Resources{CPUs: 0.001}},
		{"negative pids", "g", Resources{PidsMax: -5}},
		{"empty name", "", Resources{}},
		{"absolute name", "/g", Resources{}},
		{"escaping name", "../g", Resources{}},
		{"unclean name", "a/../b", Resources{}},
		{"dot", ".", Resources{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := fakeV1(t, "g", false)
			if _, err := tr.create(tt.group, tt.r); !errors.Is(err, volume.ErrInvalid) {
				t.Fatalf("create(%q, %+v): %v, want ErrInvalid", tt.group, tt.r, err)
			}
		})
	}
}

func TestOOMKilled(t *testing.T) {
	tests := []struct {
		name    string
		version int
		file    string
		content string
		want    bool
	}{
		{"v1 none", 1, "memory/g/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n", false},
		{"v1 killed", 1, "memory/g/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", true},
		{"v2 none", 2, "g/memory.events", "low 0\nhigh 0\nmax 4\noom 1\noom_kill 0\n", false},
		{"v2 killed", 2, "g/memory.events", "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 0\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tr tree
			if tt.version == 1 {
				tr = fakeV1(t, "g", false)
			} else {
				tr = fakeV2(t, "g", "cpu memory pids")
			}
			g, err := tr.load("g")
			if err != nil {
				t.Fatal(err)
			}
			fakeFiles(t, tr.root, map[string]string{tt.file: tt.content})
			got, err := g.OOMKilled()
			if err != nil || got != tt.want {
				t.Fatalf("OOMKilled() = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	for _, version := range []int{1, 2} {
		tr := fakeV1(t, "stowage/a", false)
		if version == 2 {
			tr = fakeV2(t, "stowage/a", "cpu memory pids")
		}
		g, err := tr.load("stowage/a")
		if err != nil {
			t.Fatalf("v%d: load: %v", version, err)
		}
		if g.Version() != version || g.Name() != "stowage/a" {
			t.Errorf("v%d: loaded version %d name %q", version, g.Version(), g.Name())
		}
		if _, err := tr.load("stowage/b"); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("v%d: load missing group: %v, want ErrNotFound", version, err)
		}
	}
}

func TestProcsAndDelete(t *testing.T) {
	tr := fakeV1(t, "g", false)
	g, err := tr.load("g")
	if err != nil {
		t.Fatal(err)
	}
	// A process that only partly joined still counts.
	fakeFiles(t, tr.root, map[string]string{
		"memory/g/cgroup.procs":  "42\n7\n",
		"freezer/g/cgroup.procs": "42\n",
	})
	pids, err := g.Procs()
	if err != nil || len(pids) != 2 || pids[0] != 7 || pids[1] != 42 {
		t.Fatalf("Procs() = %v, %v; want [7 42]", pids, err)
	}
	if err := g.Delete(); !errors.Is(err, volume.ErrInUse) {
		t.Fatalf("Delete with processes: %v, want ErrInUse", err)
	}
	// What rmdir would find in cgroupfs: an empty directory.
	for _, d := range g.dirs {
		if err := os.RemoveAll(d); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 2 {
		if err := g.Delete(); err != nil {
			t.Fatalf("Delete #%d: %v", i+1, err)
		}
	}
	for _, d := range g.dirs {
		if exists(d) {
			t.Errorf("%s still exists", d)
		}
	}
}

func TestFreezeV2(t *testing.T) {
	tr := fakeV2(t, "g", "cpu memory pids")
	g, err := tr.load("g")
	if err != nil {
		t.Fatal(err)
	}
	// The fake kernel never reports frozen: Freeze gives up with ctx and
	// thaws again.
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := g.Freeze(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Freeze: %v, want DeadlineExceeded", err)
	}
	if got := readFile(t, filepath.Join(tr.root, "g/cgroup.freeze")); got != "0" {
		t.Errorf("cgroup.freeze after failed Freeze = %q, want 0", got)
	}
	fakeFiles(t, tr.root, map[string]string{"g/cgroup.events": "populated 1\nfrozen 1\n"})
	if err := g.Freeze(t.Context()); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	if got := readFile(t, filepath.Join(tr.root, "g/cgroup.freeze")); got != "1" {
		t.Errorf("cgroup.freeze = %q, want 1", got)
	}
	if frozen, err := g.Frozen(); err != nil || !frozen {
		t.Errorf("Frozen() after Freeze = %v, %v; want true", frozen, err)
	}
	fakeFiles(t, tr.root, map[string]string{"g/cgroup.events": "populated 1\nfrozen 0\n"})
	if err := g.Thaw(t.Context()); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
	if frozen, err := g.Frozen(); err != nil || frozen {
		t.Errorf("Frozen() after Thaw = %v, %v; want false", frozen, err)
	}
}

func TestDetect(t *testing.T) {
	tr, err := detect(t.TempDir())
	if err != nil || tr.version != 1 {
		t.Fatalf("detect(tmpdir) = %+v, %v; want version 1", tr, err)
	}
	// A v2 host mounts cgroup2 at the root, a hybrid one at unified.
	for _, dir := range []string{DefaultRoot, DefaultRoot + "/unified"} {
		if exists(filepath.Join(dir, "cgroup.controllers")) {
			if tr, err := detect(dir); err != nil || tr.version != 2 {
				t.Fatalf("detect(%s) = %+v, %v; want version 2", dir, tr, err)
			}
			return
		}
	}
	testenv.Unavailable(t, "no cgroup2 mount to detect")
}

// TestCreateFresh checks that a group made by create gets no writes for
// the limits it is not given: a new cgroup has none.
func TestCreateFresh(t *testing.T) {
	v1 := tree{root: t.TempDir(), version: 1}
	for _, c := range v1Controllers {
		if err := os.Mkdir(filepath.Join(v1.root, c), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	v2 := tree{root: t.TempDir(), version: 2}
	fakeFiles(t, v2.root, map[string]string{"cgroup.controllers": "cpu memory pids\n", "cgroup.subtree_control": "cpu memory pids\n"})
	for _, tr := range []tree{v1, v2} {
		g, err := tr.create("g", Resources{})
		if err != nil {
			t.Fatalf("v%d: %v", tr.version, err)
		}
		for _, d := range g.dirs {
			if ents, err := os.ReadDir(d); err != nil || len(ents) != 0 {
				t.Errorf("v%d: %s holds %v (%v), want nothing written", tr.version, d, ents, err)
			}
		}
	}
}

func TestThreadFiles(t *testing.T) {
	v1 := fakeV1(t, "stowage/c1", false)
	g, err := v1.load("stowage/c1")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, c := range []string{"cpu", "cpuacct", "freezer", "memory", "pids"} {
		want = append(want, filepath.Join(v1.root, c, "stowage/c1", "tasks"))
	}
	if got := g.ThreadFiles(); !slices.Equal(got, want) {
		t.Errorf("v1 ThreadFiles = %q, want %q", got, want)
	}
	v2 := fakeV2(t, "stowage/c1", "cpu memory pids")
	if g, err = v2.load("stowage/c1"); err != nil {
		t.Fatal(err)
	}
	if got := g.ThreadFiles(); got != nil {
		t.Errorf("v2 ThreadFiles = %q, want none", got)
	}
}
