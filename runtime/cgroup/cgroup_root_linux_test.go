package cgroup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/volume"
)

// childEnv makes the test binary act as a child process: "alloc" waits
// for a line on stdin, then allocates and touches 200 MiB.
const childEnv = "STOWAGE_CGROUP_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "alloc" {
		bufio.NewReader(os.Stdin).ReadString('\n')
		b := make([]byte, 200<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1
		}
		fmt.Println("allocated", len(b))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// realGroup creates a group under a parent unique to the test on this
// host's cgroupfs and removes both when the test ends.
func realGroup(t *testing.T, r Resources) *Group {
	t.Helper()
	testenv.Require(t, "root", "busybox")
	tr, err := detect(DefaultRoot)
	if err != nil {
		t.Fatal(err)
	}
	parent := fmt.Sprintf("stowage-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "-"))
	g, err := tr.create(parent+"/g", r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Kill(); err != nil {
			t.Error(err)
		}
		if err := g.Delete(); err != nil {
			t.Error(err)
		}
		dirs, err := tr.controllerDirs(parent)
		if err != nil {
			t.Error(err)
		}
		for _, d := range dirs {
			if err := unix.Rmdir(d); err != nil && !errors.Is(err, unix.ENOENT) {
				t.Error(err)
			}
		}
	})
	return g
}

// startIn starts name args held on stdin, moves it into g, and only then
// lets it go on, so everything it does happens inside the group. The
// process is killed and reaped when the test ends.
func startIn(t *testing.T, g *Group, out io.Writer, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	if err := g.Add(cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(stdin, "go\n"); err != nil {
		t.Fatal(err)
	}
	stdin.Close()
	return cmd
}

func busybox(t *testing.T) string {
	t.Helper()
	bb, err := testenv.StaticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	return bb
}

func TestRootMemoryLimitOOMKills(t *testing.T) {
	g := realGroup(t, Resources{MemoryBytes: 32 << 20})
	if got := readFile(t, filepath.Join(g.dirs["memory"], "memory.limit_in_bytes")); strings.TrimSpace(got) != strconv.Itoa(32<<20) {
		t.Errorf("memory.limit_in_bytes = %q", got)
	}
	var out bytes.Buffer
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"=alloc")
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if err := g.Add(cmd.Process.Pid); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatal(err)
	}
	if oom, err := g.OOMKilled(); err != nil || oom {
		t.Errorf("OOMKilled() before = %v, %v; want false", oom, err)
	}
	io.WriteString(stdin, "go\n")
	stdin.Close()
	err = cmd.Wait()
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want killed by SIGKILL; output:\n%s", err, out.String())
	}
	if oom, err := g.OOMKilled(); err != nil || !oom {
		t.Errorf("OOMKilled() = %v, %v; want true", oom, err)
	}
}

func TestRootPidsLimit(t *testing.T) {
	g := realGroup(t, Resources{PidsMax: 16})
	if got := readFile(t, filepath.Join(g.dirs["pids"], "pids.max")); strings.TrimSpace(got) != "16" {
		t.Errorf("pids.max = %q", got)
	}
	// The shell exits at its first failed fork and leaves its sleeps
	// behind; as a subreaper the test inherits and reaps them.
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	cmd := startIn(t, g, &out, busybox(t), "sh", "-c", `read x
n=0
while [ $n -lt 40 ]; do sleep 1000 </dev/null >/dev/null 2>&1 & echo "pid $!"; n=$((n+1)); done`)
	err := cmd.Wait()
	var sleeps []int
	for line := range strings.Lines(out.String()) {
		if f, ok := strings.CutPrefix(strings.TrimSpace(line), "pid "); ok {
			pid, err := strconv.Atoi(f)
			if err != nil {
				t.Fatal(err)
			}
			sleeps = append(sleeps, pid)
		}
	}
	t.Cleanup(func() {
		if err := g.Kill(); err != nil {
			t.Error(err)
		}
		for _, pid := range sleeps {
			unix.Wait4(pid, nil, 0, nil)
		}
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0); err != nil {
			t.Error(err)
		}
	})
	if err == nil || !strings.Contains(out.String(), "can't fork") {
		t.Errorf("shell: %v; want a failed fork:\n%s", err, out.String())
	}
	if len(sleeps) == 0 || len(sleeps) >= 16 {
		t.Errorf("started %d sleeps, want 1..15 (the shell is the 16th)", len(sleeps))
	}
	cur, err := strconv.Atoi(strings.TrimSpace(readFile(t, filepath.Join(g.dirs["pids"], "pids.current"))))
	if err != nil || cur > 16 || cur != len(sleeps) {
		t.Errorf("pids.current = %d, %v; want %d sleeps, at most 16", cur, err, len(sleeps))
	}
	if got := readFile(t, filepath.Join(g.dirs["pids"], "pids.events")); !strings.HasPrefix(got, "max ") || got == "max 0\n" {
		t.Errorf("pids.events = %q, want failed forks counted", got)
	}
}

func TestRootCPUQuota(t *testing.T) {
	g := realGroup(t, Resources{CPUs: 0.5})
	for f, want := range map[string]string{"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"} {
		if got := strings.TrimSpace(readFile(t, filepath.Join(g.dirs["cpu"], f))); got != want {
			t.Errorf("%s = %q, want %q", f, got, want)
		}
	}
}

