package e2e_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/migrate"
	"github.com/stowage/stowage/migrate/agent"
	"github.com/stowage/stowage/migrate/migratetest"
	"github.com/stowage/stowage/tests/e2e/harness"
	"github.com/stowage/stowage/volumed/client"
)

// migrateHosts is host A (where stow migrate runs, in its own network
// namespace, with its volumed) and host B (sshd in another namespace, and
// its own volumed).
type migrateHosts struct {
	t        *testing.T
	bins     harness.Binaries
	a, b     *harness.Volumed
	nsA, nsB *harness.Netns
	sshd     *harness.Sshd
	state    string
}

func startMigrateHosts(t *testing.T) *migrateHosts {
	t.Helper()
	testenv.Require(t, "root", "ip", "sshd", "sha256sum", "getfattr", "getfacl", "setfacl", "du", "stat")
	bins := harness.BuildBinaries(t)
	h := &migrateHosts{t: t, bins: bins, state: t.TempDir()}
	h.nsA, h.nsB = harness.NetnsPair(t)
	h.sshd = harness.StartSshd(t, h.nsB)
	h.a = harness.StartVolumed(t, bins)
	h.b = harness.StartVolumed(t, bins)
	return h
}

// target is the URL of host B.
func (h *migrateHosts) target(query string) string {
	return fmt.Sprintf("ssh://root@%s%s", h.sshd.Addr, query)
}

// migrateArgs are the arguments of stow migrate from A to B.
func (h *migrateHosts) migrateArgs(vol, target string, extra ...string) []string {
	return append([]string{"--host", h.a.Host(), "migrate", vol, target,
		"--identity", h.sshd.Identity, "--known-hosts", h.sshd.KnownHosts,
		"--remote-stow", h.bins.Stow, "--remote-host", h.b.Host(), "--state-dir", h.state}, extra...)
}

// migrate runs stow migrate in namespace A.
func (h *migrateHosts) migrate(vol, target string, extra ...string) harness.Result {
	return h.nsA.Run(nil, h.bins.Stow, h.migrateArgs(vol, target, extra...)...)
}

// fill mounts a volume of v, calls f with its path and unmounts it.
func fill(t *testing.T, v *harness.Volumed, name string, f func(dir string)) {
	t.Helper()
	p := client.NewPlugin(v.PluginSocket)
	path, err := p.Mount(context.Background(), name, "e2e-fill")
	if err != nil {
		t.Fatalf("mount %s: %v", name, err)
	}
	f(path)
	if err := p.Unmount(context.Background(), name, "e2e-fill"); err != nil {
		t.Fatalf("unmount %s: %v", name, err)
	}
}

// mount mounts a volume of v until the test ends and returns its path.
func mount(t *testing.T, v *harness.Volumed, name string) string {
	t.Helper()
	p := client.NewPlugin(v.PluginSocket)
	path, err := p.Mount(context.Background(), name, "e2e-check")
	if err != nil {
		t.Fatalf("mount %s: %v", name, err)
	}
	t.Cleanup(func() {
		if err := p.Unmount(context.Background(), name, "e2e-check"); err != nil {
			t.Errorf("unmount %s: %v", name, err)
		}
	})
	return path
}

