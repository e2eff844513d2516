package e2e_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// runtimeEnv is a volumed and a runtime root with a busybox image "bb".
type runtimeEnv struct {
	v    *harness.Volumed
	root string
}

// newRuntimeEnv starts volumed, makes a runtime root and imports a busybox
// rootfs as the image bb with `stow image import`. A cleanup fails the test
// if a mount is left below the root.
func newRuntimeEnv(t *testing.T) *runtimeEnv {
	t.Helper()
	testenv.Require(t, "root", "busybox")
	v := harness.StartVolumed(t, harness.BuildBinaries(t))
	root, err := os.MkdirTemp("", "stowage-runtime-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m := harness.MountsUnder(t, root); len(m) > 0 {
			t.Errorf("mounts left below the runtime root: %v", m)
		}
		os.RemoveAll(root)
	})
	r := &runtimeEnv{v: v, root: root}
	r.must(t, "image", "import", busyboxTarball(t), "bb")
	return r
}

// stow runs stow with the runtime root and volumed's sockets.
func (r *runtimeEnv) stow(args ...string) harness.Result {
	return r.v.Stow(append([]string{"--root", r.root, "--plugin-socket", r.v.PluginSocket}, args...)...)
}

func (r *runtimeEnv) must(t *testing.T, args ...string) string {
	t.Helper()
	res := r.stow(args...)
	if res.Code != 0 {
		t.Fatalf("stow %s: %s", strings.Join(args, " "), res)
	}
	return strings.TrimSpace(res.Stdout)
}

// busyboxTarball writes a rootfs tarball of the static busybox with a link
// per applet and returns its path.
func busyboxTarball(t *testing.T) string {
	t.Helper()
	bin, err := testenv.StaticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rootfs := filepath.Join(dir, "rootfs")
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "sys", "tmp"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	list, err := exec.Command(bin, "--list").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" && !strings.Contains(applet, "/") {
			if err := os.Symlink("busybox", filepath.Join(rootfs, "bin", applet)); err != nil {
				t.Fatal(err)
			}
		}
	}
	tarball := filepath.Join(dir, "bb.tar")
	if out, err := exec.Command("tar", "-C", rootfs, "-cf", tarball, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v: %s", err, out)
	}
	return tarball
}

// volumeMounts returns the mount count volumed has for a volume.
func volumeMounts(t *testing.T, r *runtimeEnv, name string) int {
	t.Helper()
	var vols []struct {
		Mounts int `json:"mounts"`
	}
	out := r.v.MustStow("volume", "inspect", name)
	if err := json.Unmarshal([]byte(out), &vols); err != nil || len(vols) != 1 {
		t.Fatalf("stow volume inspect %s: %v\n%s", name, err, out)
	}
	return vols[0].Mounts
}

// TestStowRunVolume: a file one container writes into a volume is there for
// the next, and nothing stays mounted.
func TestStowRunVolume(t *testing.T) {
	r := newRuntimeEnv(t)
	r.v.MustStow("volume", "create", "data")
	r.must(t, "run", "--rm", "-v", "data:/d", "bb", "sh", "-c", "echo hi > /d/f")
	if got := r.must(t, "run", "--rm", "-v", "data:/d:ro", "bb", "cat", "/d/f"); got != "hi" {
		t.Errorf("second container read %q, want hi", got)
	}
	if res := r.stow("run", "--rm", "-v", "data:/d:ro", "bb", "touch", "/d/g"); res.Code == 0 {
		t.Errorf("write to a read-only volume succeeded")
	}
	if n := volumeMounts(t, r, "data"); n != 0 {
		t.Errorf("volume data has %d mounts after the containers ended", n)
	}
	if m := harness.MountsUnder(t, r.v.Root); len(m) != 0 {
		t.Errorf("mounts left below volumed's root: %v", m)
	}
	if got := r.must(t, "ps", "-aq"); got != "" {
		t.Errorf("containers left after --rm: %q", got)
	}
}

