package e2e_test

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// TestDockerVolumeLifecycle is the user's path through Docker: create a
// sized volume, write and read it from two containers, inspect it, see
// dockerd refuse to remove it while a container holds it, hit ENOSPC, and
// remove it.
func TestDockerVolumeLifecycle(t *testing.T) {
	testenv.Require(t, "root", "dockerd", "busybox", "loop", "mkfs.ext4")
	v := harness.StartVolumed(t, harness.BuildBinaries(t))
	d := harness.StartDockerd(t)
	image := harness.ImportBusybox(t, d.Host)

	if got := d.Must("volume", "create", "-d", v.Driver, "-o", "size=64MiB", "data"); got != "data" {
		t.Fatalf("docker volume create printed %q, want data", got)
	}
	d.Must(append(runArgs(image, "data", "--rm"), "sh", "-c", "echo hi > /data/f")...)
	if got := d.Must(append(runArgs(image, "data", "--rm"), "cat", "/data/f")...); got != "hi" {
		t.Fatalf("second container read %q, want hi", got)
	}

	vol := inspectDockerVolume(t, d, "data")
	if vol.Driver != v.Driver {
		t.Errorf("Driver = %q, want %q", vol.Driver, v.Driver)
	}
	checkStatus(t, vol.Status, 0)

	// A running container holds the volume.
	d.Must(append(runArgs(image, "data", "-d", "--name", "holder"), "sleep", "300")...)
	vol = inspectDockerVolume(t, d, "data")
	checkStatus(t, vol.Status, 1)
	published := filepath.Join(v.Root, "mounts", "data")
	if vol.Mountpoint != published {
		t.Errorf("Mountpoint while mounted = %q, want %q", vol.Mountpoint, published)
	}
	if len(harness.MountsUnder(t, published)) == 0 {
		t.Errorf("no mount at %s while a container uses the volume", published)
	}
	if r := d.Run("volume", "rm", "data"); r.Code == 0 {
		t.Errorf("docker volume rm of a volume in use succeeded")
	}
	if got := d.Must("exec", "holder", "cat", "/data/f"); got != "hi" {
		t.Errorf("holder read %q, want hi", got)
	}

	// 100 MiB do not fit into 64 MiB.
	r := d.Run("exec", "holder", "dd", "if=/dev/zero", "of=/data/big", "bs=1M", "count=100")
	if r.Code == 0 {
		t.Errorf("writing 100 MiB into a 64 MiB volume succeeded")
	} else if !strings.Contains(r.Stderr, "No space left") {
		t.Errorf("dd failed without ENOSPC: %s", r)
	}

	d.Must("rm", "-f", "holder")
	vol = inspectDockerVolume(t, d, "data")
	checkStatus(t, vol.Status, 0)
	d.Must("volume", "rm", "data")
	// dockerd lists the volumes of every plugin socket it finds, so look
	// only at this volumed's.
	if got := d.Must("volume", "ls", "-q", "--filter", "driver="+v.Driver); got != "" {
		t.Errorf("docker volume ls after rm: %q", got)
	}
	if got := listVolumes(t, v); len(got) != 0 {
		t.Errorf("stow volume ls after rm: %v", got)
	}
	if m := harness.MountsUnder(t, v.Root); len(m) != 0 {
		t.Errorf("mounts left below volumed's root: %v", m)
	}
}

// checkStatus checks the Status that `docker volume inspect` shows for a
// 64 MiB volume of the local provider.
func checkStatus(t *testing.T, status map[string]any, mounts int) {
	t.Helper()
	for _, key := range []string{"provider", "id", "state", "size", "mounts"} {
		if _, ok := status[key]; !ok {
			t.Errorf("Status has no %q: %v", key, status)
		}
	}
	if got := fmt.Sprint(status["provider"]); got != "local" {
		t.Errorf("Status.provider = %q, want local", got)
	}
	if size, err := volume.ParseSize(fmt.Sprint(status["size"])); err != nil || size != 64<<20 {
		t.Errorf("Status.size = %v (%d, %v), want 64MiB", status["size"], size, err)
	}
	if got := fmt.Sprint(status["mounts"]); got != fmt.Sprint(mounts) {
		t.Errorf("Status.mounts = %s, want %d", got, mounts)
	}
}

// TestVolumedKill9 kills volumed, then stops it gracefully, under a running
// container, and checks that the container keeps its volume, that the
// restarted volumed knows the mount, and that the volume unmounts and goes
// away cleanly afterwards.
func TestVolumedKill9(t *testing.T) {
	testenv.Require(t, "root", "dockerd", "busybox", "loop", "mkfs.ext4")
	v := harness.StartVolumed(t, harness.BuildBinaries(t))
	d := harness.StartDockerd(t)
	image := harness.ImportBusybox(t, d.Host)

	d.Must("volume", "create", "-d", v.Driver, "-o", "size=64MiB", "kv")
	d.Must(append(runArgs(image, "kv", "-d", "--name", "holder"), "sleep", "300")...)
	d.Must("exec", "holder", "sh", "-c", "echo before > /data/f")

	oldPID := v.PID()
	v.Kill9()
	v.Restart()
	if v.PID() == oldPID {
		t.Fatalf("volumed was not restarted")
	}

	d.Must("exec", "holder", "sh", "-c", "echo after >> /data/f")
	if got := d.Must("exec", "holder", "cat", "/data/f"); got != "before\nafter" {
		t.Errorf("container read %q after the restart, want before, after", got)
	}
	if got := inspectVolume(t, v, "kv"); got.Mounts != 1 {
		t.Errorf("stow volume inspect after the restart: mounts = %d, want 1", got.Mounts)
	}

	// A graceful stop (SIGTERM) leaves the mount in place too.
	v.Restart()
	d.Must("exec", "holder", "sh", "-c", "echo graceful >> /data/f")
	if got := d.Must("exec", "holder", "cat", "/data/f"); got != "before\nafter\ngraceful" {
		t.Errorf("container read %q after a graceful restart", got)
	}
	if got := inspectVolume(t, v, "kv"); got.Mounts != 1 {
		t.Errorf("stow volume inspect after a graceful restart: mounts = %d, want 1", got.Mounts)
	}

	d.Must("stop", "-t", "1", "holder")
	if got := inspectVolume(t, v, "kv"); got.Mounts != 0 {
		t.Errorf("stow volume inspect after docker stop: mounts = %d, want 0", got.Mounts)
	}
	if m := harness.MountsUnder(t, filepath.Join(v.Root, "mounts", "kv")); len(m) != 0 {
		t.Errorf("volume still mounted after docker stop: %v", m)
	}
	d.Must("rm", "holder")
	d.Must("volume", "rm", "kv")
	if m := harness.MountsUnder(t, v.Root); len(m) != 0 {
		t.Errorf("mounts left below volumed's root: %v", m)
	}
	if l := harness.LoopsBackedUnder(t, v.Root); len(l) != 0 {
		t.Errorf("loop devices left for volumed's root: %v", l)
	}
	if slices.Contains(listVolumes(t, v), "kv") {
		t.Errorf("stow volume ls still lists kv")
	}
}
