package e2e_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/stowage/stowage/migrate/migratetest"
)

// TestMigrateDeltaKill migrates a volume into a target that holds an older
// version of its large file, which goes by delta, patched in place; it
// kills stow migrate with SIGKILL at seeded lines of that transfer and
// checks that a rerun completes it and the target matches.
func TestMigrateDeltaKill(t *testing.T) {
	h := startMigrateHosts(t)
	const size = 32 << 20
	old := make([]byte, size)
	rng := rand.New(rand.NewPCG(1, 7))
	for i := range old {
		old[i] = byte(rng.Uint32())
	}
	// The newer version: a quarter of its 64 KiB regions rewritten.
	changed := append([]byte(nil), old...)
	for off := 0; off < size; off += 4 << 16 {
		for j := off; j < off+1<<16; j++ {
			changed[j] = byte(rng.Uint32())
		}
	}
	for name, content := range map[string][]byte{"base": old, "chg": changed} {
		h.a.MustStow("volume", "create", name)
		fill(t, h.a, name, func(p string) {
			if err := os.WriteFile(p+"/data", content, 0o644); err != nil {
				t.Fatal(err)
			}
		})
	}
	inode := func(target string) string {
		var ino string
		fill(t, h.b, target, func(p string) { ino = strings.TrimSpace(migratetest.Run(t, p, "stat", "-c", "%i", "data")) })
		return ino
	}
	// seed migrates base to a new target, then chg into it with extra.
	seed := func(target string) string {
		if r := h.migrate("base", h.target("/?volume="+target)); r.Code != 0 {
			t.Fatalf("migrate base to %s: %s", target, r)
		}
		return inode(target)
	}
	extra := []string{"--force", "--progress-interval", "20ms", "--bwlimit", "4MiB"}

	before := seed("ref")
	ref := h.nsA.Run(nil, h.bins.Stow, h.migrateArgs("chg", h.target("/?volume=ref"), extra...)...)
	if ref.Code != 0 {
		t.Fatalf("reference run: %s", ref)
	}
	if after := inode("ref"); after != before {
		t.Errorf("the target's file has inode %s after the delta transfer, %s before: want it patched in place", after, before)
	}
	lines := strings.Split(strings.TrimSpace(ref.Stdout), "\n")
	var during []int // lines of the round that sends
	for i, l := range lines[:len(lines)-1] {
		if strings.HasPrefix(l, "precopy round 1") {
			during = append(during, i+1)
		}
	}
	if len(during) == 0 {
		t.Fatalf("reference run printed no line of its first round:\n%s", ref.Stdout)
	}
	for s := range 4 {
		n := during[rand.New(rand.NewPCG(uint64(s), 8)).IntN(len(during))]
		target := fmt.Sprintf("d%d", s)
		seed(target)
		at := h.killAtLine(t, "chg", h.target("/?volume="+target), n, extra...)
		t.Logf("seed %d: line %d: killed at %q", s, n, at)
		if r := h.migrate("chg", h.target("/?volume="+target), "--force"); r.Code != 0 {
			t.Fatalf("seed %d: rerun after SIGKILL at line %d (%q): %s", s, n, at, r)
		}
		fill(t, h.b, target, func(dst string) {
			fill(t, h.a, "chg", func(src string) {
				if a, b := migratetest.Run(t, src, "sha256sum", "data"), migratetest.Run(t, dst, "sha256sum", "data"); a != b {
					t.Errorf("seed %d: sha256sum: %s on A, %s on B", s, a, b)
				}
			})
		})
		if t.Failed() {
			t.FailNow()
		}
	}
}