// TestMigrate moves a volume with every kind of file and attribute from
// host A to host B over SSH, checks B with independent tools, then kills a
// second migration part-way with SIGKILL and sees a rerun complete it.
func TestMigrate(t *testing.T) {
	h := startMigrateHosts(t)
	h.a.MustStow("volume", "create", "fid")
	var tr migratetest.Tree
	fill(t, h.a, "fid", func(dir string) { tr = migratetest.BuildTree(t, dir, true) })

	r := h.migrate("fid", h.target(""))
	if r.Code != 0 {
		t.Fatalf("stow migrate: %s", r)
	}
	for _, want := range []string{"connect", "precopy round 1", "final round", "verify", "switch", "migrated fid"} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("stow migrate output lacks %q:\n%s", want, r.Stdout)
		}
	}
	v := h.b.MustStow("--format", "json", "volume", "inspect", "fid")
	if !strings.Contains(v, `"state": "ready"`) || !strings.Contains(v, `"mounts": 0`) {
		t.Errorf("target volume after migration:\n%s", v)
	}
	dst := mount(t, h.b, "fid")
	// The source is intact, marked migrated and mounts read-only.
	if v := h.a.MustStow("--format", "json", "volume", "inspect", "fid"); !strings.Contains(v, fmt.Sprintf(`"migrated_to": "ssh://root@%s/?volume=fid"`, h.sshd.Addr)) {
		t.Errorf("source volume after migration is not marked migrated:\n%s", v)
	}
	fill(t, h.a, "fid", func(src string) {
		migratetest.Compare(t, src, dst, tr)
		if err := os.WriteFile(filepath.Join(src, "after"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
			t.Errorf("write into the migrated source: %v, want EROFS", err)
		}
	})
	if _, err := os.Stat(filepath.Join(dst, agent.TempDir)); !os.IsNotExist(err) {
		t.Errorf("temporary directory left on the target: %v", err)
	}
	if _, err := os.Stat(filepath.Join(h.state, "fid.json")); !os.IsNotExist(err) {
		t.Errorf("journal left after a finished migration: %v", err)
	}

	t.Run("kill -9 and rerun", func(t *testing.T) {
		h.a.MustStow("volume", "create", "big")
		var tr migratetest.Tree
		fill(t, h.a, "big", func(p string) {
			for i := range 4 {
				migratetest.Run(t, p, "dd", "if=/dev/urandom", fmt.Sprintf("of=f%d", i), "bs=1M", "count=8", "status=none")
			}
			tr = migratetest.BuildTree(t, filepath.Join(p, mkdir(t, p, "tree")), true)
		})
		m := h.startMigrate(t, "big", "--bwlimit", "4MiB")
		if err := m.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		if err := m.wait(); err == nil {
			t.Fatal("stow migrate exited 0 after SIGKILL")
		}
		if _, err := os.Stat(filepath.Join(h.state, "big.json")); err != nil {
			t.Errorf("no journal after an interrupted migration: %v", err)
		}
		// The rerun continues: the target exists, created by this
		// migration, so no --force is needed.
		r := h.migrate("big", h.target(""), "--resume")
		if r.Code != 0 {
			t.Fatalf("rerun of stow migrate: %s", r)
		}
		dst := mount(t, h.b, "big")
		p := mount(t, h.a, "big")
		for i := range 4 {
			f := fmt.Sprintf("f%d", i)
			if a, b := migratetest.Run(t, p, "sha256sum", f), migratetest.Run(t, dst, "sha256sum", f); a != b {
				t.Errorf("sha256sum %s: %s on A, %s on B", f, a, b)
			}
		}
		migratetest.Compare(t, filepath.Join(p, "tree"), filepath.Join(dst, "tree"), tr)
	})

	t.Run("existing target", func(t *testing.T) {
		h.a.MustStow("volume", "create", "dup")
		h.b.MustStow("volume", "create", "dup")
		r := h.migrate("dup", h.target(""))
		if r.Code == 0 || !strings.Contains(r.Stderr, `volume "dup" exists on`) || !strings.Contains(r.Stderr, "--force") {
			t.Fatalf("migrate onto an existing volume: want a refusal naming --force, got %s", r)
		}
		if r := h.migrate("dup", h.target(""), "--force"); r.Code != 0 {
			t.Fatalf("migrate --force onto an existing volume: %s", r)
		}
	})

	t.Run("another name", func(t *testing.T) {
		r := h.nsA.Run(nil, h.bins.Stow, append([]string{"--format", "json"}, h.migrateArgs("fid", h.target("/?volume=fid2"))...)...)
		if r.Code != 0 {
			t.Fatalf("migrate to another name: %s", r)
		}
		// --format json: one JSON object per line, the result last.
		lines := strings.Split(strings.TrimSpace(r.Stdout), "\n")
		phases := map[string]bool{}
		for _, l := range lines[:len(lines)-1] {
			var e migrate.Event
			if err := json.Unmarshal([]byte(l), &e); err != nil {
				t.Fatalf("progress line %q: %v", l, err)
			}
			phases[e.Phase] = true
		}
		var res struct{ Result migrate.Result }
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil || res.Result.TargetVolume != "fid2" || res.Result.Files == 0 {
			t.Errorf("last line %q: %+v, %v; want the result for fid2", lines[len(lines)-1], res, err)
		}
		for _, p := range []string{migrate.PhaseConnect, migrate.PhasePrecopy, migrate.PhaseFinal, migrate.PhaseVerify, migrate.PhaseSwitch, migrate.PhaseDone} {
			if !phases[p] {
				t.Errorf("no %s event in the JSON progress:\n%s", p, r.Stdout)
			}
		}
		dst := mount(t, h.b, "fid2")
		fill(t, h.a, "fid", func(src string) { migratetest.Compare(t, src, dst, tr) })
	})
}

