package e2e_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/migrate/migratetest"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// liveHosts are the migration hosts with, on host A, a stow runtime root
// and a private dockerd whose containers take volumes from A's volumed.
type liveHosts struct {
	*migrateHosts
	root  string
	d     *harness.Docker
	image string
}

func startLiveHosts(t *testing.T) *liveHosts {
	t.Helper()
	h := &liveHosts{migrateHosts: startMigrateHosts(t)}
	testenv.Require(t, "busybox", "dockerd")
	h.d = harness.StartDockerd(t)
	h.image = harness.ImportBusybox(t, h.d.Host)
	root, err := os.MkdirTemp("", "stowage-runtime-")
	if err != nil {
		t.Fatal(err)
	}
	h.root = root
	t.Cleanup(func() {
		if ids := strings.Fields(h.stow("ps", "-aq").Stdout); len(ids) > 0 {
			if r := h.stow(append([]string{"rm", "-f"}, ids...)...); r.Code != 0 {
				t.Errorf("cleanup: stow rm -f: %s", r)
			}
		}
		if m := harness.MountsUnder(t, root); len(m) > 0 {
			t.Errorf("mounts left below the runtime root: %v", m)
		}
		os.RemoveAll(root)
	})
	h.mustStow(t, "image", "import", busyboxTarball(t), "bb")
	return h
}

// stow runs stow on host A with the runtime root.
func (h *liveHosts) stow(args ...string) harness.Result {
	return h.a.Stow(append([]string{"--root", h.root, "--plugin-socket", h.a.PluginSocket}, args...)...)
}

