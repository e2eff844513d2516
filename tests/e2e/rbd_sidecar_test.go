package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/rbd/rbdtest"
	"github.com/stowage/stowage/tests/e2e/harness"
	"github.com/stowage/stowage/volumed/api"
)

// clientConf returns the [global] section of the cluster's ceph.conf
// without its host paths, with the keyring at keyring: what a client in a
// container needs.
func clientConf(t *testing.T, c *rbdtest.Cluster, keyring string) string {
	t.Helper()
	b, err := os.ReadFile(c.Conf)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	for line := range strings.SplitSeq(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "[") && trimmed != "[global]" {
			break
		}
		key, _, _ := strings.Cut(trimmed, "=")
		switch strings.TrimSpace(key) {
		case "run dir", "crash dir", "keyring":
			continue
		}
		sb.WriteString(line + "\n")
	}
	sb.WriteString("keyring = " + keyring + "\n")
	return sb.String()
}

// TestRBDSidecar runs stow-rbd as volumed's provider of type sidecar: a
// container of the bundled runtime from the image tests/scripts/rbd-image.sh
// builds (stow-rbd, its shared libraries, librados's plugins and the file
// system tools), with ceph.conf and the keyring in its data directory. A
// volume written by a `stow run` container is read by a Docker container,
// survives a volumed restart, and gets a snapshot and a volume from it.
func TestRBDSidecar(t *testing.T) {
	testenv.Require(t, "root", "dockerd", "busybox", "loop", "mkfs.ext4", "mkfs.xfs", "ldd", "tar")
	c := rbdtest.Start(t, rbdtest.Options{})
	key := c.AdminKey(t)
	bins := harness.BuildBinaries(t)
	stowRBD := harness.BuildStowRBD(t)

	const container = "stowage-sidecar-rbd"
	// SIGTERM first: stow-rbd unstages what is left and unmounts its FUSE
	// files.
	dirs, rt := newVolumedSidecar(t, bins.Stow, "stowage-rsc-", container, "30")
	base, root, rtRoot, sockDir, dataDir := dirs.base, dirs.root, dirs.rtRoot, dirs.sockDir, dirs.dataDir
	if err := os.Mkdir(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	keyring, err := os.ReadFile(c.Keyring)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "keyring"), keyring, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dataDir, "ceph.conf"), []byte(clientConf(t, c, "/data/keyring")), 0o644); err != nil {
		t.Fatal(err)
	}

	rt.buildImage(base, "rbd-image.sh", stowRBD, "stowage-rbd")
	rt.must("image", "import", busyboxTarball(t), "bb")

	config := filepath.Join(base, "volumed.toml")
	text := fmt.Sprintf(`probe_interval = "1s"

[providers.rbd]
type = "sidecar"
image = "stowage-rbd"
command = ["stow-rbd", "--endpoint", "unix:///csi/csi.sock", "--ceph-conf", "/data/ceph.conf", "--keyring", "/data/keyring", "--pool", %q, "--host-id", "side", "--run-dir", "/run/stowage-rbd", "--log-level", "debug"]
stow = %q
runtime_root = %q
socket_dir = %q
data_dir = %q
`, c.Pool, bins.Stow, rtRoot, sockDir, dataDir)
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	v := harness.StartVolumed(t, bins, "--config", config, "--root", root)
	r := &runtimeEnv{v: v, root: rtRoot}
	if side := waitProviderState(t, v, "rbd", api.ProviderUp); side.Kind != "sidecar" || side.Driver != "stowage.rbd" {
		t.Errorf("stow provider ls: rbd has kind %q and driver %q, want sidecar and stowage.rbd", side.Kind, side.Driver)
	}

	if got := v.MustStow("volume", "create", "-p", "rbd", "-o", "size=256MiB", "-o", "fs=ext4", "pg"); got != "pg" {
		t.Fatalf("stow volume create printed %q, want pg", got)
	}
	if got := c.Run(t, "rbd", "ls", "--pool", c.Pool); got != "pg" {
		t.Errorf("rbd ls: %q, want pg", got)
	}
	r.must(t, "run", "--rm", "-v", "pg:/d", "bb", "sh", "-c", "echo one > /d/f")
	d := harness.StartDockerd(t)
	image := harness.ImportBusybox(t, d.Host)
	if got := d.Must(append(runArgs(image, "pg", "--rm"), "cat", "/data/f")...); got != "one" {
		t.Errorf("a Docker container read %q from what a stow run container wrote, want one", got)
	}

	v.Restart()
	waitProviderState(t, v, "rbd", api.ProviderUp)
	if got := v.MustStow("volume", "snapshot", "pg", "s1"); got != "pg@s1" {
		t.Errorf("stow volume snapshot printed %q, want pg@s1", got)
	}
	d.Must(append(runArgs(image, "pg", "--rm"), "sh", "-c", "echo two >> /data/f")...)
	v.MustStow("volume", "create", "--from", "pg@s1", "pgcopy")
	if got := r.must(t, "run", "--rm", "-v", "pgcopy:/d", "bb", "cat", "/d/f"); got != "one" {
		t.Errorf("pgcopy (from pg@s1) holds %q, want one", got)
	}
	if got := r.must(t, "run", "--rm", "-v", "pg:/d", "bb", "cat", "/d/f"); got != "one\ntwo" {
		t.Errorf("pg holds %q after a volumed restart, want one, two", got)
	}
	if logs := rt.run("logs", container); strings.Contains(logs.Stdout+logs.Stderr, key) {
		t.Errorf("the cephx key shows in the sidecar's log")
	}
}