// running is a stow migrate started in namespace A.
type running struct {
	cmd    *exec.Cmd
	stderr bytes.Buffer
	rest   chan struct{}
}

// startMigrate starts stow migrate of vol to B and returns once it reports
// that some file content went over in the first round.
func (h *migrateHosts) startMigrate(t *testing.T, vol string, extra ...string) *running {
	t.Helper()
	m := &running{cmd: h.nsA.Command(h.bins.Stow, h.migrateArgs(vol, h.target(""), extra...)...), rest: make(chan struct{})}
	m.cmd.Stderr = &m.stderr
	out, err := m.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m.cmd.ProcessState == nil {
			m.cmd.Process.Kill()
			m.wait()
		}
	})
	lines := make(chan string)
	go func() {
		defer close(m.rest)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody waits any more
			}
		}
		io.Copy(io.Discard, out)
	}()
	deadline := time.After(2 * time.Minute)
	for {
		select {
		case l := <-lines:
			if strings.HasPrefix(l, "precopy round 1:") && !strings.Contains(l, " 0 B/") {
				return m
			}
		case <-m.rest:
			t.Fatalf("stow migrate ended before it sent content: %v\n%s", m.wait(), m.stderr.String())
		case <-deadline:
			t.Fatal("no progress from stow migrate within 2 minutes")
		}
	}
}

// wait waits for the process to end.
func (m *running) wait() error {
	<-m.rest
	return m.cmd.Wait()
}

