package container

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/volume"
)

func TestMain(m *testing.M) {
	Init()
	code := m.Run()
	if busybox.dir != "" {
		os.RemoveAll(busybox.dir)
	}
	if stowInit.path != "" {
		os.RemoveAll(filepath.Dir(stowInit.path))
	}
	os.Exit(code)
}

// busybox is a rootfs of the static busybox and a link per applet, built
// once and used as the only image layer.
var busybox struct {
	once sync.Once
	dir  string
	err  error
}

func busyboxRootfs(t *testing.T) string {
	t.Helper()
	testenv.Require(t, "root", "busybox")
	busybox.once.Do(func() {
		busybox.dir, busybox.err = makeBusybox()
	})
	if busybox.err != nil {
		t.Fatalf("make busybox rootfs: %v", busybox.err)
	}
	return filepath.Join(busybox.dir, "rootfs")
}

func makeBusybox() (string, error) {
	bin, err := testenv.StaticBusybox()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "stowage-busybox-")
	if err != nil {
		return "", err
	}
	root := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return dir, err
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		return dir, err
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), b, 0o755); err != nil {
		return dir, err
	}
	files := map[string]string{"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n", "etc/group": "root:x:0:\n"}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(root, name), []byte(content), 0o644); err != nil {
			return dir, err
		}
	}
	out, err := exec.Command(bin, "--list").Output()
	if err != nil {
		return dir, err
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(root, "bin", applet)); err != nil {
			return dir, err
		}
	}
	return dir, nil
}

// dirVolumes stands in for volumed: each volume is a directory below dir,
// and mounts are counted per (name, ID).
type dirVolumes struct {
	dir    string
	mu     sync.Mutex
	mounts map[string]int
}

func (v *dirVolumes) Mount(_ context.Context, name, id string) (string, error) {
	p := filepath.Join(v.dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("volume %q: %w", name, volume.ErrNotFound)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.mounts[name+"/"+id]++
	return p, nil
}

func (v *dirVolumes) Unmount(_ context.Context, name, id string) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.mounts[name+"/"+id] == 0 {
		return fmt.Errorf("volume %q: %w: no mount %s", name, volume.ErrNotFound, id)
	}
	v.mounts[name+"/"+id]--
	if v.mounts[name+"/"+id] == 0 {
		delete(v.mounts, name+"/"+id)
	}
	return nil
}

func (v *dirVolumes) count() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.mounts)
}

// testEngine returns an engine whose root and volumes live in a temporary
// directory; at the end it checks that no mount is left below it.
func testEngine(t *testing.T) (*Engine, *dirVolumes) {
	t.Helper()
	busyboxRootfs(t)
	dir, err := os.MkdirTemp("", "stowage-engine-")
	if err != nil {
		t.Fatal(err)
	}
	vols := &dirVolumes{dir: filepath.Join(dir, "volumes"), mounts: map[string]int{}}
	if err := os.Mkdir(vols.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	e, err := New(Options{Root: filepath.Join(dir, "root"), Volumes: vols})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m, _ := mountinfo.GetMounts(mountinfo.PrefixFilter(dir)); len(m) > 0 {
			for _, mi := range m {
				t.Errorf("left mounted on the host: %s", mi.Mountpoint)
				unix.Unmount(mi.Mountpoint, unix.MNT_DETACH)
			}
		}
		if n := vols.count(); n != 0 {
			t.Errorf("%d volume mounts left", n)
		}
		os.RemoveAll(dir)
	})
	return e, vols
}

