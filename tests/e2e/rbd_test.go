package e2e_test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/rbd/rbdtest"
	"github.com/stowage/stowage/tests/e2e/harness"
	"github.com/stowage/stowage/volumed/api"
)

// rbdHost is one "host" of the RBD tests: a stow-rbd process with its own
// host ID and a volumed with its own state root whose provider "rbd" is
// that process over CSI, on the shared cluster.
type rbdHost struct {
	p  *harness.RBDProvider
	v  *harness.Volumed
	rt string // the bundled runtime's root, with the busybox image bb
}

// startRBDHost starts stow-rbd with host ID id for the cluster c and a
// volumed whose provider "rbd" (type csi) is it, and makes a runtime root
// with the image bb for `stow run`.
func startRBDHost(t *testing.T, bins harness.Binaries, stowRBD string, c *rbdtest.Cluster, id, bbTar string) *rbdHost {
	t.Helper()
	// stow-rbd starts first so that it stops last, after volumed and
	// dockerd have unmounted everything through it.
	p := harness.StartStowRBD(t, stowRBD, c, id)
	config := filepath.Join(t.TempDir(), "volumed.toml")
	text := fmt.Sprintf("probe_interval = \"1s\"\n[providers.rbd]\ntype = \"csi\"\nendpoint = %q\n", p.Endpoint())
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	v := harness.StartVolumed(t, bins, "--config", config)
	rt, err := os.MkdirTemp("", "stowage-rt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if m := harness.MountsUnder(t, rt); len(m) > 0 {
			t.Errorf("mounts left below the runtime root: %v", m)
		}
		harness.Sweep(t, rt)
		os.RemoveAll(rt)
	})
	h := &rbdHost{p: p, v: v, rt: rt}
	h.mustStow(t, "image", "import", bbTar, "bb")
	if rbd := waitProviderState(t, v, "rbd", api.ProviderUp); rbd.Driver != "stowage.rbd" {
		t.Errorf("stow provider ls: rbd has driver %q, want stowage.rbd", rbd.Driver)
	}
	return h
}

// stow runs stow against this host's volumed and runtime root.
func (h *rbdHost) stow(args ...string) harness.Result {
	return h.v.Stow(append([]string{"--root", h.rt, "--plugin-socket", h.v.PluginSocket}, args...)...)
}