// TestMigrateLinkCut: a link that goes down mid-transfer ends the migration
// with a clear error once keepalives go unanswered, and a rerun after the
// link is back completes it.
func TestMigrateLinkCut(t *testing.T) {
	h := startMigrateHosts(t)
	h.a.MustStow("volume", "create", "cut")
	fill(t, h.a, "cut", func(p string) {
		migratetest.Run(t, p, "dd", "if=/dev/urandom", "of=data", "bs=1M", "count=32", "status=none")
	})
	m := h.startMigrate(t, "cut", "--bwlimit", "2MiB", "--keepalive", "1s")
	h.nsA.SetLink(false)
	ended := make(chan error, 1)
	go func() { ended <- m.wait() }()
	select {
	case err := <-ended:
		if err == nil {
			t.Fatal("stow migrate exited 0 with the link down")
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("stow migrate did not end within 2 minutes of the link going down")
	}
	if s := m.stderr.String(); !strings.Contains(s, "lost the connection to "+h.sshd.Addr) || !strings.Contains(s, "run the same command again to resume") {
		t.Errorf("stderr after the link went down: %q; want it to say the connection was lost and how to resume", s)
	}
	h.nsA.SetLink(true)
	if r := h.migrate("cut", h.target("")); r.Code != 0 {
		t.Fatalf("rerun after the link came back: %s", r)
	}
	dst := mount(t, h.b, "cut")
	fill(t, h.a, "cut", func(src string) {
		if a, b := migratetest.Run(t, src, "sha256sum", "data"), migratetest.Run(t, dst, "sha256sum", "data"); a != b {
			t.Errorf("sha256sum: %s on A, %s on B", a, b)
		}
	})
}

// killAtLine runs stow migrate of vol to target and kills it with SIGKILL
// when it prints its n-th line of progress. It returns the line it was
// killed at, or "" when the migration ended first.
func (h *migrateHosts) killAtLine(t *testing.T, vol, target string, n int, extra ...string) string {
	t.Helper()
	cmd := h.nsA.Command(h.bins.Stow, h.migrateArgs(vol, target, extra...)...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	killedAt := ""
	for i := 1; sc.Scan(); i++ {
		if i == n {
			killedAt = sc.Text()
			if err := cmd.Process.Kill(); err != nil {
				t.Fatal(err)
			}
			break
		}
	}
	io.Copy(io.Discard, out)
	err = cmd.Wait()
	if killedAt == "" && err != nil {
		t.Fatalf("stow migrate failed before line %d: %v", n, err)
	}
	return killedAt
}

// TestMigrateKillSeeds kills stow migrate with SIGKILL at seeded random
// lines of its progress until 20 runs were killed, and checks every time
// that a rerun completes and the target matches. Half the seeds pick any
// line (most fall mid-transfer), half a line of the phases after the first
// round (final pass, verify, switch).
func TestMigrateKillSeeds(t *testing.T) {
	h := startMigrateHosts(t)
	h.a.MustStow("volume", "create", "seeds")
	var tr migratetest.Tree
	fill(t, h.a, "seeds", func(p string) {
		for i := range 3 {
			migratetest.Run(t, p, "dd", "if=/dev/urandom", fmt.Sprintf("of=f%d", i), "bs=1M", "count=2", "status=none")
		}
		tr = migratetest.BuildTree(t, filepath.Join(p, mkdir(t, p, "tree")), true)
	})
	// Progress every 20ms over a transfer paced to two seconds or more.
	extra := []string{"--progress-interval", "20ms", "--bwlimit", "5MiB"}
	ref := h.nsA.Run(nil, h.bins.Stow, h.migrateArgs("seeds", h.target("/?volume=ref"), extra...)...)
	if ref.Code != 0 {
		t.Fatalf("reference run: %s", ref)
	}
	lines := strings.Split(strings.TrimSpace(ref.Stdout), "\n")
	var late []int // lines after the first round
	for i, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "precopy round 1") && !strings.HasPrefix(l, "connect") && !strings.HasPrefix(l, "prepare") {
			late = append(late, i+1)
		}
	}
	if len(late) == 0 {
		t.Fatalf("reference run printed no line after its first round:\n%s", ref.Stdout)
	}
	killed := 0
	for seed := 0; killed < 20; seed++ {
		if seed == 40 {
			t.Fatalf("only %d of 40 seeds killed the migration before it ended; want 20", killed)
		}
		rng := rand.New(rand.NewPCG(uint64(seed), 6))
		n := 1 + rng.IntN(len(lines)-1)
		if seed%2 == 1 {
			n = late[rng.IntN(len(late))]
		}
		target := h.target(fmt.Sprintf("/?volume=s%d", seed))
		at := h.killAtLine(t, "seeds", target, n, extra...)
		if at != "" {
			killed++
		}
		t.Logf("seed %d: line %d: killed at %q", seed, n, at)
		if r := h.migrate("seeds", target); r.Code != 0 {
			t.Fatalf("seed %d: rerun after SIGKILL at line %d (%q): %s", seed, n, at, r)
		}
		dst := mount(t, h.b, fmt.Sprintf("s%d", seed))
		fill(t, h.a, "seeds", func(src string) {
			for i := range 3 {
				f := fmt.Sprintf("f%d", i)
				if a, b := migratetest.Run(t, src, "sha256sum", f), migratetest.Run(t, dst, "sha256sum", f); a != b {
					t.Errorf("seed %d: sha256sum %s: %s on A, %s on B", seed, f, a, b)
				}
			}
			migratetest.Compare(t, filepath.Join(src, "tree"), filepath.Join(dst, "tree"), tr)
		})
		if t.Failed() {
			t.FailNow()
		}
	}
}