// newContainer creates a container of the busybox rootfs running args.
func newContainer(t *testing.T, e *Engine, cfg Config, args ...string) Container {
	t.Helper()
	cfg.ID = NewID()
	cfg.Lowers = []string{busyboxRootfs(t)}
	cfg.Args = args
	if cfg.Hostname == "" {
		cfg.Hostname = cfg.ID[:12]
	}
	if cfg.Network == "" {
		cfg.Network = NetNone
	}
	cfg.Created = time.Now().UTC()
	c, err := e.Create(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// run runs a container in the foreground and returns its output.
func run(t *testing.T, e *Engine, cfg Config, args ...string) (stdout, stderr string, st State, err error) {
	t.Helper()
	c := newContainer(t, e, cfg, args...)
	var out, errOut bytes.Buffer
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	st, err = e.Run(ctx, c.ID(), Stdio{Stdout: &out, Stderr: &errOut}, nil)
	return out.String(), errOut.String(), st, err
}

// mustRun runs a shell script in a container and returns its output; the
// script must exit 0.
func mustRun(t *testing.T, e *Engine, cfg Config, script string) string {
	t.Helper()
	out, errOut, st, err := run(t, e, cfg, "sh", "-c", script)
	if err != nil || st.ExitCode != 0 {
		t.Fatalf("run %q: exit %d, %v\nstdout: %s\nstderr: %s", script, st.ExitCode, err, out, errOut)
	}
	return strings.TrimSpace(out)
}

func TestRunForeground(t *testing.T) {
	e, _ := testEngine(t)
	t.Run("output and exit code", func(t *testing.T) {
		out, errOut, st, err := run(t, e, Config{}, "sh", "-c", "echo hi; echo oops >&2; exit 3")
		if err != nil || out != "hi\n" || errOut != "oops\n" || st.ExitCode != 3 || st.Status != Exited {
			t.Errorf("got %q %q exit %d %s, %v", out, errOut, st.ExitCode, st.Status, err)
		}
	})
	t.Run("PID 1", func(t *testing.T) {
		if got := mustRun(t, e, Config{}, "echo $$"); got != "1" {
			t.Errorf("$$ = %q, want 1", got)
		}
	})
	t.Run("hostname and env", func(t *testing.T) {
		cfg := Config{Hostname: "box", Env: []string{"A=1"}, WorkingDir: "/tmp/w"}
		if got := mustRun(t, e, cfg, "hostname; echo $A $HOSTNAME; pwd"); got != "box\n1 box\n/tmp/w" {
			t.Errorf("got %q", got)
		}
	})
	t.Run("user", func(t *testing.T) {
		if got := mustRun(t, e, Config{User: "nobody"}, "id -u; id -g"); got != "65534\n65534" {
			t.Errorf("id = %q", got)
		}
	})
	t.Run("privileges", func(t *testing.T) {
		got := mustRun(t, e, Config{}, `grep -E "^(CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/self/status`)
		fields := map[string]string{}
		for _, line := range strings.Split(got, "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok {
				fields[k] = strings.TrimSpace(v)
			}
		}
		for _, k := range []string{"CapEff", "CapBnd"} {
			mask, err := strconv.ParseUint(fields[k], 16, 64)
			if err != nil || mask == 0 || mask&(1<<21) != 0 || mask&(1<<16) != 0 {
				t.Errorf("%s = %q: want Docker's default set, without CAP_SYS_ADMIN and CAP_SYS_MODULE", k, fields[k])
			}
		}
		if fields["NoNewPrivs"] != "1" || fields["Seccomp"] != "2" {
			t.Errorf("NoNewPrivs %q, Seccomp %q; want 1 and 2 (filter)", fields["NoNewPrivs"], fields["Seccomp"])
		}
		// mount is denied even though the process is root in the container.
		_, errOut, st, err := run(t, e, Config{}, "sh", "-c", "mkdir -p /m && mount -t tmpfs none /m")
		if err != nil || st.ExitCode == 0 || !strings.Contains(errOut, "permission denied") {
			t.Errorf("mount inside the container: %q exit %d, %v; want refused with EPERM", errOut, st.ExitCode, err)
		}
	})
	t.Run("network none", func(t *testing.T) {
		if got := mustRun(t, e, Config{}, "ls /sys/class/net; cat /sys/class/net/lo/flags"); got != "lo\n0x9" {
			t.Errorf("interfaces and lo flags: %q, want lo up", got)
		}
	})
	t.Run("proc masked and read-only", func(t *testing.T) {
		got := mustRun(t, e, Config{}, `for f in /proc/kcore /proc/keys /proc/timer_list; do [ -e $f ] && wc -c < $f || echo 0; done
			ls -A /proc/acpi | wc -l
			echo x 2>/dev/null > /proc/sys/kernel/hostname && echo writable || echo ro
			touch /sys/x 2>/dev/null && echo writable || echo ro`)
		if got != "0\n0\n0\n0\nro\nro" {
			t.Errorf("got %q, want kcore, keys, timer_list and acpi empty, /proc/sys and /sys read-only", got)
		}
	})
	t.Run("dev", func(t *testing.T) {
		got := mustRun(t, e, Config{}, `ls /dev | tr '\n' ' '; echo x > /dev/null; head -c 4 /dev/zero | wc -c; ls /dev/pts`)
		fields := strings.Fields(got)
		for _, want := range []string{"null", "zero", "full", "random", "urandom", "tty", "pts", "shm", "ptmx", "fd"} {
			if !strings.Contains(" "+got+" ", " "+want+" ") {
				t.Errorf("/dev lacks %s: %q", want, got)
			}
		}
		for _, f := range fields {
			if strings.HasPrefix(f, "sd") || strings.HasPrefix(f, "vd") || f == "mem" || f == "kmsg" {
				t.Errorf("/dev has %s", f)
			}
		}
	})
	t.Run("cgroup namespace", func(t *testing.T) {
		// The container's own cgroup is the root of its namespace.
		got := mustRun(t, e, Config{Resources: Resources{PidsMax: 32}}, "cat /proc/self/cgroup")
		if strings.Contains(got, cgroupName("")) || !strings.Contains(got, ":/") {
			t.Errorf("/proc/self/cgroup shows the host's paths:\n%s", got)
		}
	})
	t.Run("writes land in upper", func(t *testing.T) {
		c := newContainer(t, e, Config{}, "sh", "-c", "echo x > /newfile && rm /etc/group")
		if st, err := e.Run(t.Context(), c.ID(), Stdio{}, nil); err != nil || st.ExitCode != 0 {
			t.Fatalf("run: %+v %v", st, err)
		}
		if b, err := os.ReadFile(filepath.Join(c.Dir, "upper/newfile")); err != nil || string(b) != "x\n" {
			t.Errorf("upper/newfile: %q %v", b, err)
		}
		if _, err := os.Stat(filepath.Join(busyboxRootfs(t), "etc/group")); err != nil {
			t.Errorf("the image layer changed: %v", err)
		}
	})
	t.Run("command not found", func(t *testing.T) {
		tests := []struct {
			args []string
			code int
			msg  string
		}{
			{[]string{"/bin/nope"}, 127, "exec /bin/nope: no such file or directory"},
			{[]string{"nope"}, 127, `exec: "nope": executable file not found in $PATH`},
			{[]string{"/etc/passwd"}, 126, "exec /etc/passwd: permission denied"},
		}
		for _, tt := range tests {
			_, _, st, err := run(t, e, Config{}, tt.args...)
			var ce *CommandError
			if !errors.As(err, &ce) || ce.Code != tt.code || ce.Msg != tt.msg || st.ExitCode != tt.code {
				t.Errorf("run %q: %v (exit %d), want %d %q", tt.args, err, st.ExitCode, tt.code, tt.msg)
			}
		}
	})
	t.Run("auto remove", func(t *testing.T) {
		c := newContainer(t, e, Config{AutoRemove: true}, "true")
		if _, err := e.Run(t.Context(), c.ID(), Stdio{}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("container dir after --rm run: %v", err)
		}
	})
}

func TestRunSignals(t *testing.T) {
	e, _ := testEngine(t)
	checkSignals(t, e, Config{})
}

// checkSignals runs a shell that exits 7 on SIGTERM in a container of cfg,
// sends SIGTERM to its monitor once it runs and checks the exit.
func checkSignals(t *testing.T, e *Engine, cfg Config) {
	t.Helper()
	c := newContainer(t, e, cfg, "sh", "-c", `trap "echo got TERM; exit 7" TERM; echo ready; while :; do sleep 0.1; done`)
	pr, pw := io.Pipe()
	sigs := make(chan os.Signal, 1)
	type result struct {
		st  State
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := e.Run(t.Context(), c.ID(), Stdio{Stdout: pw}, sigs)
		pw.Close()
		done <- result{st, err}
	}()
	r := bufio.NewReader(pr)
	if line, err := r.ReadString('\n'); err != nil || line != "ready\n" {
		t.Fatalf("first line %q %v", line, err)
	}
	running, err := e.Get(t.Context(), c.ID())
	if err != nil || running.State.Status != Running || running.State.PID == 0 {
		t.Errorf("state while running: %+v %v", running.State, err)
	}
	sigs <- unix.SIGTERM
	rest, _ := io.ReadAll(r)
	res := <-done
	if res.err != nil || res.st.ExitCode != 7 || string(rest) != "got TERM\n" {
		t.Errorf("after SIGTERM: %q exit %d %v", rest, res.st.ExitCode, res.err)
	}
}

func TestVolumes(t *testing.T) {
	e, vols := testEngine(t)
	if err := os.Mkdir(filepath.Join(vols.dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	rw := Config{Volumes: []Volume{{Name: "data", Target: "/d"}}}
	mustRun(t, e, rw, "echo hi > /d/f")
	if b, err := os.ReadFile(filepath.Join(vols.dir, "data/f")); err != nil || string(b) != "hi\n" {
		t.Errorf("volume file: %q %v", b, err)
	}
	ro := Config{Volumes: []Volume{{Name: "data", Target: "/ro", ReadOnly: true}}}
	if got := mustRun(t, e, ro, "cat /ro/f; touch /ro/g 2>/dev/null && echo writable || echo ro"); got != "hi\nro" {
		t.Errorf("read-only volume: %q", got)
	}
	// An unknown volume: volumed's error, and the one mounted before it
	// is unmounted again.
	bad := Config{Volumes: []Volume{{Name: "data", Target: "/d"}, {Name: "nope", Target: "/n"}}}
	_, _, st, err := run(t, e, bad, "true")
	if !errors.Is(err, volume.ErrNotFound) || !strings.Contains(err.Error(), `"nope"`) || st.ExitCode != 125 || len(st.Mounts) != 0 {
		t.Errorf("unknown volume: %v, state %+v", err, st)
	}
}

func TestDetached(t *testing.T) {
	e, _ := testEngine(t)
	ctx := t.Context()
	c := newContainer(t, e, Config{Hostname: "det", Detach: true, Env: []string{"A=1"}}, "sh", "-c", "echo out; echo err >&2; exec sleep 1000")
	if err := e.Start(ctx, c.ID()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Remove(context.Background(), c.ID(), true) })
	got, err := e.Get(ctx, c.Config.Name)
	if err != nil || got.State.Status != Running || !alive(got.State.MonitorPID, got.State.MonitorStart) {
		t.Fatalf("after Start: %+v %v", got.State, err)
	}
	if err := e.Remove(ctx, c.ID(), false); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("Remove of a running container = %v, want ErrInUse", err)
	}

	var out bytes.Buffer
	code, err := e.Exec(ctx, c.ID(), []string{"sh", "-c", "hostname; echo $A $B; echo $$; cat /proc/1/cmdline | tr '\\0' ' '"},
		[]string{"B=2"}, Stdio{Stdout: &out}, nil)
	want := "det\n1 2\n"
	if err != nil || code != 0 || !strings.HasPrefix(out.String(), want) || !strings.Contains(out.String(), "sleep 1000") {
		t.Errorf("exec: exit %d %v, output %q", code, err, out.String())
	}
	if code, err := e.Exec(ctx, c.ID(), []string{"sh", "-c", "exit 4"}, nil, Stdio{}, nil); err != nil || code != 4 {
		t.Errorf("exec exit code %d %v, want 4", code, err)
	}
	if _, err := e.Exec(ctx, c.ID(), []string{"nope"}, nil, Stdio{}, nil); exitCodeOf(err) != 127 {
		t.Errorf("exec of a missing command: %v", err)
	}

	// The output reaches the log.
	deadline := time.Now().Add(10 * time.Second)
	for {
		out.Reset()
		if err := e.Logs(ctx, c.ID(), false, &out); err != nil {
			t.Fatal(err)
		}
		if out.String() == "out\nerr\n" || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out.String() != "out\nerr\n" {
		t.Errorf("log %q", out.String())
	}

	// sleep as PID 1 ignores SIGTERM: stop kills it after the timeout.
	if err := e.Stop(ctx, c.ID(), 200*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	got, err = e.Get(ctx, c.ID())
	if err != nil || got.State.Status != Exited || got.State.ExitCode != 137 {
		t.Errorf("after Stop: %+v %v", got.State, err)
	}
	out.Reset()
	if err := e.Logs(ctx, c.ID(), true, &out); err != nil || out.String() != "out\nerr\n" {
		t.Errorf("logs -f of an exited container: %q %v", out.String(), err)
	}
	if err := e.Remove(ctx, c.ID(), false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.Dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("container dir after rm: %v", err)
	}
}

func TestDetachedFailsToStart(t *testing.T) {
	e, _ := testEngine(t)
	c := newContainer(t, e, Config{Detach: true}, "/bin/nope")
	err := e.Start(t.Context(), c.ID())
	if exitCodeOf(err) != 127 || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("Start: %v", err)
	}
	got, err := e.Get(t.Context(), c.ID())
	if err != nil || got.State.Status != Exited || got.State.ExitCode != 127 {
		t.Errorf("state: %+v %v", got.State, err)
	}
}

// TestSweepAfterMonitorRecordedEnd: a container read as running just
// before its monitor recorded the end and exited keeps the exit code the
// monitor recorded; the sweep does not take the stale read for a monitor
// that died.
func TestSweepAfterMonitorRecordedEnd(t *testing.T) {
	e, _ := testEngine(t)
	c := newContainer(t, e, Config{Detach: true}, "true")
	stale := c
	stale.State.Status, stale.State.PID = Running, 0
	// A monitor PID that no longer runs: this test's own child, waited for.
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	stale.State.MonitorPID, stale.State.MonitorStart = cmd.Process.Pid, 1
	ended := c.State
	ended.Status, ended.ExitCode, ended.FinishedAt = Exited, 137, time.Now().UTC()
	if err := e.store.SaveState(c.ID(), ended); err != nil {
		t.Fatal(err)
	}
	if err := e.sweep(t.Context(), stale); err != nil {
		t.Fatal(err)
	}
	got, err := e.store.Get(c.ID())
	if err != nil || got.State.Status != Exited || got.State.ExitCode != 137 || got.State.Error != "" {
		t.Errorf("state after the sweep: %+v %v; want the monitor's exit code 137", got.State, err)
	}
}

func TestMonitorDied(t *testing.T) {
	e, vols := testEngine(t)
	if err := os.Mkdir(filepath.Join(vols.dir, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	c := newContainer(t, e, Config{Detach: true}, "sleep", "1000")
	if err := e.Start(ctx, c.ID()); err != nil {
		t.Fatal(err)
	}
	got, err := e.Get(ctx, c.ID())
	if err != nil {
		t.Fatal(err)
	}
	pid := got.State.PID
	if err := unix.Kill(got.State.MonitorPID, unix.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// The monitor's death kills the container; a sweep records it.
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid, got.State.PIDStart) || alive(got.State.MonitorPID, got.State.MonitorStart) {
		if time.Now().After(deadline) {
			t.Fatal("container still runs after its monitor died")
		}
		time.Sleep(20 * time.Millisecond)
	}
	all, err := e.List(ctx)
	if err != nil || len(all) != 1 || all[0].State.Status != Exited || all[0].State.ExitCode != -1 || all[0].State.Error != "monitor died" {
		t.Fatalf("after sweep: %+v %v", all, err)
	}
	if err := e.Remove(ctx, c.ID(), false); err != nil {
		t.Fatal(err)
	}
}