func (h *rbdHost) mustStow(t *testing.T, args ...string) string {
	t.Helper()
	r := h.stow(args...)
	if r.Code != 0 {
		t.Fatalf("stow %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// hasCapSysResource reports whether this process (and so the stow-rbd it
// starts) has CAP_SYS_RESOURCE, which the kernel demands for growing a
// mounted ext4.
func hasCapSysResource(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if hex, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return caps&(1<<24) != 0 // CAP_SYS_RESOURCE
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

// dfKiB parses the size in KiB of the file system at the last line of
// `df -k DIR` as busybox prints it.
func dfKiB(t *testing.T, out string) int64 {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 2 {
		t.Fatalf("df printed %q", out)
	}
	n, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatalf("df printed %q: %v", out, err)
	}
	return n
}

// TestRBDEndToEnd runs the Ceph RBD provider, stow-rbd, as volumed's
// provider of type csi on a one-node cluster, with a real dockerd and the
// bundled runtime: create through Docker, data across containers of both,
// unmount and remount, a volumed restart, a snapshot and a volume created
// from it, an online resize, bad input, the cephx key never shown, and a
// second "host" (its own stow-rbd and volumed) that cannot mount what the
// first writes until an explicit forced unlock fences the first.
func TestRBDEndToEnd(t *testing.T) {
	testenv.Require(t, "root", "dockerd", "busybox", "loop", "mkfs.ext4", "fusermount")
	c := rbdtest.Start(t, rbdtest.Options{})
	key := c.AdminKey(t)
	bins := harness.BuildBinaries(t)
	stowRBD := harness.BuildStowRBD(t)
	bbTar := busyboxTarball(t)
	a := startRBDHost(t, bins, stowRBD, c, "host-a", bbTar)
	d := harness.StartDockerd(t)
	image := harness.ImportBusybox(t, d.Host)
	var shown []string // every error and listing the user saw, checked for the key
	images := func() string { return c.Run(t, "rbd", "ls", "--pool", c.Pool) }

	// Create through Docker: an RBD image, thin.
	if got := d.Must("volume", "create", "-d", a.v.Driver, "-o", "provider=rbd", "-o", "size=1GiB", "-o", "fs=ext4", "pg"); got != "pg" {
		t.Fatalf("docker volume create printed %q, want pg", got)
	}
	if got := images(); got != "pg" {
		t.Fatalf("rbd ls after create: %q, want pg", got)
	}
	if vol := inspectVolume(t, a.v, "pg"); vol.Provider != "rbd" || vol.CapacityBytes != 1<<30 || vol.State != api.StateReady {
		t.Errorf("stow volume inspect pg: provider %q, capacity %d, state %q; want rbd, 1GiB, ready", vol.Provider, vol.CapacityBytes, vol.State)
	}
	shown = append(shown, d.Must("volume", "inspect", "pg"), a.v.MustStow("volume", "inspect", "pg"))

	// Bad input changes nothing and says what is accepted.
	for _, tc := range []struct {
		opts []string
		says string
	}{
		{[]string{"size=0"}, "size"},
		{[]string{"size=lots"}, "size"},
		{[]string{"size=64MiB", "colour=blue"}, "colour"},
		{[]string{"size=64MiB", "fs=btrfs"}, "ext4"},
	} {
		args := []string{"volume", "create", "-d", a.v.Driver, "-o", "provider=rbd"}
		for _, o := range tc.opts {
			args = append(args, "-o", o)
		}
		r := d.Run(append(args, "bad")...)
		shown = append(shown, r.Stdout+r.Stderr)
		if r.Code == 0 || !strings.Contains(r.Stderr, tc.says) {
			t.Errorf("docker volume create -o %s: want an error naming %q, got %s", strings.Join(tc.opts, " -o "), tc.says, r)
		} else {
			t.Logf("docker volume create -o %s: %s", strings.Join(tc.opts, " -o "), strings.TrimSpace(r.Stderr))
		}
		r = a.stow(append([]string{"volume", "create", "-p", "rbd"}, append(prefixEach("-o", tc.opts), "bad")...)...)
		shown = append(shown, r.Stdout+r.Stderr)
		if r.Code == 0 || !strings.Contains(r.Stderr, tc.says) {
			t.Errorf("stow volume create -o %s: want an error naming %q, got %s", strings.Join(tc.opts, " -o "), tc.says, r)
		}
	}
	if got := images(); got != "pg" {
		t.Errorf("rbd ls after bad creates: %q, want only pg", got)
	}
	if got := listVolumes(t, a.v); len(got) != 1 || got[0] != "pg" {
		t.Errorf("stow volume ls after bad creates: %v, want only pg", got)
	}

	// Docker writes, the bundled runtime reads; each container mounts and
	// the last one out unmounts (and unmaps).
	d.Must(append(runArgs(image, "pg", "--rm"), "sh", "-c", "echo one > /data/f")...)
	staging := filepath.Join(a.v.Root, "staging", "pg")
	if m := harness.MountsUnder(t, staging); len(m) != 0 {
		t.Errorf("pg still staged after its only container ended: %v", m)
	}
	if got := a.mustStow(t, "run", "--rm", "-v", "pg:/d", "bb", "cat", "/d/f"); got != "one" {
		t.Errorf("stow run read %q, want one", got)
	}
	if n := inspectVolume(t, a.v, "pg").Mounts; n != 0 {
		t.Errorf("pg has %d mounts after stow run --rm, want 0", n)
	}

	// volumed restarts; the data stays.
	a.v.Restart()
	waitProviderState(t, a.v, "rbd", api.ProviderUp)
	if got := d.Must(append(runArgs(image, "pg", "--rm"), "cat", "/data/f")...); got != "one" {
		t.Errorf("read %q after volumed restarted, want one", got)
	}

	// Snapshot, write more, create a volume from the snapshot: it has the
	// old content, pg the new.
	if got := a.v.MustStow("volume", "snapshot", "pg", "s1"); got != "pg@s1" {
		t.Errorf("stow volume snapshot printed %q, want pg@s1", got)
	}
	d.Must(append(runArgs(image, "pg", "--rm"), "sh", "-c", "echo two >> /data/f")...)
	if got := a.v.MustStow("volume", "create", "--from", "pg@s1", "pgcopy"); got != "pgcopy" {
		t.Errorf("stow volume create --from printed %q, want pgcopy", got)
	}
	if got := d.Must(append(runArgs(image, "pgcopy", "--rm"), "cat", "/data/f")...); got != "one" {
		t.Errorf("pgcopy (from pg@s1) holds %q, want one", got)
	}
	if got := d.Must(append(runArgs(image, "pg", "--rm"), "cat", "/data/f")...); got != "one\ntwo" {
		t.Errorf("pg holds %q after the snapshot, want one, two", got)
	}
	if out := a.v.MustStow("volume", "snapshot", "ls", "pg"); !strings.Contains(out, "pg@s1") {
		t.Errorf("stow volume snapshot ls pg does not list pg@s1:\n%s", out)
	}

	// Resize while a container has pg mounted: the image grows at once;
	// the file system online where the provider may (xfs, or ext4 with
	// CAP_SYS_RESOURCE), else at the next mount.
	d.Must(append(runArgs(image, "pg", "-d", "--name", "holder"), "sleep", "600")...)
	before := dfKiB(t, d.Must("exec", "holder", "df", "-k", "/data"))
	if got := a.v.MustStow("volume", "resize", "pg", "2GiB"); got != "pg 2GiB" {
		t.Errorf("stow volume resize printed %q, want pg 2GiB", got)
	}
	if size := c.Run(t, "rbd", "info", "--pool", c.Pool, "--format", "json", "pg"); !strings.Contains(size, `"size":2147483648`) {
		t.Errorf("rbd info pg after resize: %s; want size 2147483648", size)
	}
	after := dfKiB(t, d.Must("exec", "holder", "df", "-k", "/data"))
	online := hasCapSysResource(t)
	switch {
	case online && after < before*3/2:
		t.Errorf("the mounted ext4 did not grow online with CAP_SYS_RESOURCE: %d KiB, then %d KiB", before, after)
	case !online && after != before:
		t.Errorf("the mounted ext4 changed size without CAP_SYS_RESOURCE: %d KiB, then %d KiB", before, after)
	}
	t.Logf("file system while mounted: %d KiB before the resize, %d KiB after (online grow: %v)", before, after, online)
	d.Must("exec", "holder", "sh", "-c", "echo three >> /data/f && sync")
	if got := inspectVolume(t, a.v, "pg").CapacityBytes; got != 2<<30 {
		t.Errorf("stow volume inspect pg after resize: capacity %d, want 2GiB", got)
	}

	// A second host on the same cluster: it finds pg by creating it with
	// the same options, cannot mount it while host-a writes, and takes it
	// over only with an explicit forced unlock, which fences host-a.
	b := startRBDHost(t, bins, stowRBD, c, "host-b", bbTar)
	if got := b.mustStow(t, "volume", "create", "-p", "rbd", "-o", "size=2GiB", "-o", "fs=ext4", "pg"); got != "pg" {
		t.Fatalf("stow volume create pg on host-b printed %q", got)
	}
	r := b.stow("run", "--rm", "-v", "pg:/d", "bb", "cat", "/d/f")
	shown = append(shown, r.Stdout+r.Stderr)
	if r.Code == 0 || !strings.Contains(r.Stderr, "host-a") {
		t.Errorf("stow run on host-b while host-a writes pg: want an error naming host-a, got %s", r)
	} else {
		t.Logf("host-b mounting pg while host-a writes: %s", strings.TrimSpace(r.Stderr))
	}
	r = b.stow("volume", "unlock", "pg")
	shown = append(shown, r.Stdout+r.Stderr)
	if r.Code == 0 || !strings.Contains(r.Stderr, "--force") {
		t.Errorf("stow volume unlock pg without --force: want a refusal naming --force, got %s", r)
	}
	if got := b.mustStow(t, "volume", "unlock", "--force", "pg"); !strings.Contains(got, "host-a") {
		t.Errorf("stow volume unlock --force pg printed %q, want host-a named", got)
	}
	if got := b.mustStow(t, "run", "--rm", "-v", "pg:/d", "bb", "sh", "-c", "cat /d/f; df -k /d"); !strings.HasPrefix(got, "one\ntwo\nthree\n") {
		t.Errorf("host-b read %q after the unlock, want one, two, three and df", got)
	} else if size := dfKiB(t, got); size < before*3/2 {
		t.Errorf("pg's file system on host-b after the resize: %d KiB, was %d KiB", size, before)
	}
	// host-a is fenced: a synced write fails.
	if r := d.Run("exec", "holder", "dd", "if=/dev/zero", "of=/data/zombie", "bs=64k", "count=1", "conv=fsync"); r.Code == 0 {
		t.Errorf("host-a wrote and synced after it was fenced: %s", r)
	}
	b.mustStow(t, "run", "--rm", "-v", "pg:/d", "bb", "sh", "-c", "echo four >> /d/f")
	if got := b.mustStow(t, "run", "--rm", "-v", "pg:/d", "bb", "sh", "-c", "cat /d/f; ls /d"); strings.Contains(got, "zombie") || !strings.HasPrefix(got, "one\ntwo\nthree\nfour\n") {
		t.Errorf("host-b reads %q; want one to four and no file of the fenced host", got)
	}
	d.Run("rm", "-f", "holder") // host-a's unmount fails as it may: it is fenced

	// The key shows nowhere.
	shown = append(shown, d.Must("volume", "ls"), a.v.MustStow("volume", "ls"), a.v.MustStow("provider", "ls"))
	for name, path := range map[string]string{"volumed host-a log": a.v.LogPath, "volumed host-b log": b.v.LogPath,
		"stow-rbd host-a log": a.p.LogPath, "stow-rbd host-b log": b.p.LogPath} {
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(text), key) {
			t.Errorf("the cephx key shows in the %s", name)
		}
	}
	for _, h := range []*rbdHost{a, b} {
		resp, err := http.Get("http://" + h.v.MetricsAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		text, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(text), `provider="rbd"`) {
			t.Errorf("volumed's metrics name no provider rbd")
		}
		if strings.Contains(string(text), key) {
			t.Errorf("the cephx key shows in volumed's metrics")
		}
	}
	for _, s := range shown {
		if strings.Contains(s, key) {
			t.Errorf("the cephx key shows in output a user saw:\n%s", s)
		}
	}
}

// prefixEach returns flag, v for each v of vs.
func prefixEach(flag string, vs []string) []string {
	var out []string
	for _, v := range vs {
		out = append(out, flag, v)
	}
	return out
}
