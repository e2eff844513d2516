package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/runtime/container"
	"github.com/stowage/stowage/tests/e2e/harness"
	"github.com/stowage/stowage/volumed/api"
)

// sidecarName is the provider TestVolumedSidecar configures, and
// sidecarContainer the container volumed runs it in.
const (
	sidecarName      = "side"
	sidecarContainer = "stowage-sidecar-" + sidecarName
)

// TestVolumedSidecar runs the local provider as a sidecar container that
// volumed starts with the bundled runtime: a volume written by a `stow run`
// container is read by a Docker container and the other way round; the
// sidecar killed with SIGKILL while a Docker container holds a volume
// leaves that container reading and writing, volumed restarts it, a new
// mount works, and the last unmount unpublishes and unstages through the
// new sidecar.
func TestVolumedSidecar(t *testing.T) {
	// provider-image.sh needs mkfs.xfs, ldd and tar besides.
	testenv.Require(t, "root", "loop", "mkfs.ext4", "mkfs.xfs", "ldd", "tar", "dockerd", "busybox")
	bins := harness.BuildBinaries(t)

	// rt runs stow on the runtime root alone (images, inspect, rm), as for
	// the containers of newRuntimeSidecar; r, below, adds volumed's sockets
	// for stow run. Cleanups run in reverse: dockerd removes its containers,
	// volumed stops (and leaves the sidecar running, by design), then the
	// sidecar is removed and what is left below base is released.
	dirs, rt := newVolumedSidecar(t, bins.Stow, "stowage-vsc-", sidecarContainer, "")
	base, root, rtRoot, sockDir, dataDir := dirs.base, dirs.root, dirs.rtRoot, dirs.sockDir, dirs.dataDir
	rt.buildImage(base, "provider-image.sh", filepath.Join(filepath.Dir(bins.Stow), "stow-provider"), "stowage-provider")
	rt.must("image", "import", busyboxTarball(t), "bb")

	config := filepath.Join(base, "volumed.toml")
	text := fmt.Sprintf(`probe_interval = "1s"

[providers.%s]
type = "sidecar"
image = "stowage-provider"
command = ["stow-provider", "local", "--endpoint", "unix:///csi/csi.sock", "--root", "/data", "--node-id", "e2e", "--log-level", "debug"]
stow = %q
runtime_root = %q
socket_dir = %q
data_dir = %q
`, sidecarName, bins.Stow, rtRoot, sockDir, dataDir)
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	// mount_dir defaults to volumed's root.
	v := harness.StartVolumed(t, bins, "--config", config, "--root", root)
	if v.Root != root {
		t.Fatalf("volumed's root is %s, want %s", v.Root, root)
	}
	r := &runtimeEnv{v: v, root: rtRoot}

	side := waitProviderState(t, v, sidecarName, api.ProviderUp)
	if side.Kind != "sidecar" || side.Driver != "stowage.local" || side.Restarts != 0 {
		t.Errorf("stow provider ls: %s has kind %q, driver %q, %d restarts; want sidecar, stowage.local, 0",
			sidecarName, side.Kind, side.Driver, side.Restarts)
	}
	first := rt.state(sidecarContainer)

	d := harness.StartDockerd(t)
	image := harness.ImportBusybox(t, d.Host)
	create := func(name string) {
		t.Helper()
		if got := d.Must("volume", "create", "-d", v.Driver, "-o", "provider="+sidecarName, "-o", "size=64MiB", name); got != name {
			t.Fatalf("docker volume create printed %q, want %s", got, name)
		}
		if vol := inspectVolume(t, v, name); vol.Provider != sidecarName || vol.State != api.StateReady {
			t.Errorf("stow volume inspect %s: provider %q, state %q; want %s, ready", name, vol.Provider, vol.State, sidecarName)
		}
		if _, err := os.Stat(filepath.Join(dataDir, name)); err != nil {
			t.Errorf("the sidecar has no volume %s in its data directory: %v", name, err)
		}
	}

	// stow run writes, Docker reads.
	create("s2d")
	r.must(t, "run", "--rm", "-v", "s2d:/d", "bb", "sh", "-c", "echo from-stow > /d/f")
	if got := d.Must(append(runArgs(image, "s2d", "--rm"), "cat", "/data/f")...); got != "from-stow" {
		t.Errorf("a Docker container read %q from what a stow run container wrote, want from-stow", got)
	}
	// Docker writes, stow run reads.
	create("d2s")
	d.Must(append(runArgs(image, "d2s", "--rm"), "sh", "-c", "echo from-docker > /data/f")...)
	if got := r.must(t, "run", "--rm", "-v", "d2s:/d:ro", "bb", "cat", "/d/f"); got != "from-docker" {
		t.Errorf("a stow run container read %q from what a Docker container wrote, want from-docker", got)
	}
	for _, name := range []string{"s2d", "d2s"} {
		if n := inspectVolume(t, v, name).Mounts; n != 0 {
			t.Errorf("volume %s has %d mounts after its containers ended", name, n)
		}
	}

	// A Docker container holds a volume while the sidecar is killed.
	create("held")
	d.Must(append(runArgs(image, "held", "-d", "--name", "holder"), "sleep", "300")...)
	d.Must("exec", "holder", "sh", "-c", "echo before > /data/f")
	staging, target := filepath.Join(root, "staging", "held"), filepath.Join(root, "mounts", "held")
	staged := hostMountAt(t, staging)
	if staged == nil || !strings.HasPrefix(staged.Source, "/dev/loop") {
		t.Fatalf("held is not staged from a loop device while a container uses it: %+v", staged)
	}
	loop := staged.Source
	backing := filepath.Join("/sys/block", filepath.Base(loop), "loop", "backing_file")
	image0 := "/" + filepath.Join("held", "disk.img")
	if b, err := os.ReadFile(backing); err != nil || !strings.HasSuffix(strings.TrimSpace(string(b)), image0) {
		t.Fatalf("%s: %q, %v; want held's image (a path ending in %s)", backing, b, err, image0)
	}

	st := rt.state(sidecarContainer)
	if st.Status != container.Running || st.PID <= 0 {
		t.Fatalf("stow inspect %s: %s, pid %d; want running", sidecarContainer, st.Status, st.PID)
	}
	if st.PID != first.PID || st.PIDStart != first.PIDStart {
		t.Errorf("the sidecar's init changed from %d to %d before it was killed", first.PID, st.PID)
	}
	if err := syscall.Kill(st.PID, syscall.SIGKILL); err != nil {
		t.Fatalf("kill -9 the sidecar's init %d: %v", st.PID, err)
	}
	d.Must("exec", "holder", "sh", "-c", "echo during >> /data/f")
	if got := d.Must("exec", "holder", "cat", "/data/f"); got != "before\nduring" {
		t.Errorf("holder read %q right after the sidecar was killed, want before, during", got)
	}
	var up api.Provider
	err := harness.Poll(90*time.Second, func() error {
		p, err := providerState(t, v, sidecarName)
		if err != nil {
			return err
		}
		up = p
		if p.Restarts < 1 || p.State != api.ProviderUp {
			return fmt.Errorf("provider %s is %s after %d restarts (last error %q), want up after a restart",
				sidecarName, p.State, p.Restarts, p.LastError)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("stow provider ls after the kill: %s, %d restarts", up.State, up.Restarts)
	if st := rt.state(sidecarContainer); st.Status != container.Running || st.PID == first.PID && st.PIDStart == first.PIDStart {
		t.Errorf("stow inspect %s after the restart: %s, pid %d; want running, a new init", sidecarContainer, st.Status, st.PID)
	}
	d.Must("exec", "holder", "sh", "-c", "echo after >> /data/f")
	if got := d.Must("exec", "holder", "cat", "/data/f"); got != "before\nduring\nafter" {
		t.Errorf("holder read %q after the sidecar restarted, want before, during, after", got)
	}

	// A new volume mounts through the new sidecar, for Docker and stow run.
	create("late")
	if got := d.Must(append(runArgs(image, "late", "--rm"), "sh", "-c", "echo new > /data/f && cat /data/f")...); got != "new" {
		t.Errorf("a Docker container of a new volume read %q after the restart, want new", got)
	}
	if got := r.must(t, "run", "--rm", "-v", "late:/d", "bb", "cat", "/d/f"); got != "new" {
		t.Errorf("a stow run container of a new volume read %q after the restart, want new", got)
	}

	// The last unmount unpublishes and unstages through the new sidecar.
	d.Must("stop", "-t", "1", "holder")
	if n := inspectVolume(t, v, "held").Mounts; n != 0 {
		t.Errorf("stow volume inspect held after docker stop: mounts = %d, want 0", n)
	}
	for _, dir := range []string{target, staging} {
		if m := harness.MountsUnder(t, dir); len(m) != 0 {
			t.Errorf("still mounted after docker stop: %v", m)
		}
	}
	err = harness.Poll(10*time.Second, func() error {
		if b, err := os.ReadFile(backing); err == nil && strings.HasSuffix(strings.TrimSpace(string(b)), image0) {
			return fmt.Errorf("%s is still attached to %s", loop, strings.TrimSpace(string(b)))
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	d.Must("rm", "holder")
	d.Must("volume", "rm", "held", "late", "s2d", "d2s")
	if got := listVolumes(t, v); len(got) != 0 {
		t.Errorf("stow volume ls after removing everything: %v", got)
	}
	if entries, err := os.ReadDir(dataDir); err != nil || len(entries) != 0 {
		t.Errorf("the sidecar's data directory after removing everything: %v, %v", entries, err)
	}
	for _, dir := range []string{filepath.Join(root, "staging"), filepath.Join(root, "mounts")} {
		if m := harness.MountsUnder(t, dir); len(m) != 0 {
			t.Errorf("mounts left below %s: %v", dir, m)
		}
	}
	// Only the sidecar is left of the containers in the runtime root.
	if ids := strings.Fields(r.must(t, "ps", "-aq")); len(ids) != 1 {
		t.Errorf("stow ps -aq: %v, want only the sidecar's container", ids)
	}
}