func mkdir(t *testing.T, dir, name string) string {
	t.Helper()
	if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
		t.Fatal(err)
	}
	return name
}

// TestMigrateHostKeys: an unknown host key is refused with its fingerprint
// unless --accept-new-host-key, and a changed key is refused always.
func TestMigrateHostKeys(t *testing.T) {
	h := startMigrateHosts(t)
	h.a.MustStow("volume", "create", "hk")
	known := h.sshd.KnownHosts

	h.sshd.KnownHosts = filepath.Join(t.TempDir(), "known_hosts")
	r := h.migrate("hk", h.target(""))
	if r.Code == 0 || !strings.Contains(r.Stderr, "is not known") || !strings.Contains(r.Stderr, "SHA256:") ||
		!strings.Contains(r.Stderr, h.sshd.KnownHosts) || !strings.Contains(r.Stderr, "--accept-new-host-key") {
		t.Fatalf("unknown host key: want a refusal with the fingerprint and the file, got %s", r)
	}
	if _, err := os.Stat(h.sshd.KnownHosts); !os.IsNotExist(err) {
		t.Errorf("known_hosts written although the key was refused: %v", err)
	}
	if r := h.b.Stow("volume", "inspect", "hk"); r.Code == 0 {
		t.Errorf("target volume created although the host key was refused")
	}
	if r := h.migrate("hk", h.target(""), "--dry-run", "--accept-new-host-key"); r.Code != 0 {
		t.Fatalf("dry run with --accept-new-host-key: %s", r)
	}
	b, err := os.ReadFile(h.sshd.KnownHosts)
	if err != nil || !strings.Contains(string(b), fmt.Sprintf("[%s]:%d ssh-ed25519 ", h.nsB.IP, h.sshd.Port)) {
		t.Fatalf("known_hosts after --accept-new-host-key: %q, %v", b, err)
	}
	if r := h.b.Stow("volume", "inspect", "hk"); r.Code == 0 {
		t.Errorf("a dry run created the target volume")
	}

	// Another key for the same host.
	other := filepath.Join(t.TempDir(), "known_hosts")
	line := strings.Fields(string(mustRead(t, known)))
	line[2] = "AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"
	if err := os.WriteFile(other, []byte(strings.Join(line, " ")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	h.sshd.KnownHosts = other
	r = h.migrate("hk", h.target(""), "--accept-new-host-key")
	if r.Code == 0 || !strings.Contains(r.Stderr, "has changed") || !strings.Contains(r.Stderr, other+":1") {
		t.Fatalf("changed host key: want a refusal naming the file and line, got %s", r)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestMigrateDiskFull: a target volume too small for the data is refused
// with its name and space before anything is switched; the source stays as
// it was, and --abort --force removes the target the migration created.
func TestMigrateDiskFull(t *testing.T) {
	h := startMigrateHosts(t)
	testenv.Require(t, "mkfs.ext4", "losetup")
	h.a.MustStow("volume", "create", "full")
	var sums string
	fill(t, h.a, "full", func(p string) {
		for i := range 3 {
			migratetest.Run(t, p, "dd", "if=/dev/urandom", fmt.Sprintf("of=f%d", i), "bs=1M", "count=16", "status=none")
		}
		sums = migratetest.Run(t, p, "sha256sum", "f0", "f1", "f2")
	})
	r := h.migrate("full", h.target(""), "-o", "size=24MiB")
	if r.Code == 0 {
		t.Fatalf("migrate 48 MiB into a 24 MiB volume succeeded: %s", r)
	}
	for _, want := range []string{"not enough space on the target volume", `volume "full" on ` + strings.Split(h.sshd.Addr, ":")[0], "free of", "needs"} {
		if !strings.Contains(r.Stderr, want) {
			t.Errorf("error lacks %q: %s", want, r.Stderr)
		}
	}
	// A is untouched: not migrated, not mounted, same content.
	v := h.a.MustStow("--format", "json", "volume", "inspect", "full")
	if strings.Contains(v, `"migrated_to": "ssh`) || !strings.Contains(v, `"mounts": 0`) {
		t.Errorf("source volume after a failed migration:\n%s", v)
	}
	fill(t, h.a, "full", func(p string) {
		if got := migratetest.Run(t, p, "sha256sum", "f0", "f1", "f2"); got != sums {
			t.Errorf("source content changed:\n%s\nwant\n%s", got, sums)
		}
	})
	// The target was created by this migration and is not in use.
	if v := h.b.MustStow("--format", "json", "volume", "inspect", "full"); !strings.Contains(v, `"mounts": 0`) {
		t.Errorf("target volume after a failed migration:\n%s", v)
	}
	if r := h.migrate("full", h.target(""), "--abort", "--force"); r.Code != 0 || !strings.Contains(r.Stdout, `removed the target volume "full"`) {
		t.Fatalf("--abort --force: %s", r)
	}
	if r := h.b.Stow("volume", "inspect", "full"); r.Code == 0 {
		t.Errorf("target volume still exists after --abort --force: %s", r)
	}
	if _, err := os.Stat(filepath.Join(h.state, "full.json")); !os.IsNotExist(err) {
		t.Errorf("journal left after --abort: %v", err)
	}
}

// TestMigrateAbort: --abort after a killed migration releases the mounts it
// left on both hosts and drops its journal; the target it created is kept
// without --force.
func TestMigrateAbort(t *testing.T) {
	h := startMigrateHosts(t)
	h.a.MustStow("volume", "create", "ab")
	fill(t, h.a, "ab", func(p string) {
		migratetest.Run(t, p, "dd", "if=/dev/urandom", "of=data", "bs=1M", "count=32", "status=none")
	})
	if r := h.migrate("ab", h.target(""), "--abort"); r.Code == 0 || !strings.Contains(r.Stderr, `no migration of volume "ab" to abort`) {
		t.Errorf("--abort without a migration: want a refusal, got %s", r)
	}
	m := h.startMigrate(t, "ab", "--bwlimit", "4MiB")
	if err := m.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := m.wait(); err == nil {
		t.Fatal("stow migrate exited 0 after SIGKILL")
	}
	if v := h.a.MustStow("--format", "json", "volume", "inspect", "ab"); strings.Contains(v, `"mounts": 0`) {
		t.Fatalf("the killed migration left no mount of the source to release:\n%s", v)
	}
	if r := h.migrate("ab", h.target("/?volume=other"), "--abort"); r.Code == 0 || !strings.Contains(r.Stderr, "abort with that URL") {
		t.Errorf("--abort with another target: want a refusal, got %s", r)
	}
	r := h.migrate("ab", h.target(""), "--abort")
	if r.Code != 0 {
		t.Fatalf("--abort: %s", r)
	}
	for _, want := range []string{"journal removed", "source mount released", "target mount released", `kept the target volume "ab"`} {
		if !strings.Contains(r.Stdout, want) {
			t.Errorf("--abort output lacks %q:\n%s", want, r.Stdout)
		}
	}
	if v := h.a.MustStow("--format", "json", "volume", "inspect", "ab"); !strings.Contains(v, `"mounts": 0`) || strings.Contains(v, `"migrated_to": "ssh`) {
		t.Errorf("source volume after --abort:\n%s", v)
	}
	if v := h.b.MustStow("--format", "json", "volume", "inspect", "ab"); !strings.Contains(v, `"mounts": 0`) {
		t.Errorf("target volume after --abort:\n%s", v)
	}
	if _, err := os.Stat(filepath.Join(h.state, "ab.json")); !os.IsNotExist(err) {
		t.Errorf("journal left after --abort: %v", err)
	}
	// The kept target is an existing volume to a new migration.
	if r := h.migrate("ab", h.target("")); r.Code == 0 || !strings.Contains(r.Stderr, "--force") {
		t.Errorf("migrate after --abort into the kept target: want a refusal naming --force, got %s", r)
	}
}