func TestRootFreezeThawKillDelete(t *testing.T) {
	g := realGroup(t, Resources{MemoryBytes: 64 << 20, CPUs: 1, PidsMax: 32})
	if g.Version() != 1 {
		t.Fatalf("Version() = %d; this host is cgroup v1", g.Version())
	}
	bb := busybox(t)
	cmd := startIn(t, g, io.Discard, bb, "sh", "-c", "read x; exec "+bb+" sleep 1000")
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()

	pids, err := g.Procs()
	if err != nil || len(pids) != 1 || pids[0] != cmd.Process.Pid {
		t.Fatalf("Procs() = %v, %v; want [%d]", pids, err, cmd.Process.Pid)
	}
	state := filepath.Join(g.dirs["freezer"], "freezer.state")
	if err := g.Freeze(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(readFile(t, state)); got != "FROZEN" {
		t.Errorf("freezer.state after Freeze = %q", got)
	}
	if frozen, err := g.Frozen(); err != nil || !frozen {
		t.Errorf("Frozen() after Freeze = %v, %v; want true", frozen, err)
	}
	if err := g.Thaw(t.Context()); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(readFile(t, state)); got != "THAWED" {
		t.Errorf("freezer.state after Thaw = %q", got)
	}
	if frozen, err := g.Frozen(); err != nil || frozen {
		t.Errorf("Frozen() after Thaw = %v, %v; want false", frozen, err)
	}
	if err := g.Delete(); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("Delete with a process: %v, want ErrInUse", err)
	}

	// Kill works on a frozen group too.
	if err := g.Freeze(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := g.Kill(); err != nil {
		t.Fatal(err)
	}
	if pids, err := g.Procs(); err != nil || len(pids) != 0 {
		t.Fatalf("Procs() after Kill = %v, %v", pids, err)
	}
	<-waited
	if ws := cmd.ProcessState.Sys().(syscall.WaitStatus); ws.Signal() != syscall.SIGKILL {
		t.Errorf("sleep ended with %v, want SIGKILL", cmd.ProcessState)
	}

	loaded, err := Load(g.name)
	if err != nil {
		t.Fatal(err)
	}
	if err := loaded.Delete(); err != nil {
		t.Fatal(err)
	}
	for c, d := range g.dirs {
		if exists(d) {
			t.Errorf("%s: %s still exists", c, d)
		}
	}
	if _, err := Load(g.name); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Load after Delete: %v, want ErrNotFound", err)
	}
	if err := g.Delete(); err != nil {
		t.Errorf("second Delete: %v", err)
	}
}

// TestRootNewRealTree checks New and Load against DefaultRoot themselves.
func TestRootNewRealTree(t *testing.T) {
	testenv.Require(t, "root")
	name := fmt.Sprintf("stowage-test-%d-new", os.Getpid())
	g, err := New(name, Resources{MemoryBytes: 16 << 20, PidsMax: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Delete(); err != nil {
			t.Error(err)
		}
	})
	l, err := Load(name)
	if err != nil {
		t.Fatal(err)
	}
	if l.Version() != g.Version() || len(l.dirs) != len(g.dirs) {
		t.Errorf("Load = %+v, New = %+v", l, g)
	}
	// Reusing the group drops the limits New is not given.
	if _, err := New(name, Resources{}); err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(g.dirs["pids"], "pids.max"))); got != "max" {
		t.Errorf("pids.max after reuse = %q, want max", got)
	}
}

// TestRootThreadFiles moves a thread into a group through ThreadFiles, as
// a container's init does on cgroup v1, and back.
func TestRootThreadFiles(t *testing.T) {
	g := realGroup(t, Resources{PidsMax: 64})
	files := g.ThreadFiles()
	if g.Version() == 2 {
		if files != nil {
			t.Errorf("ThreadFiles on cgroup v2 = %q, want none", files)
		}
		return
	}
	if len(files) != len(g.dirs) {
		t.Fatalf("ThreadFiles = %q, want one per controller of %v", files, g.dirs)
	}
	type result struct {
		before, inside string
		err            error
	}
	done := make(chan result)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var r result
		defer func() { done <- r }()
		b, err := os.ReadFile("/proc/thread-self/cgroup")
		if r.err = err; err != nil {
			return
		}
		r.before = string(b)
		for _, f := range files {
			if r.err = os.WriteFile(f, []byte("0"), 0); r.err != nil {
				return
			}
		}
		b, r.err = os.ReadFile("/proc/thread-self/cgroup")
		r.inside = string(b)
		// Back where it was, so that the group is empty again.
		for c := range g.dirs {
			for line := range strings.Lines(r.before) {
				f := strings.SplitN(strings.TrimSpace(line), ":", 3)
				if len(f) == 3 && slices.Contains(strings.Split(f[1], ","), c) {
					r.err = errors.Join(r.err, os.WriteFile(filepath.Join(DefaultRoot, c, f[2], "tasks"), []byte("0"), 0))
				}
			}
		}
	}()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	for c := range g.dirs {
		found := false
		for line := range strings.Lines(r.inside) {
			f := strings.SplitN(strings.TrimSpace(line), ":", 3)
			found = found || len(f) == 3 && slices.Contains(strings.Split(f[1], ","), c) && f[2] == "/"+g.name
		}
		if !found {
			t.Errorf("the thread is not in %s of group %s:\n%s", c, g.name, r.inside)
		}
	}
	if pids, err := g.Procs(); err != nil || len(pids) != 0 {
		t.Errorf("Procs after the thread left = %v, %v; want none", pids, err)
	}
}
