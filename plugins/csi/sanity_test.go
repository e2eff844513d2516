package csi_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/moby/sys/mountinfo"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/csi"
	"github.com/stowage/stowage/plugins/local"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
)

// sanityEnv names the variable that makes TestSanityChild run one sanity
// case. Ginkgo runs its suite once per process, so TestSanity runs each case
// in a child process of the test binary.
const sanityEnv = "STOWAGE_CSI_SANITY_CASE"

// sanityCase is a provider served to csi-test's sanity suite.
type sanityCase struct {
	name  string
	needs []string // components for testenv.Require
	// size is TestVolumeSize: what the provider accepts without
	// parameters.
	size int64
	new  func(t *testing.T, root string) volume.Provider
}

func localProvider(t *testing.T, root string) volume.Provider {
	p, err := local.New(root, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

var sanityCases = []sanityCase{
	{name: "fake-publish-only", size: 1 << 20, new: func(t *testing.T, root string) volume.Provider { return volumetest.NewFake(root, false).Basic() }},
	{name: "fake-staged", size: 1 << 20, new: func(t *testing.T, root string) volume.Provider { return volumetest.NewFake(root, true).Basic() }},
	// With snapshots, clones and online expansion.
	{name: "fake-abilities-publish-only", size: 1 << 20, new: func(t *testing.T, root string) volume.Provider { return volumetest.NewFake(root, false) }},
	{name: "fake-abilities-staged", size: 1 << 20, new: func(t *testing.T, root string) volume.Provider { return volumetest.NewFake(root, true) }},
	// Snapshots without copies of volumes, as rbd.
	{name: "fake-snapshots-only", size: 1 << 20, new: func(t *testing.T, root string) volume.Provider {
		f := volumetest.NewFake(root, true)
		f.CopyVolumes(false)
		return f
	}},
	// type=dir: the local provider refuses a size for a directory.
	{name: "local-dir", needs: []string{"root"}, size: 0, new: localProvider},
	// With a size the local provider makes type=fs, ext4 by default.
	{name: "local-ext4", needs: []string{"root", "loop", "mkfs.ext4"}, size: 16 << 20, new: localProvider},
}

// allowedSkip matches the reasons for which the sanity suite may skip a
// test: a capability the server does not advertise, or (for type=dir) a
// volume without a size.
var allowedSkip = regexp.MustCompile(`not supported|does not have .* capability|capacity of the volume is unknown`)

// sanityReport is the part of Ginkgo's JSON report TestSanity reads.
type sanityReport []struct {
	SpecReports []struct {
		LeafNodeType            string
		LeafNodeText            string
		ContainerHierarchyTexts []string
		State                   string
		Failure                 struct{ Message string }
	}
}

// TestSanity runs csi-test's sanity suite against a Server of each provider.
// Every test it runs must pass, and it may skip a test only for a
// capability the server does not advertise.
func TestSanity(t *testing.T) {
	for _, sc := range sanityCases {
		t.Run(sc.name, func(t *testing.T) {
			if len(sc.needs) > 0 {
				testenv.Require(t, sc.needs...)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			report := filepath.Join(t.TempDir(), "report.json")
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestSanityChild$", "-test.v",
				"-ginkgo.no-color", "-ginkgo.json-report="+report)
			cmd.Env = append(os.Environ(), sanityEnv+"="+sc.name)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("sanity: %v\n%s", err, out)
			}
			b, err := os.ReadFile(report)
			if err != nil {
				t.Fatal(err)
			}
			var r sanityReport
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("read the sanity report: %v", err)
			}
			states := map[string]int{}
			for _, suite := range r {
				for _, spec := range suite.SpecReports {
					if spec.LeafNodeType != "It" {
						continue
					}
					states[spec.State]++
					name := strings.Join(append(spec.ContainerHierarchyTexts, spec.LeafNodeText), " ")
					switch spec.State {
					case "passed", "pending":
					case "skipped":
						if !allowedSkip.MatchString(spec.Failure.Message) {
							t.Errorf("skipped %q: %s", name, spec.Failure.Message)
						}
					default:
						t.Errorf("%s %q: %s", spec.State, name, spec.Failure.Message)
					}
				}
			}
			if states["passed"] == 0 {
				t.Fatalf("no sanity test passed:\n%s", out)
			}
			t.Logf("sanity tests: %v", states)
		})
	}
}

// TestSanityChild runs the sanity case sanityEnv names; without it, it does
// nothing (TestSanity starts it).
func TestSanityChild(t *testing.T) {
	name := os.Getenv(sanityEnv)
	if name == "" {
		return
	}
	var sc *sanityCase
	for i := range sanityCases {
		if sanityCases[i].name == name {
			sc = &sanityCases[i]
		}
	}
	if sc == nil {
		t.Fatalf("no sanity case %q", name)
	}
	dir := t.TempDir()
	p := sc.new(t, filepath.Join(dir, "root"))
	endpoint := csi.ServeTest(t, p, csi.ServerOptions{Name: "stowage.sanity", Version: "1", NodeID: "node-1"})

	cfg := sanity.NewTestConfig()
	cfg.Address = endpoint
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.TestVolumeSize = sc.size
	sanity.Test(t, cfg)

	mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		t.Errorf("left mounted: %s", m.Mountpoint)
	}
}

// TestSymmetryLocal runs the conformance suite against a Client of a Server
// of the local provider, with real mounts.
func TestSymmetryLocal(t *testing.T) {
	tests := []struct {
		name  string
		needs []string
		h     volumetest.Harness
	}{
		{
			name:  "dir",
			needs: []string{"root"},
			h: volumetest.Harness{
				Parameters:       [2]map[string]string{{}, {"type": "fs"}},
				Invalid:          []map[string]string{{"type": "block"}, {"fs": "ext4"}, {"type": "fs"}},
				ReadOnlyEnforced: true,
			},
		},
		{
			name:  "ext4",
			needs: []string{"root", "loop", "mkfs.ext4"},
			h: volumetest.Harness{
				Parameters:       [2]map[string]string{{"type": "fs"}, {"fs": "xfs"}},
				CapacityBytes:    64 << 20,
				Invalid:          []map[string]string{{"type": "dir"}, {"fs": "btrfs"}},
				ReadOnlyEnforced: true,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			testenv.Require(t, tt.needs...)
			tt.h.New = func(t *testing.T) volume.Provider {
				dir := t.TempDir()
				t.Cleanup(func() {
					mounts, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
					if err != nil {
						t.Fatal(err)
					}
					for _, m := range mounts {
						t.Errorf("left mounted: %s", m.Mountpoint)
					}
				})
				endpoint := csi.ServeTest(t, localProvider(t, dir), csi.ServerOptions{})
				c, err := csi.Dial(endpoint, csi.ClientOptions{})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			volumetest.Run(t, tt.h)
		})
	}
}