// TestStowRunVolumeErrors: a bad -v spec fails before anything is mounted;
// an unknown volume fails with volumed's error, and the volumes mounted
// before it are unmounted again.
func TestStowRunVolumeErrors(t *testing.T) {
	r := newRuntimeEnv(t)
	r.v.MustStow("volume", "create", "data")
	for spec, want := range map[string]string{
		"data":             "want NAME:/PATH",
		":/d":              "name is empty",
		"data:rel":         "must be absolute",
		"data:/d:rw,bogus": "unknown mode",
		"/host:/d":         "only named volumes",
	} {
		res := r.stow("run", "--rm", "-v", "data:/ok", "-v", spec, "bb", "true")
		if res.Code != 1 || !strings.Contains(res.Stderr, want) {
			t.Errorf("-v %s: %s\nwant exit 1 and %q", spec, res, want)
		}
	}
	res := r.stow("run", "--rm", "-v", "data:/d", "-v", "nope:/n", "bb", "true")
	if res.Code == 0 || !strings.Contains(res.Stderr, `"nope"`) || !strings.Contains(res.Stderr, "not found") {
		t.Errorf("unknown volume: %s", res)
	}
	if n := volumeMounts(t, r, "data"); n != 0 {
		t.Errorf("volume data has %d mounts after failed runs", n)
	}
	if m := harness.MountsUnder(t, r.v.Root); len(m) != 0 {
		t.Errorf("mounts left below volumed's root: %v", m)
	}
	if got := r.must(t, "ps", "-aq"); got != "" {
		t.Errorf("containers left: %q", got)
	}
}

// TestStowContainerLifecycle: exit codes, a detached container with logs,
// exec, stop and rm, diff and commit.
func TestStowContainerLifecycle(t *testing.T) {
	r := newRuntimeEnv(t)
	if res := r.stow("run", "--rm", "bb", "sh", "-c", "echo out; exit 3"); res.Code != 3 || res.Stdout != "out\n" {
		t.Errorf("exit code: %s", res)
	}
	if res := r.stow("run", "--rm", "bb", "/bin/nope"); res.Code != 127 || !strings.Contains(res.Stderr, "no such file") {
		t.Errorf("missing command: %s", res)
	}

	id := r.must(t, "run", "-d", "--name", "web", "-e", "A=1", "bb", "sh", "-c", "echo started; exec sleep 1000")
	t.Cleanup(func() { r.stow("rm", "-f", "web") })
	if len(id) != 64 {
		t.Errorf("run -d printed %q, want an ID", id)
	}
	if got := r.must(t, "ps", "-q"); got != id[:12] {
		t.Errorf("ps -q = %q, want %s", got, id[:12])
	}
	if got := r.must(t, "exec", "web", "sh", "-c", "echo $A; echo $$"); !strings.HasPrefix(got, "1\n") || strings.HasSuffix(got, "\n1") {
		t.Errorf("exec printed %q", got)
	}
	if res := r.stow("exec", id[:5], "sh", "-c", "exit 4"); res.Code != 4 {
		t.Errorf("exec exit code: %s", res)
	}
	if res := r.stow("rm", "web"); res.Code == 0 || !strings.Contains(res.Stderr, "running") {
		t.Errorf("rm of a running container: %s", res)
	}
	r.must(t, "stop", "-t", "1", "web")
	if got := r.must(t, "logs", "web"); got != "started" {
		t.Errorf("logs = %q", got)
	}
	var inspected []struct {
		State struct {
			Status   string `json:"status"`
			ExitCode int    `json:"exit_code"`
		} `json:"state"`
	}
	if err := json.Unmarshal([]byte(r.must(t, "inspect", "web")), &inspected); err != nil || len(inspected) != 1 ||
		inspected[0].State.Status != "exited" || inspected[0].State.ExitCode != 137 {
		t.Errorf("inspect after stop: %+v %v", inspected, err)
	}
	r.must(t, "rm", "web")

	r.must(t, "run", "--name", "w", "bb", "sh", "-c", "echo x > /root/f && rm /etc/passwd")
	if got := r.must(t, "diff", "w"); got != "C /etc\nD /etc/passwd\nC /root\nA /root/f" {
		t.Errorf("diff = %q", got)
	}
	r.must(t, "commit", "w", "bb2")
	// /etc holds only what the runtime binds there (hostname, hosts,
	// resolv.conf), as in Docker.
	if got := r.must(t, "run", "--rm", "bb2", "sh", "-c", "cat /root/f; ls /etc"); got != "x\nhostname\nhosts\nresolv.conf" {
		t.Errorf("container of the committed image: %q", got)
	}
	r.must(t, "rm", "w")
}
