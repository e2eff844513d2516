package e2e_test

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
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

// stubbornScript is writerScript with two ways to write after a thaw:
// SIGTERM makes the writer leave /data/NAME/TERM, and a process of its
// own appends a line to /data/NAME/late every 20ms. A freeze outlasts
// that sleep, so this process writes as soon as it runs again.
func stubbornScript(name string) string {
	return fmt.Sprintf(`trap "echo term > /data/%s/TERM; exit 0" TERM; mkdir -p /data/%s; `+
		`(while :; do usleep 20000; echo late >> /data/%s/late; done) & `, name, name, name) + writerScript(name)
}

// startWriters starts a stow container and a Docker container (with
// dockerArgs) that both run script(their name) with vol at /data on host
// A, and waits until each has written some files.
func (h *liveHosts) startWriters(t *testing.T, vol, sw, dw string, script func(string) string, dockerArgs ...string) {
	t.Helper()
	h.a.MustStow("volume", "create", vol)
	h.mustStow(t, "run", "-d", "--name", sw, "-v", vol+":/data", "bb", "sh", "-c", script(sw))
	h.startDocker(dw, vol, script, dockerArgs...)
	for _, w := range []string{sw, dw} {
		h.waitCount(t, w, sw, 5)
	}
}

// startDocker starts the Docker container name (with args) that runs
// script(name) with vol at /data.
func (h *liveHosts) startDocker(name, vol string, script func(string) string, args ...string) {
	args = append([]string{"run", "-d", "--name", name, "--network", "none",
		"--mount", "type=volume,src=" + vol + ",dst=/data,volume-driver=" + h.a.Driver}, args...)
	h.d.Must(append(args, h.image, "sh", "-c", script(name))...)
}

