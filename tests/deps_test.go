// Package tests holds checks of the module as a whole; its subdirectories
// hold the end-to-end tests.
package tests

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/stowage/stowage"

// pkg is the part of `go list -json` the checks read.
type pkg struct {
	ImportPath string
	Standard   bool
	CgoFiles   []string
	Deps       []string
}

// goList runs `go list -json` in the module root with CGO_ENABLED set to
// cgo and returns the packages it prints.
func goList(t *testing.T, cgo string, args ...string) []pkg {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-json"}, args...)...)
	cmd.Dir = ".."
	cmd.Env = append(os.Environ(), "CGO_ENABLED="+cgo)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decode go list output: %v", err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// TestDepsNoCgo checks that volumed, stow, stow-init and stow-provider
// build without cgo and link no go-ceph: they must run as static binaries
// anywhere.
func TestDepsNoCgo(t *testing.T) {
	for _, main := range []string{"./cmd/volumed", "./cmd/stow", "./cmd/stow-init", "./cmd/stow-provider"} {
		t.Run(main, func(t *testing.T) {
			for _, p := range goList(t, "0", "-deps", main) {
				switch {
				case p.ImportPath == "C" || p.ImportPath == "runtime/cgo":
					t.Errorf("%s needs cgo (imports %s) with CGO_ENABLED=0", main, p.ImportPath)
				case strings.HasPrefix(p.ImportPath, "github.com/ceph/go-ceph"):
					t.Errorf("%s links %s", main, p.ImportPath)
				}
			}
			// With cgo on, only the standard library may use it (net and
			// os/user do); no package of ours or of a module may.
			for _, p := range goList(t, "1", "-deps", main) {
				if !p.Standard && len(p.CgoFiles) > 0 {
					t.Errorf("%s links %s, which has cgo files %v", main, p.ImportPath, p.CgoFiles)
				}
				if strings.HasPrefix(p.ImportPath, "github.com/ceph/go-ceph") {
					t.Errorf("%s links %s", main, p.ImportPath)
				}
			}
		})
	}
}

// TestDepsStowLean checks that stow links no gRPC: stow starts with every
// container it runs, and gRPC's packages take milliseconds to initialise.
// Serving over CSI is stow-provider's job.
func TestDepsStowLean(t *testing.T) {
	for _, p := range goList(t, "0", "-deps", "./cmd/stow") {
		for _, heavy := range []string{"google.golang.org/grpc", "google.golang.org/protobuf", "github.com/container-storage-interface/"} {
			if strings.HasPrefix(p.ImportPath, heavy) {
				t.Errorf("stow links %s", p.ImportPath)
			}
		}
	}
}

// TestDepsInit checks that stow-init, which starts inside every new
// container, links only the container's inside and what it needs: each
// package more adds to every container's start.
func TestDepsInit(t *testing.T) {
	allowed := []string{
		module + "/cmd/stow-init", module + "/runtime/container/initproc", module + "/runtime/security",
		// The seccomp filter comes compiled from the runtime: no compiler,
		// no system call tables.
		module + "/plugins/volume", "golang.org/x/sys/", "github.com/moby/sys/capability",
	}
	for _, p := range goList(t, "0", "-deps", "./cmd/stow-init") {
		if p.Standard {
			continue
		}
		ok := false
		for _, a := range allowed {
			ok = ok || p.ImportPath == a || strings.HasPrefix(p.ImportPath, strings.TrimSuffix(a, "/")+"/")
		}
		if !ok {
			t.Errorf("stow-init links %s", p.ImportPath)
		}
	}
}

// TestDepsDirection checks that dependencies point one way: the contract
// imports only the standard library, providers reach neither the daemon nor
// each other, the daemon core names no concrete provider, and the daemon's
// other consumers reach it only through its client (and its API types).
func TestDepsDirection(t *testing.T) {
	pkgs := goList(t, "1", "./...")
	std := map[string]bool{}
	for _, p := range goList(t, "1", "-deps", "./...") {
		std[p.ImportPath] = p.Standard
	}
	for _, p := range pkgs {
		path := strings.TrimPrefix(p.ImportPath, module+"/")
		for _, dep := range p.Deps {
			if msg := forbidden(path, dep, std[dep]); msg != "" {
				t.Errorf("%s imports %s: %s", p.ImportPath, dep, msg)
			}
		}
	}
}

// forbidden returns why package path (relative to the module) may not
// depend on dep, or "" when it may.
func forbidden(path, dep string, depStandard bool) string {
	rel, ours := strings.CutPrefix(dep, module+"/")
	under := func(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }
	provider := func(p string) string { // the provider p belongs to, if any
		rest, ok := strings.CutPrefix(p, "plugins/")
		if !ok || under(p, "plugins/volume") {
			return ""
		}
		name, _, _ := strings.Cut(rest, "/")
		return name
	}
	switch {
	case path == "plugins/volume":
		if !depStandard {
			return "the contract imports only the standard library"
		}
	case provider(path) != "":
		if ours && (under(rel, "volumed") || under(rel, "runtime") || under(rel, "migrate") || under(rel, "cmd")) {
			return "providers never import the daemon, runtime or migrate"
		}
		if ours && provider(rel) != "" && provider(rel) != provider(path) {
			return "providers never import each other"
		}
	case under(path, "volumed"):
		if ours && provider(rel) != "" {
			return "the daemon core never names a concrete provider: cmd/volumed wires them"
		}
		if ours && (under(rel, "cmd") || under(rel, "runtime") || under(rel, "migrate")) {
			return "the daemon core does not depend on its consumers"
		}
	case under(path, "cmd/stow"), under(path, "runtime"), under(path, "migrate"):
		if ours && under(rel, "volumed") && !under(rel, "volumed/client") && !under(rel, "volumed/api") {
			return "reach the daemon only through volumed/client"
		}
	}
	return ""
}

// TestDepsRules checks the rules of forbidden themselves.
func TestDepsRules(t *testing.T) {
	tests := []struct {
		path, dep string
		std       bool
		bad       bool
	}{
		{"plugins/volume", "context", true, false},
		{"plugins/volume", "github.com/spf13/cobra", false, true},
		{"plugins/volume", module + "/volumed/api", false, true},
		{"plugins/local", module + "/plugins/volume", false, false},
		{"plugins/local", "golang.org/x/sys/unix", false, false},
		{"plugins/local", module + "/volumed/manager", false, true},
		{"plugins/local/internal/x", module + "/runtime/overlay", false, true},
		{"plugins/local", module + "/plugins/rbd", false, true},
		{"plugins/local", module + "/plugins/local/internal/x", false, false},
		{"volumed/manager", module + "/plugins/volume", false, false},
		{"volumed/manager", module + "/plugins/local", false, true},
		{"volumed/plugin", module + "/volumed/manager", false, false},
		{"cmd/volumed", module + "/plugins/local", false, false},
		{"cmd/stow", module + "/volumed/client", false, false},
		{"cmd/stow", module + "/volumed/api", false, false},
		{"cmd/stow", module + "/volumed/manager", false, true},
		{"migrate/engine", module + "/volumed/store", false, true},
	}
	for _, tc := range tests {
		t.Run(filepath.Join(tc.path, "->", tc.dep), func(t *testing.T) {
			if got := forbidden(tc.path, tc.dep, tc.std); (got != "") != tc.bad {
				t.Errorf("forbidden(%q, %q) = %q, want forbidden %v", tc.path, tc.dep, got, tc.bad)
			}
		})
	}
}

// TestDepsCephConfined checks that go-ceph stays in the RBD provider and
// its sidecar: with the build tags that select it (make build-rbd), the
// static binaries still link neither go-ceph nor the provider, stow-rbd
// does link go-ceph, and without the tags the provider has no cgo at all.
func TestDepsCephConfined(t *testing.T) {
	const tags = "ceph,pacific"
	for _, main := range []string{"./cmd/volumed", "./cmd/stow", "./cmd/stow-init", "./cmd/stow-provider"} {
		for _, p := range goList(t, "1", "-tags", tags, "-deps", main) {
			if strings.HasPrefix(p.ImportPath, "github.com/ceph/go-ceph") || p.ImportPath == module+"/plugins/rbd" {
				t.Errorf("%s links %s with -tags %s", main, p.ImportPath, tags)
			}
		}
	}
	ceph := false
	for _, p := range goList(t, "1", "-tags", tags, "-deps", "./cmd/stow-rbd") {
		ceph = ceph || strings.HasPrefix(p.ImportPath, "github.com/ceph/go-ceph/rbd")
	}
	if !ceph {
		t.Errorf("stow-rbd links no go-ceph with -tags %s", tags)
	}
	for _, p := range goList(t, "1", "-deps", "./cmd/stow-rbd") {
		if strings.HasPrefix(p.ImportPath, "github.com/ceph/go-ceph") {
			t.Errorf("stow-rbd links %s without -tags %s", p.ImportPath, tags)
		}
		if !p.Standard && len(p.CgoFiles) > 0 {
			t.Errorf("stow-rbd links %s, which has cgo files %v, without -tags %s", p.ImportPath, p.CgoFiles, tags)
		}
	}
}
