package container

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/sys/mountinfo"
	"golang.org/x/sys/unix"
)

// hostDir returns a new directory on the host; a cleanup unmounts
// everything at and below it, deepest first, and removes it.
func hostDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "stowage-bind-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, m := range mountsUnder(t, dir) {
			if err := unix.Unmount(m.Mountpoint, unix.MNT_DETACH); err != nil {
				t.Errorf("unmount %s: %v", m.Mountpoint, err)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// mountsUnder returns the host's mounts at and below dir, deepest first.
func mountsUnder(t *testing.T, dir string) []*mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.PrefixFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	sort.SliceStable(infos, func(i, j int) bool { return len(infos[i].Mountpoint) > len(infos[j].Mountpoint) })
	return infos
}

// hostMount returns the host's mount at dir, or nil.
func hostMount(t *testing.T, dir string) *mountinfo.Info {
	t.Helper()
	infos, err := mountinfo.GetMounts(mountinfo.SingleEntryFilter(dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) == 0 {
		return nil
	}
	return infos[len(infos)-1]
}

// hostTmpfs mounts a tmpfs on the host at the new directory dir, with a
// file f that holds "h"; the cleanup of hostDir unmounts it.
func hostTmpfs(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, ""); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("h\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// startDetached starts a detached container of cfg that sleeps; a cleanup
// removes it.
func startDetached(t *testing.T, e *Engine, cfg Config) Container {
	t.Helper()
	cfg.Detach = true
	c := newContainer(t, e, cfg, "sleep", "1000")
	if err := e.Start(t.Context(), c.ID()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Remove(context.Background(), c.ID(), true) })
	return c
}

// execIn runs a shell script in the running container c and returns its
// output; the script must exit 0.
func execIn(t *testing.T, e *Engine, c Container, script string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	code, err := e.Exec(t.Context(), c.ID(), []string{"sh", "-c", script}, nil, Stdio{Stdout: &out, Stderr: &errOut}, nil)
	if err != nil || code != 0 {
		t.Fatalf("exec %q: exit %d, %v\nstdout: %s\nstderr: %s", script, code, err, out.String(), errOut.String())
	}
	return strings.TrimSpace(out.String())
}

// TestBindPropagation: an rshared bind carries mounts both ways between
// the host and a privileged container, also after pivot_root; rslave only
// from the host; the default, rprivate, not at all. A mount the container
// made below an rshared bind stays on the host after the container ends:
// the runtime leaves it to whoever made it (here the test's cleanup).
func TestBindPropagation(t *testing.T) {
	e, _ := testEngine(t)
	t.Run("rshared", func(t *testing.T) {
		src := hostDir(t)
		c := startDetached(t, e, Config{Privileged: true,
			Binds: []Bind{{Source: src, Target: "/shared", Propagation: PropagationRShared}}})
		if m := hostMount(t, src); m == nil || !strings.Contains(m.Optional, "shared:") {
			t.Fatalf("the source is not a shared mount on the host: %+v", m)
		}
		execIn(t, e, c, "mkdir /shared/t && mount -t tmpfs tmpfs /shared/t && echo in > /shared/t/in")
		m := hostMount(t, filepath.Join(src, "t"))
		if m == nil || m.FSType != "tmpfs" {
			t.Fatalf("the tmpfs the container mounted at /shared/t is not on the host at %s/t: %+v", src, m)
		}
		if b, err := os.ReadFile(filepath.Join(src, "t/in")); err != nil || string(b) != "in\n" {
			t.Errorf("host reads %q, %v from the container's tmpfs", b, err)
		}
		if err := os.WriteFile(filepath.Join(src, "t/host"), []byte("host\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if got := execIn(t, e, c, "cat /shared/t/host"); got != "host" {
			t.Errorf("the container reads %q from the host's file", got)
		}
		// A mount the host makes below the source appears inside too.
		hostTmpfs(t, filepath.Join(src, "h"))
		if got := execIn(t, e, c, "cat /shared/h/f"); got != "h" {
			t.Errorf("the container reads %q from the host's mount", got)
		}
		if err := e.Stop(t.Context(), c.ID(), 0); err != nil {
			t.Fatal(err)
		}
		// The container's tmpfs outlives the container.
		if m := hostMount(t, filepath.Join(src, "t")); m == nil || m.FSType != "tmpfs" {
			t.Errorf("after the container: %s/t is %+v, want the container's tmpfs still mounted", src, m)
		}
		// A second container finds the source shared and adds no bind.
		c2 := startDetached(t, e, Config{Privileged: true,
			Binds: []Bind{{Source: src, Target: "/s", Propagation: PropagationRShared}}})
		if got := execIn(t, e, c2, "cat /s/t/in"); got != "in" {
			t.Errorf("a second container reads %q below the bind", got)
		}
		execIn(t, e, c2, "umount /s/t")
		if m := hostMount(t, filepath.Join(src, "t")); m != nil {
			t.Errorf("an unmount in the container did not propagate: %s/t is %+v", src, m)
		}
		n := 0
		for _, m := range mountsUnder(t, src) {
			if m.Mountpoint == src {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d mounts at the source, want the one bind", n)
		}
	})
	t.Run("rslave", func(t *testing.T) {
		src := hostDir(t)
		c := startDetached(t, e, Config{Privileged: true,
			Binds: []Bind{{Source: src, Target: "/s", Propagation: PropagationRSlave}}})
		hostTmpfs(t, filepath.Join(src, "h"))
		if got := execIn(t, e, c, "cat /s/h/f"); got != "h" {
			t.Errorf("the container reads %q from the host's mount", got)
		}
		execIn(t, e, c, "mkdir /s/c && mount -t tmpfs tmpfs /s/c")
		if m := hostMount(t, filepath.Join(src, "c")); m != nil {
			t.Errorf("a mount in an rslave bind reached the host: %+v", m)
		}
	})
	t.Run("rprivate", func(t *testing.T) {
		src := hostDir(t)
		if err := os.WriteFile(filepath.Join(src, "f"), []byte("f\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		c := startDetached(t, e, Config{Privileged: true,
			Binds: []Bind{{Source: src, Target: "/p", ReadOnly: true}}})
		if m := hostMount(t, src); m != nil {
			t.Errorf("a private bind changed the host's mounts: %+v", m)
		}
		if got := execIn(t, e, c, "cat /p/f; touch /p/g 2>/dev/null && echo writable || echo ro"); got != "f\nro" {
			t.Errorf("read-only bind: %q", got)
		}
		hostTmpfs(t, filepath.Join(src, "h"))
		if got := execIn(t, e, c, "cat /p/h/f 2>/dev/null || echo none"); got != "none" {
			t.Errorf("a host mount reached a private bind: %q", got)
		}
	})
}

// TestPrivileged: a privileged container keeps every capability, has no
// seccomp filter, may mount, and sees the host's devices with its own
// devpts; no_new_privs, the masks and the read-only /sys stay.
func TestPrivileged(t *testing.T) {
	e, _ := testEngine(t)
	got := mustRun(t, e, Config{Privileged: true}, `grep -E "^(CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/self/status
		mkdir /m && mount -t tmpfs tmpfs /m && echo mounted
		[ -c /dev/loop-control ] && echo loop-control
		grep -c " /dev/pts .* - devpts " /proc/self/mountinfo
		[ -e /proc/kcore ] && wc -c < /proc/kcore || echo 0
		touch /sys/x 2>/dev/null && echo writable || echo ro`)
	fields := map[string]string{}
	var rest []string
	for _, line := range strings.Split(got, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			fields[k] = strings.TrimSpace(v)
			continue
		}
		rest = append(rest, strings.TrimSpace(line))
	}
	host, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	var hostBnd string
	for _, line := range strings.Split(string(host), "\n") {
		if v, ok := strings.CutPrefix(line, "CapBnd:"); ok {
			hostBnd = strings.TrimSpace(v)
		}
	}
	for _, k := range []string{"CapEff", "CapBnd"} {
		if fields[k] != hostBnd {
			t.Errorf("%s = %q, want every capability (%s)", k, fields[k], hostBnd)
		}
	}
	if mask, err := strconv.ParseUint(fields["CapEff"], 16, 64); err != nil || mask&(1<<21) == 0 {
		t.Errorf("CapEff %q lacks CAP_SYS_ADMIN", fields["CapEff"])
	}
	if fields["NoNewPrivs"] != "1" || fields["Seccomp"] != "0" {
		t.Errorf("NoNewPrivs %q, Seccomp %q; want 1 and 0 (no filter)", fields["NoNewPrivs"], fields["Seccomp"])
	}
	if want := []string{"mounted", "loop-control", "1", "0", "ro"}; !slices.Equal(rest, want) {
		t.Errorf("got %q, want %q: mount allowed, /dev/loop-control, its own devpts, /proc/kcore masked, /sys read-only", rest, want)
	}
	// A process started with exec keeps the privileges too.
	c := startDetached(t, e, Config{Privileged: true})
	if got := execIn(t, e, c, "grep ^Seccomp: /proc/self/status; mkdir -p /m && mount -t tmpfs tmpfs /m && echo mounted"); got != "Seccomp:\t0\nmounted" {
		t.Errorf("exec in a privileged container: %q", got)
	}
}