// liveMigrate runs stow migrate of vol to B on host A, with the runtime
// root and A's dockerd.
func (h *liveHosts) liveMigrate(vol string, extra ...string) harness.Result {
	return h.nsA.Run(h.d.Env(), h.bins.Stow, h.migrateArgs(vol, h.target(""), append([]string{"--root", h.root}, extra...)...)...)
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

// checkWriting checks that both writers run, are not paused, and write on.
func (h *liveHosts) checkWriting(t *testing.T, sw, dw string) {
	t.Helper()
	h.checkRunning(t, sw, dw)
	for _, w := range []string{sw, dw} {
		c, err := h.count(w, sw)
		if err != nil {
			t.Fatal(err)
		}
		h.waitCount(t, w, sw, c)
	}
}

// checkRunning checks that both writers run and are not paused.
func (h *liveHosts) checkRunning(t *testing.T, sw, dw string) {
	t.Helper()
	line := psLine(t, h.mustStow(t, "ps"), sw)
	if !strings.Contains(line, "Up ") || strings.Contains(line, "Paused") {
		t.Errorf("stow ps shows %s as %q; want it up and not paused", sw, line)
	}
	h.checkDocker(t, dw, "true false")
}

// checkFrozen checks that both writers are still paused.
func (h *liveHosts) checkFrozen(t *testing.T, sw, dw string) {
	t.Helper()
	if line := psLine(t, h.mustStow(t, "ps"), sw); !strings.Contains(line, "(Paused)") {
		t.Errorf("stow ps shows %s as %q; want it paused", sw, line)
	}
	h.checkDocker(t, dw, "true true")
}

// checkDocker checks the Docker container c's state, as "RUNNING PAUSED"
// (such as "true false").
func (h *liveHosts) checkDocker(t *testing.T, c, want string) {
	t.Helper()
	if got := strings.TrimSpace(h.d.Must("inspect", "-f", "{{.State.Running}} {{.State.Paused}}", c)); got != want {
		t.Errorf("docker inspect %s: running, paused = %s; want %s", c, got, want)
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

// checkOutput checks that the output out of what holds each of want.
func checkOutput(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s output lacks %q:\n%s", what, w, out)
		}
	}
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

// checkSnapshots mounts vol on B and on A and checks that B holds a
// snapshot of each writer (checkSnapshot); then, if more is not nil, it
// calls more with A's and B's directories and the writers' counts on B,
// before A's mount ends.
func (h *liveHosts) checkSnapshots(t *testing.T, vol string, writers []string, more func(src, dst string, counts []int)) {
	t.Helper()
	dst := mount(t, h.b, vol)
	fill(t, h.a, vol, func(src string) {
		counts := make([]int, len(writers))
		for i, w := range writers {
			counts[i] = checkSnapshot(t, src, dst, w)
		}
		if more != nil {
			more(src, dst, counts)
		}
	})
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
		h.startWriters(t, vol, sw, dw, writerScript)

		// Without --live the mounted volume is refused, after the copy.
		r := h.liveMigrate(vol)
		if r.Code == 0 || !strings.Contains(r.Stderr, "is mounted") || !strings.Contains(r.Stderr, "--live") {
			t.Fatalf("stow migrate of a mounted volume without --live: %s; want a refusal that names --live", r)
		}
		h.checkRunning(t, sw, dw)

		// A final pass that fails leaves the consumers thawed.
		run := h.startCut(t, vol, env, "--keepalive", "1s")
		run.readUntil("")
		if err := run.cmd.Wait(); err == nil {
			t.Fatalf("stow migrate --live exited 0 with the link down:\n%s", run.output())
		}
		checkOutput(t, "stow migrate --live with the link down", run.output(), "freeze: froze ")
		if !strings.Contains(run.stderr.String(), "lost the connection") {
			t.Errorf("stderr after the link went down: %q; want the lost connection", run.stderr.String())
		}
		h.nsA.SetLink(true)
		h.checkWriting(t, sw, dw)

		// Now it completes.
		r = h.liveMigrate(vol, "--live")
		if r.Code != 0 {
			t.Fatalf("stow migrate --live: %s", r)
		}
		t.Logf("stow migrate --live:\n%s", r.Stdout)
		checkOutput(t, "stow migrate --live", r.Stdout, "freeze: froze ", "stow:"+sw, "docker:"+dw, "final round", "verify", "release: resume", ", then resumed")
		h.checkRunning(t, sw, dw)
		// The resumed writers go on, on the source.
		h.checkSnapshots(t, vol, []string{sw, dw}, func(_, _ string, counts []int) {
			h.waitCount(t, sw, sw, counts[0])
			h.waitCount(t, dw, sw, counts[1])
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

	// With --after stop no process of the writers runs again after the
	// freeze: not a SIGTERM handler, not the process that appends to late
	// as soon as it runs. The Docker writer shares the host's PID
	// namespace, so its other processes do not die with its first one.
	t.Run("stop", func(t *testing.T) {
		const vol, sw, dw = "live2", "sw2", "dw2"
		h.startWriters(t, vol, sw, dw, stubbornScript, "--pid=host")
		r := h.liveMigrate(vol, "--live", "--after", "stop", "--format", "json")
		if r.Code != 0 {
			t.Fatalf("stow migrate --live --after stop: %s", r)
		}
		checkOutput(t, "stow migrate --format json", r.Stdout, `"phase":"freeze"`, `"live":{"consumers":[`, `"after":"stop"`, `"released":true`, `"frozen_ns":`)
		if line := psLine(t, h.mustStow(t, "ps", "-a"), sw); !strings.Contains(line, "Exited") {
			t.Errorf("stow ps -a shows %s as %q; want it exited", sw, line)
		}
		h.checkDocker(t, dw, "false false")
		if v := h.a.MustStow("--format", "json", "volume", "inspect", vol); !strings.Contains(v, `"migrated_to"`) {
			t.Errorf("source volume is not marked migrated:\n%s", v)
		}
		// Killed while frozen, the writers wrote nothing after the freeze:
		// the source is the target.
		h.checkSnapshots(t, vol, []string{sw, dw}, func(src, dst string, _ []int) {
			for _, w := range []string{sw, dw} {
				if _, err := os.Stat(filepath.Join(src, w, "TERM")); err == nil {
					t.Errorf("writer %s ran its SIGTERM handler after the freeze", w)
				}
				a, _ := os.ReadFile(filepath.Join(src, w, "late"))
				b, _ := os.ReadFile(filepath.Join(dst, w, "late"))
				if la, lb := strings.Count(string(a), "\n"), strings.Count(string(b), "\n"); la != lb || la == 0 {
					t.Errorf("writer %s: %d lines in late on A, %d on B; want the same, more than 0 (none written after the freeze)", w, la, lb)
				}
			}
			if a, b := treeSums(t, src), treeSums(t, dst); a != b {
				t.Errorf("source and target differ:\nA:\n%s\nB:\n%s", a, b)
			}
		})
	})

	t.Run("killed while frozen", func(t *testing.T) {
		const vol, sw, dw, dp = "live4", "sw4", "dw4", "dp4"
		h.startWriters(t, vol, sw, dw, writerScript)
		// A container paused before the migration stays paused.
		h.startDocker(dp, vol, writerScript)
		h.d.Must("pause", dp)
		t.Cleanup(func() { h.d.Run("unpause", dp) })
		thawed := "thawed docker:" + dw + ", stow:" + sw + " left frozen by an interrupted migration" // sorted

		// Killed while frozen, then aborted: the abort thaws them (and
		// removes the target volume, so the next run starts afresh).
		h.killFrozen(t, vol, env)
		h.checkFrozen(t, sw, dw)
		r := h.liveMigrate(vol, "--abort", "--force")
		if r.Code != 0 || !strings.Contains(r.Stdout, thawed) {
			t.Fatalf("stow migrate --abort after a kill while frozen: %s; want %q", r, thawed)
		}
		h.checkRunning(t, sw, dw)
		h.checkDocker(t, dp, "true true")

		// Killed while frozen, then rerun: the rerun thaws them first and
		// completes.
		h.killFrozen(t, vol, env)
		h.checkFrozen(t, sw, dw)
		r = h.liveMigrate(vol, "--live")
		if r.Code != 0 {
			t.Fatalf("stow migrate --live after a kill while frozen: %s", r)
		}
		checkOutput(t, "stow migrate --live", r.Stdout, "release: "+thawed, "freeze: froze ", "verify", "release: resume", ", then resumed")
		h.checkWriting(t, sw, dw)
		h.checkDocker(t, dp, "true true")
		h.checkSnapshots(t, vol, []string{sw, dw}, nil)
	})

	t.Run("unknown holder", func(t *testing.T) {
		const vol = "live3"
		h.a.MustStow("volume", "create", vol)
		mount(t, h.a, vol) // a holder that is no container
		r := h.liveMigrate(vol, "--live")
		if r.Code == 0 || !strings.Contains(r.Stderr, "mount IDs e2e-check") || !strings.Contains(r.Stderr, "belong to no container") {
			t.Fatalf("stow migrate --live of a volume mounted by no container: %s; want a refusal naming the mount ID", r)
		}
	})
}

// cutRun is a stow migrate --live on host A whose link was cut as it
// started freezing, so that its final pass cannot end.
type cutRun struct {
	cmd    *exec.Cmd
	sc     *bufio.Scanner
	seen   []string
	stderr strings.Builder
}

// startCut starts stow migrate --live of vol (with extra arguments) and
// reads its output until it starts freezing; there it stops the process,
// cuts A's link and lets it go on.
func (h *liveHosts) startCut(t *testing.T, vol string, env []string, extra ...string) *cutRun {
	t.Helper()
	r := &cutRun{cmd: h.nsA.Command(h.bins.Stow, h.migrateArgs(vol, h.target(""), append([]string{"--root", h.root, "--live"}, extra...)...)...)}
	r.cmd.Env = env
	r.cmd.Stderr = &r.stderr
	out, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Kill()
			r.cmd.Wait()
		}
	})
	r.sc = bufio.NewScanner(out)
	if !r.readUntil("freeze: freezing") {
		r.cmd.Wait()
		t.Fatalf("stow migrate --live ended before it started freezing:\n%s\n%s", r.output(), r.stderr.String())
	}
	if err := r.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatalf("stop stow migrate: %v (output so far: %q)", err, r.seen)
	}
	h.nsA.SetLink(false)
	if err := r.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	return r
}

// readUntil reads output lines until one that starts with prefix (a
// non-empty one), and reports whether it came before the output ended.
func (r *cutRun) readUntil(prefix string) bool {
	for r.sc.Scan() {
		r.seen = append(r.seen, r.sc.Text())
		if prefix != "" && strings.HasPrefix(r.sc.Text(), prefix) {
			return true
		}
	}
	return false
}

// output is the output read so far.
func (r *cutRun) output() string { return strings.Join(r.seen, "\n") }

// killFrozen starts stow migrate --live of vol and kills it with SIGKILL
// once it has frozen the writers: the link is cut as it starts freezing,
// so that the final pass cannot end before the kill.
func (h *liveHosts) killFrozen(t *testing.T, vol string, env []string) {
	t.Helper()
	run := h.startCut(t, vol, env)
	defer h.nsA.SetLink(true)
	froze := run.readUntil("freeze: froze ")
	if err := run.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	run.cmd.Wait()
	if !froze {
		t.Fatalf("stow migrate --live ended before it froze the writers:\n%s\n%s", run.output(), run.stderr.String())
	}
}
