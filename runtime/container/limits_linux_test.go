package container

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// limitFile returns the path of a control file of container id's cgroup
// on the host: below controller ctrl on cgroup v1, in the one directory
// on v2.
func limitFile(t *testing.T, ctrl, id, file string) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/cgroup", &st); err != nil {
		t.Fatal(err)
	}
	if st.Type == unix.CGROUP2_SUPER_MAGIC {
		return filepath.Join("/sys/fs/cgroup", cgroupName(id), file)
	}
	return filepath.Join("/sys/fs/cgroup", ctrl, cgroupName(id), file)
}

// checkNoGroup fails the test if container id's cgroup is left.
func checkNoGroup(t *testing.T, id string) {
	t.Helper()
	for _, ctrl := range []string{"memory", "cpu", "pids", "freezer"} {
		dir := filepath.Dir(limitFile(t, ctrl, id, "x"))
		if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("cgroup left after the container ended: %s (%v)", dir, err)
		}
	}
}

// TestLimits: the engine applies a container's Resources through its
// cgroup and records an OOM kill.
func TestLimits(t *testing.T) {
	e, _ := testEngine(t)
	t.Run("memory", func(t *testing.T) {
		c := newContainer(t, e, Config{Resources: Resources{MemoryBytes: 16 << 20}},
			"sh", "-c", `x=$(head -c 100000000 /dev/zero | tr "\0" a); echo survived ${#x}`)
		st, err := e.Run(t.Context(), c.ID(), Stdio{}, nil)
		if err != nil || st.ExitCode != 137 || !st.OOMKilled || st.Status != Exited {
			t.Errorf("100 MB under a 16 MiB limit: %+v %v; want exit 137, OOMKilled", st, err)
		}
		got, err := e.Get(t.Context(), c.ID())
		if err != nil || !got.State.OOMKilled || !strings.HasSuffix(got.StatusText(time.Now()), "OOM killed") {
			t.Errorf("recorded state: %+v %v", got.State, err)
		}
		checkNoGroup(t, c.ID())
	})
	t.Run("pids", func(t *testing.T) {
		// A child shell forks sleeps until a fork fails and dies of it;
		// PID 1 counts them and kills them with builtins only.
		script := `sh -c 'for i in $(seq 100); do sleep 30 & echo $!; done' > /tmp/pids
			n=0; while read p; do n=$((n+1)); done < /tmp/pids
			echo $n
			while read p; do kill $p; done < /tmp/pids`
		out, errOut, st, err := run(t, e, Config{Resources: Resources{PidsMax: 16}}, "sh", "-c", script)
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		if err != nil || st.ExitCode != 0 || !strings.Contains(errOut, "can't fork") || n < 1 || n > 15 {
			t.Errorf("fork bomb under a limit of 16: %q %q %+v %v; want 1 to 15 forked, can't fork", out, errOut, st, err)
		}
	})
	t.Run("cpu", func(t *testing.T) {
		c := newContainer(t, e, Config{Detach: true, Resources: Resources{CPUs: 0.5}}, "sleep", "60")
		if err := e.Start(t.Context(), c.ID()); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Remove(context.Background(), c.ID(), true) })
		// The command is in the container's cgroup in every controller.
		running, err := e.Get(t.Context(), c.ID())
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", running.State.PID))
		if err != nil {
			t.Fatal(err)
		}
		in := 0
		for line := range strings.Lines(string(b)) {
			f := strings.SplitN(strings.TrimSpace(line), ":", 3)
			if len(f) == 3 && f[2] == "/"+cgroupName(c.ID()) {
				in += len(strings.Split(f[1], ","))
			}
		}
		if in == 0 || !strings.HasPrefix(limitFile(t, "cpu", c.ID(), ""), "/sys/fs/cgroup/stowage/") && in < 4 {
			t.Errorf("the command is in %d controllers of its cgroup:\n%s", in, b)
		}
		want := map[string]string{"cpu.cfs_quota_us": "50000", "cpu.cfs_period_us": "100000"}
		if strings.HasPrefix(limitFile(t, "cpu", c.ID(), ""), "/sys/fs/cgroup/stowage/") {
			want = map[string]string{"cpu.max": "50000 100000"}
		}
		for f, v := range want {
			b, err := os.ReadFile(limitFile(t, "cpu", c.ID(), f))
			if err != nil || strings.TrimSpace(string(b)) != v {
				t.Errorf("%s = %q %v, want %s", f, b, err, v)
			}
		}
		if err := e.Remove(t.Context(), c.ID(), true); err != nil {
			t.Fatal(err)
		}
		checkNoGroup(t, c.ID())
	})
}