func (h *liveHosts) mustStow(t *testing.T, args ...string) string {
	t.Helper()
	r := h.stow(args...)
	if r.Code != 0 {
		t.Fatalf("stow %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// writerScript writes the files f1, f2, ... into /data/NAME, each whole
// before it appears (renamed into place), and after each one the number
// of the last in /data/NAME/count, the same way.
func writerScript(name string) string {
	return fmt.Sprintf(`d=/data/%s; mkdir -p $d; i=0; while :; do i=$((i+1)); `+
		`echo "%s $i $(date +%%s%%N)" > $d/.t && mv $d/.t $d/f$i && echo $i > $d/.c && mv $d/.c $d/count; usleep 10000; done`, name, name)
}

// startWriters starts a stow container and a Docker container that both
// write into vol on host A, and waits until each has written some files.
func (h *liveHosts) startWriters(t *testing.T, vol, sw, dw string) {
	t.Helper()
	h.mustStow(t, "run", "-d", "--name", sw, "-v", vol+":/data", "bb", "sh", "-c", writerScript(sw))
	h.d.Must("run", "-d", "--name", dw, "--network", "none",
		"--mount", "type=volume,src="+vol+",dst=/data,volume-driver="+h.a.Driver, h.image, "sh", "-c", writerScript(dw))
	for _, w := range []string{sw, dw} {
		h.waitCount(t, w, sw, 5)
	}
}

// count reads the writer w's count through its container (sw is the stow
// writer's name; any other is the Docker one).
func (h *liveHosts) count(w, sw string) (int, error) {
	var r harness.Result
	if w == sw {
		r = h.stow("exec", sw, "cat", "/data/"+w+"/count")
	} else {
		r = h.d.Run("exec", w, "cat", "/data/"+w+"/count")
	}
	if r.Code != 0 {
		return 0, fmt.Errorf("read count of %s: %s", w, r)
	}
	return strconv.Atoi(strings.TrimSpace(r.Stdout))
}

// waitCount waits until writer w has written more than n files.
func (h *liveHosts) waitCount(t *testing.T, w, sw string, n int) {
	t.Helper()
	err := harness.Poll(time.Minute, func() error {
		c, err := h.count(w, sw)
		if err == nil && c <= n {
			err = fmt.Errorf("writer %s at %d files, waiting for more than %d", w, c, n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkRunning checks that both writers run and are not paused.
func (h *liveHosts) checkRunning(t *testing.T, sw, dw string) {
	t.Helper()
	line := psLine(t, h.mustStow(t, "ps"), sw)
	if !strings.Contains(line, "Up ") || strings.Contains(line, "Paused") {
		t.Errorf("stow ps shows %s as %q; want it up and not paused", sw, line)
	}
	if got := strings.TrimSpace(h.d.Must("inspect", "-f", "{{.State.Running}} {{.State.Paused}}", dw)); got != "true false" {
		t.Errorf("docker inspect %s: running, paused = %s; want true false", dw, got)
	}
}

// psLine returns the line of container name in ps output.
func psLine(t *testing.T, ps, name string) string {
	t.Helper()
	for l := range strings.Lines(ps) {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] == name {
			return strings.TrimSpace(l)
		}
	}
	t.Fatalf("no container %s in stow ps:\n%s", name, ps)
	return ""
}

// checkSnapshot checks that dst holds, for writer w, exactly what it had
// written at one moment: count K, the files f1..fK and at most the next
// one, each the same as on the source (where a written file never
// changes).
func checkSnapshot(t *testing.T, src, dst, w string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dst, w, "count"))
	if err != nil {
		t.Fatalf("count of %s on the target: %v", w, err)
	}
	k, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || k < 5 {
		t.Fatalf("count of %s on the target = %q; want a number of at least 5", w, b)
	}
	files, err := filepath.Glob(filepath.Join(dst, w, "f*"))
	if err != nil {
		t.Fatal(err)
	}
	// A writer frozen between a file and its count has one file more.
	n := len(files)
	if n != k && n != k+1 {
		t.Errorf("writer %s: %d files on the target, count says %d", w, n, k)
	}
	for i := 1; i <= n; i++ {
		name := filepath.Join(w, "f"+strconv.Itoa(i))
		a, b := migratetest.Run(t, src, "sha256sum", name), migratetest.Run(t, dst, "sha256sum", name)
		if a != b {
			t.Errorf("sha256sum: %s on A, %s on B", a, b)
		}
	}
	return k
}

// treeSums lists every regular file below dir with its sha256.
func treeSums(t *testing.T, dir string) string {
	t.Helper()
	return migratetest.Run(t, dir, "sh", "-c", "find . -type f -exec sha256sum {} + | sort")
}

// TestMigrateLive moves a volume that a stow container and a Docker
// container write into, with --live: both are frozen for the final pass
// only. The target holds what they had written at the freeze, verified by
// sha256; with --after resume both run again afterwards, with --after stop
// they are killed while frozen, so the source ends identical to the
// target. A final pass that fails (the link cut) leaves them thawed.
func TestMigrateLive(t *testing.T) {
	h := startLiveHosts(t)
	env := append(os.Environ(), h.d.Env()...)

	t.Run("resume", func(t *testing.T) {
		const vol, sw, dw = "live1", "sw1", "dw1"
		h.a.MustStow("volume", "create", vol)
		h.startWriters(t, vol, sw, dw)

		// Without --live the mounted volume is refused, after the copy.
		r := h.migrate(vol, h.target(""), "--root", h.root)
		if r.Code == 0 || !strings.Contains(r.Stderr, "is mounted") || !strings.Contains(r.Stderr, "--live") {
			t.Fatalf("stow migrate of a mounted volume without --live: %s; want a refusal that names --live", r)
		}
		h.checkRunning(t, sw, dw)

		// A final pass that fails leaves the consumers thawed: the
		// migration is stopped as it starts freezing, the link cut, and
		// it goes on.
		args := h.migrateArgs(vol, h.target(""), "--root", h.root, "--live", "--keepalive", "1s")
		cmd := h.nsA.Command(h.bins.Stow, args...)
		cmd.Env = env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if cmd.ProcessState == nil {
				cmd.Process.Kill()
				cmd.Wait()
			}
		})
		sc := bufio.NewScanner(out)
		var seen []string
		for sc.Scan() {
			seen = append(seen, sc.Text())
			if strings.HasPrefix(sc.Text(), "freeze: freezing") {
				break
			}
		}
		if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("stop stow migrate: %v (output so far: %q)", err, seen)
		}
		h.nsA.SetLink(false)
		if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		for sc.Scan() {
			seen = append(seen, sc.Text())
		}
		if err := cmd.Wait(); err == nil {
			t.Fatalf("stow migrate --live exited 0 with the link down:\n%s", strings.Join(seen, "\n"))
		}
		if !strings.Contains(strings.Join(seen, "\n"), "freeze: froze ") {
			t.Errorf("stow migrate did not get to freeze the writers:\n%s\n%s", strings.Join(seen, "\n"), stderr.String())
		}
		if !strings.Contains(stderr.String(), "lost the connection") {
			t.Errorf("stderr after the link went down: %q; want the lost connection", stderr.String())
		}
		h.nsA.SetLink(true)
		h.checkRunning(t, sw, dw)
		for _, w := range []string{sw, dw} {
			c, err := h.count(w, sw)
			if err != nil {
				t.Fatal(err)
			}
			h.waitCount(t, w, sw, c)
		}

		// Now it completes.
		r = h.nsA.Run(h.d.Env(), h.bins.Stow, h.migrateArgs(vol, h.target(""), "--root", h.root, "--live")...)
		if r.Code != 0 {
			t.Fatalf("stow migrate --live: %s", r)
		}
		t.Logf("stow migrate --live:\n%s", r.Stdout)
		for _, want := range []string{"freeze: froze ", "stow:" + sw, "docker:" + dw, "final round", "verify", "release: resume", ", then resumed"} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("stow migrate --live output lacks %q:\n%s", want, r.Stdout)
			}
		}
		h.checkRunning(t, sw, dw)
		// The resumed writers go on, on the source.
		dst := mount(t, h.b, vol)
		fill(t, h.a, vol, func(src string) {
			for _, w := range []string{sw, dw} {
				k := checkSnapshot(t, src, dst, w)
				h.waitCount(t, w, sw, k)
			}
		})
		// The source is still in use, so it is not marked migrated.
		if v := h.a.MustStow("--format", "json", "volume", "inspect", vol); strings.Contains(v, "migrated_to") {
			t.Errorf("source volume with resumed containers is marked migrated:\n%s", v)
		}

		// stow pause and unpause do by hand what --live does.
		h.mustStow(t, "pause", sw)
		if line := psLine(t, h.mustStow(t, "ps"), sw); !strings.Contains(line, "(Paused)") {
			t.Errorf("stow ps after stow pause shows %s as %q", sw, line)
		}
		h.mustStow(t, "unpause", sw)
		h.checkRunning(t, sw, dw)
	})

	t.Run("stop", func(t *testing.T) {
		const vol, sw, dw = "live2", "sw2", "dw2"
		h.a.MustStow("volume", "create", vol)
		h.startWriters(t, vol, sw, dw)
		r := h.nsA.Run(h.d.Env(), h.bins.Stow, h.migrateArgs(vol, h.target(""), "--root", h.root, "--live", "--after", "stop", "--format", "json")...)
		if r.Code != 0 {
			t.Fatalf("stow migrate --live --after stop: %s", r)
		}
		for _, want := range []string{`"phase":"freeze"`, `"live":{"consumers":[`, `"after":"stop"`, `"released":true`, `"frozen_ns":`} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("stow migrate --format json output lacks %s:\n%s", want, r.Stdout)
			}
		}
		if line := psLine(t, h.mustStow(t, "ps", "-a"), sw); !strings.Contains(line, "Exited") {
			t.Errorf("stow ps -a shows %s as %q; want it exited", sw, line)
		}
		if got := strings.TrimSpace(h.d.Must("inspect", "-f", "{{.State.Running}} {{.State.Paused}}", dw)); got != "false false" {
			t.Errorf("docker inspect %s: running, paused = %s; want false false", dw, got)
		}
		if v := h.a.MustStow("--format", "json", "volume", "inspect", vol); !strings.Contains(v, `"migrated_to"`) {
			t.Errorf("source volume is not marked migrated:\n%s", v)
		}
		// Killed while frozen, the writers wrote nothing after the freeze:
		// the source is the target.
		dst := mount(t, h.b, vol)
		fill(t, h.a, vol, func(src string) {
			for _, w := range []string{sw, dw} {
				checkSnapshot(t, src, dst, w)
			}
			if a, b := treeSums(t, src), treeSums(t, dst); a != b {
				t.Errorf("source and target differ:\nA:\n%s\nB:\n%s", a, b)
			}
		})
	})

	t.Run("killed while frozen", func(t *testing.T) {
		const vol, sw, dw, dp = "live4", "sw4", "dw4", "dp4"
		h.a.MustStow("volume", "create", vol)
		h.startWriters(t, vol, sw, dw)
		// A container paused before the migration stays paused.
		h.d.Must("run", "-d", "--name", dp, "--network", "none",
			"--mount", "type=volume,src="+vol+",dst=/data,volume-driver="+h.a.Driver, h.image, "sh", "-c", writerScript(dp))
		h.d.Must("pause", dp)
		t.Cleanup(func() { h.d.Run("unpause", dp) })
		thawed := "thawed docker:" + dw + ", stow:" + sw + " left frozen by an interrupted migration" // sorted

		// Killed while frozen, then aborted: the abort thaws them (and
		// removes the target volume, so the next run starts afresh).
		h.killFrozen(t, vol, env)
		h.checkFrozen(t, sw, dw)
		r := h.nsA.Run(h.d.Env(), h.bins.Stow, h.migrateArgs(vol, h.target(""), "--root", h.root, "--abort", "--force")...)
		if r.Code != 0 || !strings.Contains(r.Stdout, thawed) {
			t.Fatalf("stow migrate --abort after a kill while frozen: %s; want %q", r, thawed)
		}
		h.checkRunning(t, sw, dw)
		h.checkPaused(t, dp)

		// Killed while frozen, then rerun: the rerun thaws them first and
		// completes.
		h.killFrozen(t, vol, env)
		h.checkFrozen(t, sw, dw)
		r = h.nsA.Run(h.d.Env(), h.bins.Stow, h.migrateArgs(vol, h.target(""), "--root", h.root, "--live")...)
		if r.Code != 0 {
			t.Fatalf("stow migrate --live after a kill while frozen: %s", r)
		}
		for _, want := range []string{"release: " + thawed, "freeze: froze ", "verify", "release: resume", ", then resumed"} {
			if !strings.Contains(r.Stdout, want) {
				t.Errorf("stow migrate --live output lacks %q:\n%s", want, r.Stdout)
			}
		}
		h.checkRunning(t, sw, dw)
		h.checkPaused(t, dp)
		for _, w := range []string{sw, dw} {
			c, err := h.count(w, sw)
			if err != nil {
				t.Fatal(err)
			}
			h.waitCount(t, w, sw, c)
		}
		dst := mount(t, h.b, vol)
		fill(t, h.a, vol, func(src string) {
			for _, w := range []string{sw, dw} {
				checkSnapshot(t, src, dst, w)
			}
		})
	})

	t.Run("unknown holder", func(t *testing.T) {
		const vol = "live3"
		h.a.MustStow("volume", "create", vol)
		mount(t, h.a, vol) // a holder that is no container
		r := h.nsA.Run(h.d.Env(), h.bins.Stow, h.migrateArgs(vol, h.target(""), "--root", h.root, "--live")...)
		if r.Code == 0 || !strings.Contains(r.Stderr, "mount IDs e2e-check") || !strings.Contains(r.Stderr, "belong to no container") {
			t.Fatalf("stow migrate --live of a volume mounted by no container: %s; want a refusal naming the mount ID", r)
		}
	})
}

