package e2e_test

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/tests/e2e/harness"
)

// cgroupRoot is where the host mounts cgroupfs.
const cgroupRoot = "/sys/fs/cgroup"

// containerIDPattern matches a container's ID, the name of its directory.
var containerIDPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// cgroupV2 reports whether the host has the unified hierarchy only.
func cgroupV2(t *testing.T) bool {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(cgroupRoot, &st); err != nil {
		t.Fatalf("statfs %s: %v", cgroupRoot, err)
	}
	return st.Type == unix.CGROUP2_SUPER_MAGIC
}

// cgroupFile returns the path of a control file of the container's cgroup
// "stowage/<id>": below controller ctrl on cgroup v1, in the one directory
// on v2.
func cgroupFile(t *testing.T, ctrl, id, file string) string {
	t.Helper()
	if cgroupV2(t) {
		return filepath.Join(cgroupRoot, "stowage", id, file)
	}
	return filepath.Join(cgroupRoot, ctrl, "stowage", id, file)
}

// stowageCgroups returns the directories of containers' cgroups, on either
// version: <root>/stowage/<id> and <root>/<controller>/stowage/<id>.
func stowageCgroups(t *testing.T) []string {
	t.Helper()
	var dirs []string
	for _, pattern := range []string{"stowage/*", "*/stowage/*"} {
		m, err := filepath.Glob(filepath.Join(cgroupRoot, pattern))
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range m {
			if containerIDPattern.MatchString(filepath.Base(d)) {
				dirs = append(dirs, d)
			}
		}
	}
	slices.Sort(dirs)
	return dirs
}

// checkCgroupGone fails the test if a cgroup of container id is left.
func checkCgroupGone(t *testing.T, id string) {
	t.Helper()
	for _, d := range stowageCgroups(t) {
		if filepath.Base(d) == id {
			t.Errorf("cgroup left after the container ended: %s", d)
		}
	}
}

// containerState is the part of `stow inspect` the limit tests read.
type containerState struct {
	Config struct {
		ID string `json:"id"`
	} `json:"config"`
	State struct {
		Status    string `json:"status"`
		ExitCode  int    `json:"exit_code"`
		OOMKilled bool   `json:"oom_killed"`
	} `json:"state"`
}

// inspect returns `stow inspect NAME`.
func (r *runtimeEnv) inspect(t *testing.T, name string) containerState {
	t.Helper()
	var cs []containerState
	out := r.must(t, "inspect", name)
	if err := json.Unmarshal([]byte(out), &cs); err != nil || len(cs) != 1 {
		t.Fatalf("stow inspect %s: %v\n%s", name, err, out)
	}
	return cs[0]
}

// psLine returns the line of `stow ps -a` whose NAMES column is name.
func (r *runtimeEnv) psLine(t *testing.T, name string) string {
	t.Helper()
	out := r.must(t, "ps", "-a")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[len(f)-1] == name {
			return line
		}
	}
	t.Fatalf("stow ps -a lists no container %s:\n%s", name, out)
	return ""
}

