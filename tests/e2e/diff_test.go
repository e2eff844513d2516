package e2e_test

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/runtime/layer"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// diffFixture makes, in the image both sides start from, the files that
// diffOps changes.
const diffFixture = `set -e
mkdir -p /fix/recreate/sub /fix/tree/a/b
echo old > /fix/recreate/old
echo sub > /fix/recreate/sub/s
echo file > /fix/file
echo mode > /fix/chmod
echo x > /fix/tree/a/b/x
echo keep > /fix/tree/keep
echo replace > /fix/replace
echo todir > /fix/todir`

// diffOps are the scripted file operations whose diff must be the same in
// Docker and in stowage: add, modify, delete a file, delete and recreate a
// directory, chmod only (a file and a directory), hard link, symlink, delete
// a directory tree, add a directory tree, replace a file by another and by a
// directory.
const diffOps = `set -e
echo added > /root/added
echo more >> /etc/passwd
rm /etc/group
rm -rf /fix/recreate
mkdir /fix/recreate
echo new > /fix/recreate/new
chmod 0600 /fix/chmod
ln /fix/file /fix/hardlink
ln -s /etc/passwd /root/symlink
rm -rf /fix/tree
mkdir -p /new/dir
echo n > /new/dir/f
chmod 0700 /var
rm /fix/replace
echo replaced > /fix/replace
rm /fix/todir
mkdir /fix/todir
echo in > /fix/todir/in`

// TestDiffMatchesDocker runs diffOps in a Docker container and in stowage
// on the same image content and requires the same sorted `docker diff`
// lines.
func TestDiffMatchesDocker(t *testing.T) {
	testenv.Require(t, "root", "dockerd", "busybox", "tar", "chroot")
	d := harness.StartDockerd(t)
	base := harness.ImportBusybox(t, d.Host)
	d.Must("run", "--name", "diff-fixture", "--network", "none", base, "sh", "-c", diffFixture)
	const image = "stowage-diff:latest"
	d.Must("commit", "diff-fixture", image)

	d.Must("run", "-d", "--name", "diff-docker", "--network", "none", image, "sleep", "300")
	d.Must("exec", "diff-docker", "sh", "-c", diffOps)
	// Docker's own files in the container (/etc/hostname, /etc/hosts and
	// /etc/resolv.conf are bind mounts; /dev, /proc and /sys are mounts)
	// never reach its upper directory, so `docker diff` lists none of them
	// and nothing needs filtering here.
	dockerLines := strings.Split(d.Must("diff", "diff-docker"), "\n")
	slices.Sort(dockerLines)

	// The image's content as a container sees it, for stowage's lower
	// layer. docker export also holds Docker's init layer (/.dockerenv,
	// /etc/hostname, /etc/hosts, /etc/resolv.conf, ...); Docker's container
	// has that layer below its upper directory too, so both sides decide A
	// against C on the same lower content.
	d.Must("create", "--name", "diff-lower", "--network", "none", image)
	export := d.Run("export", "diff-lower")
	if export.Code != 0 {
		t.Fatalf("docker export: %s", export)
	}
	stowLines := stowDiff(t, []byte(export.Stdout), diffOps)

	if !slices.Equal(dockerLines, stowLines) {
		t.Fatalf("diffs differ\ndocker diff:\n%s\n\nstowage:\n%s", strings.Join(dockerLines, "\n"), strings.Join(stowLines, "\n"))
	}
	t.Logf("docker diff and stowage agree:\n%s", strings.Join(stowLines, "\n"))
}

// stowDiff runs ops with /bin/sh in a container whose root is the rootfs
// tar rootfs, and returns its diff lines, sorted. It mounts the overlay
// itself and runs ops under chroot; the runtime's `stow run` and `stow diff`
// take its place once they exist.
func stowDiff(t *testing.T, rootfs []byte, ops string) []string {
	t.Helper()
	dir := t.TempDir()
	lower, upper, work, merged := filepath.Join(dir, "lower"), filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")
	for _, p := range []string{lower, upper, work, merged} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	untar := exec.Command("tar", "-C", lower, "--numeric-owner", "-xpf", "-")
	untar.Stdin = bytes.NewReader(rootfs)
	if out, err := untar.CombinedOutput(); err != nil {
		t.Fatalf("extract rootfs: %v: %s", err, out)
	}
	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	mounted := true
	unmount := func() {
		if mounted {
			if err := unix.Unmount(merged, 0); err != nil {
				t.Errorf("unmount %s: %v", merged, err)
			}
			mounted = false
		}
	}
	t.Cleanup(unmount)
	sh := exec.Command("chroot", merged, "/bin/sh", "-c", ops)
	sh.Env = []string{"PATH=/bin"}
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("run ops: %v: %s", err, out)
	}
	unmount()
	changes, err := layer.Changes(upper, []string{lower})
	if err != nil {
		t.Fatal(err)
	}
	lines := make([]string, 0, len(changes))
	for _, c := range changes {
		lines = append(lines, c.String())
	}
	slices.Sort(lines)
	return lines
}