// killFrozen starts stow migrate --live of vol and kills it with SIGKILL
// once it has frozen the writers: the link is cut as it starts freezing,
// so that the final pass cannot end before the kill.
func (h *liveHosts) killFrozen(t *testing.T, vol string, env []string) {
	t.Helper()
	cmd := h.nsA.Command(h.bins.Stow, h.migrateArgs(vol, h.target(""), "--root", h.root, "--live")...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	defer h.nsA.SetLink(true)
	sc := bufio.NewScanner(out)
	var seen []string
	wait := "freeze: freezing"
	for sc.Scan() {
		seen = append(seen, sc.Text())
		if !strings.HasPrefix(sc.Text(), wait) {
			continue
		}
		if wait == "freeze: froze " {
			break
		}
		if err := cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatalf("stop stow migrate: %v (output so far: %q)", err, seen)
		}
		h.nsA.SetLink(false)
		if err := cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		wait = "freeze: froze "
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if len(seen) == 0 || !strings.HasPrefix(seen[len(seen)-1], "freeze: froze ") {
		t.Fatalf("stow migrate --live ended before it froze the writers:\n%s\n%s", strings.Join(seen, "\n"), stderr.String())
	}
}

// checkFrozen checks that both writers are still paused.
func (h *liveHosts) checkFrozen(t *testing.T, sw, dw string) {
	t.Helper()
	if line := psLine(t, h.mustStow(t, "ps"), sw); !strings.Contains(line, "(Paused)") {
		t.Errorf("stow ps shows %s as %q; want it paused", sw, line)
	}
	h.checkPaused(t, dw)
}

// checkPaused checks that Docker container c runs paused.
func (h *liveHosts) checkPaused(t *testing.T, c string) {
	t.Helper()
	if got := strings.TrimSpace(h.d.Must("inspect", "-f", "{{.State.Running}} {{.State.Paused}}", c)); got != "true true" {
		t.Errorf("docker inspect %s: running, paused = %s; want true true", c, got)
	}
}