// containerIDs returns the IDs of the containers in the runtime root.
func (r *runtimeEnv) containerIDs(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(r.root, "containers"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		if containerIDPattern.MatchString(e.Name()) {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// TestStowRunMemoryLimitOOM: a container that needs more than --memory is
// OOM-killed; stow exits 137 and ps and inspect say so.
func TestStowRunMemoryLimitOOM(t *testing.T) {
	r := newRuntimeEnv(t)
	t.Cleanup(func() { r.stow("rm", "-f", "hog") })
	// The shell itself holds ~100 MB, far above the limit of 16 MiB.
	res := r.stow("run", "--name", "hog", "--memory", "16m", "bb",
		"sh", "-c", `x=$(head -c 100000000 /dev/zero | tr "\0" a); echo survived ${#x}`)
	if res.Code != 137 || strings.Contains(res.Stdout, "survived") {
		t.Errorf("stow run --memory 16m of a 100 MB shell: %s\nwant exit 137 (SIGKILL by the OOM killer)", res)
	}
	if line := r.psLine(t, "hog"); !strings.Contains(line, "Exited (137) OOM killed") {
		t.Errorf("stow ps -a: %q, want STATUS Exited (137) OOM killed", line)
	}
	c := r.inspect(t, "hog")
	if c.State.Status != "exited" || c.State.ExitCode != 137 || !c.State.OOMKilled {
		t.Errorf("stow inspect: %+v, want exited, exit code 137, oom_killed true", c.State)
	}
	checkCgroupGone(t, c.Config.ID)
	r.must(t, "rm", "hog")
}

// forkBomb starts sleeps from a child shell until a fork fails, counts
// those that started (one PID a line), holds them for two seconds and kills
// them. The child shell dies at its first failed fork (ash exits on it); the
// container's shell, PID 1, goes on with shell builtins only, as no process
// slot may be free.
const forkBomb = `sh -c 'for i in $(seq 100); do sleep 30 & echo $!; done' > /tmp/pids
n=0; while read p; do n=$((n+1)); done < /tmp/pids
echo "forked $n"
sleep 2
while read p; do kill $p; done < /tmp/pids
echo done`

// TestStowRunPidsLimit: --pids-limit 16 stops a fork bomb: forks fail with
// "can't fork", the cgroup never holds more than 16 tasks, and the
// container ends on its own.
func TestStowRunPidsLimit(t *testing.T) {
	r := newRuntimeEnv(t)
	t.Cleanup(func() { r.stow("rm", "-f", "forker") })
	done := make(chan harness.Result, 1)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		done <- r.stow("run", "--name", "forker", "--pids-limit", "16", "bb", "sh", "-c", forkBomb)
	}()
	// Runs first among the cleanups, also after a t.Fatal while sampling.
	t.Cleanup(func() { <-finished })
	// Sample the cgroup until stow exits (within the harness's command
	// timeout). Samples fail before the cgroup exists and after it is gone.
	var (
		id                string
		maxTasks, maxHits int64
		limits            []string // distinct values of pids.max
		events            bool     // pids.events was read
		res               harness.Result
	)
	readInt := func(path string) (int64, bool) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, false
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		return n, err == nil
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
sample:
	for {
		select {
		case res = <-done:
			break sample
		case <-tick.C:
		}
		if id == "" {
			if ids := r.containerIDs(t); len(ids) == 1 {
				id = ids[0]
			}
			continue
		}
		// pids.peak (recent kernels) covers the moments between samples.
		current, ok := readInt(cgroupFile(t, "pids", id, "pids.current"))
		if !ok {
			continue
		}
		maxTasks = max(maxTasks, current)
		if n, ok := readInt(cgroupFile(t, "pids", id, "pids.peak")); ok {
			maxTasks = max(maxTasks, n)
		}
		// The limit is written before a process joins: a group with a
		// task has it.
		if b, err := os.ReadFile(cgroupFile(t, "pids", id, "pids.max")); err == nil && current > 0 {
			if l := strings.TrimSpace(string(b)); !slices.Contains(limits, l) {
				limits = append(limits, l)
			}
		}
		if b, err := os.ReadFile(cgroupFile(t, "pids", id, "pids.events")); err == nil {
			events = true
			if v, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "max "); ok {
				if n, err := strconv.ParseInt(v, 10, 64); err == nil {
					maxHits = max(maxHits, n)
				}
			}
		}
	}

	if res.Code != 0 || !strings.Contains(res.Stderr, "can't fork") || !strings.HasSuffix(res.Stdout, "done\n") {
		t.Fatalf("fork bomb under --pids-limit 16: %s\nwant exit 0, can't fork on stderr, done on stdout", res)
	}
	forked := -1
	for _, line := range strings.Split(res.Stdout, "\n") {
		if v, ok := strings.CutPrefix(line, "forked "); ok {
			forked, _ = strconv.Atoi(v)
		}
	}
	if forked < 1 || forked > 15 {
		t.Errorf("the fork bomb printed %q, want 1 to 15 sleeps forked (16 tasks less the container's shell)", res.Stdout)
	}
	if id == "" {
		t.Fatal("the container's directory never appeared under the runtime root")
	}
	if !slices.Equal(limits, []string{"16"}) {
		t.Errorf("pids.max of the container's cgroup with tasks in it read %q, want 16", limits)
	}
	if maxTasks != 16 {
		t.Errorf("the cgroup held at most %d tasks, want exactly the limit, 16", maxTasks)
	}
	if events && maxHits == 0 {
		t.Errorf("pids.events counted no fork refused at the limit")
	}
	c := r.inspect(t, "forker")
	if c.Config.ID != id || c.State.Status != "exited" || c.State.ExitCode != 0 {
		t.Errorf("stow inspect: %+v, want container %s exited 0", c, id)
	}
	checkCgroupGone(t, id)
	r.must(t, "rm", "forker")
}

// TestStowRunCPUQuota: --cpus 0.5 becomes a CFS quota of 50ms per 100ms in
// the container's cgroup. While the container runs, its image cannot be
// removed; once it is removed, the image can.
func TestStowRunCPUQuota(t *testing.T) {
	r := newRuntimeEnv(t)
	id := r.must(t, "run", "-d", "--name", "capped", "--cpus", "0.5", "bb", "sleep", "60")
	t.Cleanup(func() { r.stow("rm", "-f", "capped") })
	read := func(ctrl, file string) string {
		t.Helper()
		b, err := os.ReadFile(cgroupFile(t, ctrl, id, file))
		if err != nil {
			t.Fatalf("read the container's cgroup: %v", err)
		}
		return strings.TrimSpace(string(b))
	}
	if cgroupV2(t) {
		if got := read("", "cpu.max"); got != "50000 100000" {
			t.Errorf("cpu.max = %q, want 50000 100000", got)
		}
	} else {
		quota, period := read("cpu", "cpu.cfs_quota_us"), read("cpu", "cpu.cfs_period_us")
		if quota != "50000" || period != "100000" {
			t.Errorf("cpu.cfs_quota_us %q, cpu.cfs_period_us %q; want 50000 100000", quota, period)
		}
	}

	for _, args := range [][]string{{"image", "rm", "bb"}, {"image", "rm", "-f", "bb"}} {
		res := r.stow(args...)
		if res.Code != 1 || !strings.Contains(res.Stderr, "image bb:latest: in use by running container capped") {
			t.Errorf("stow %s while capped runs: %s\nwant refused, naming the container", strings.Join(args, " "), res)
		}
	}

	// sleep as PID 1 ignores SIGTERM: -t 0 kills it at once.
	r.must(t, "stop", "-t", "0", "capped")
	if c := r.inspect(t, "capped"); c.State.Status != "exited" || c.State.ExitCode != 137 {
		t.Errorf("stow inspect after stop: %+v", c.State)
	}
	checkCgroupGone(t, id)
	if res := r.stow("image", "rm", "bb"); res.Code != 1 || !strings.Contains(res.Stderr, "in use by container capped") {
		t.Errorf("stow image rm of a stopped container's image: %s\nwant refused, naming the container", res)
	}
	r.must(t, "rm", "capped")
	if got := r.must(t, "image", "rm", "bb"); got != "bb" {
		t.Errorf("stow image rm bb after the container was removed: %q", got)
	}
}

// TestStowRunMissingImage: a missing image is a clear error that names it
// and says how to list and import images, and leaves no container, mount
// or cgroup behind.
func TestStowRunMissingImage(t *testing.T) {
	r := newRuntimeEnv(t)
	before := stowageCgroups(t)
	tests := []struct {
		image string // as the error names it
		args  []string
	}{
		{"nope:latest", []string{"run", "--rm", "nope", "true"}},
		{"nope:1.0", []string{"run", "-d", "--name", "ghost", "--memory", "16m", "nope:1.0", "sleep", "60"}},
	}
	for _, tt := range tests {
		res := r.stow(tt.args...)
		if res.Code != 1 || !strings.Contains(res.Stderr, "image "+tt.image+": not found") {
			t.Errorf("stow %s: %s\nwant exit 1 and image %s: not found", strings.Join(tt.args, " "), res, tt.image)
		}
		if !strings.Contains(res.Stderr, "stow images") || !strings.Contains(res.Stderr, "stow image import") {
			t.Errorf("stow %s: %q\nwant a hint at 'stow images' and 'stow image import'", strings.Join(tt.args, " "), res.Stderr)
		}
	}
	if ids := r.containerIDs(t); len(ids) != 0 {
		t.Errorf("container directories left: %v", ids)
	}
	if got := r.must(t, "ps", "-aq"); got != "" {
		t.Errorf("stow ps -aq lists %q", got)
	}
	if m := harness.MountsUnder(t, r.root); len(m) != 0 {
		t.Errorf("mounts left below the runtime root: %v", m)
	}
	// The runs failed before a container existed, so they made no cgroup
	// either. (Containers that other test binaries start meanwhile would
	// show here too.)
	for _, d := range stowageCgroups(t) {
		if !slices.Contains(before, d) {
			t.Errorf("a cgroup appeared during the failed runs: %s", d)
		}
	}
}
