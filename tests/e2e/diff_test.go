package e2e_test

import (
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/testenv"
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

// commitCheck prints, in a container of an image committed after diffOps,
// what diffOps changed: each changed file with its type, mode, link count,
// size and content, the changed directories' modes and entries, the
// symlink's target, whether the hard link shares its file's inode, and which
// deleted paths are absent. It leaves out times, which differ between any
// two runs, and directory sizes, which depend on the file system.
const commitCheck = `cd /
for f in root/added etc/passwd fix/file fix/hardlink fix/chmod fix/recreate/new fix/replace fix/todir/in new/dir/f; do
	stat -c '%n %F %a %h %s' $f
	cat $f
done
stat -c '%n %F %a' fix fix/recreate fix/todir var new new/dir
stat -c '%n %F %N' root/symlink
ls -1a root fix fix/recreate fix/todir new/dir
if [ fix/file -ef fix/hardlink ]; then echo 'fix/hardlink is fix/file'; fi
for p in etc/group fix/recreate/old fix/recreate/sub fix/tree; do
	if [ -e $p ] || [ -L $p ]; then echo "$p present"; else echo "$p absent"; fi
done`

// commitWant are lines commitCheck must print for both runtimes, so that
// they cannot agree by losing the same change.
var commitWant = []string{
	"etc/group absent",
	"fix/recreate/old absent",
	"fix/recreate/sub absent",
	"fix/tree absent",
	"fix/chmod regular file 600 1 5",
	"var directory 700",
	"fix/hardlink is fix/file",
	"fix/hardlink regular file 644 2 5",
	"root/symlink symbolic link 'root/symlink' -> '/etc/passwd'",
	"fix/todir directory 755",
}

// TestDiffMatchesDocker runs diffOps in a Docker container and in a stow
// container of the same image, and requires the same sorted `docker diff`
// and `stow diff` lines. It then commits both containers and requires that
// a container of each committed image sees the same changes.
func TestDiffMatchesDocker(t *testing.T) {
	testenv.Require(t, "root", "dockerd", "busybox")
	r := newRuntimeEnv(t) // before dockerd: see the harness's doc
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
	dockerLines := sortedLines(d.Must("diff", "diff-docker"))

	// stow gets the very image Docker's container runs, layers and all.
	saved := filepath.Join(t.TempDir(), "diff.tar")
	d.Must("save", "-o", saved, image)
	r.must(t, "image", "import", saved, image)
	t.Cleanup(func() {
		if res := r.stow("rm", "-f", "diff-stow"); res.Code != 0 {
			t.Logf("cleanup: stow rm -f diff-stow: %s", res)
		}
	})
	r.must(t, "run", "--name", "diff-stow", image, "sh", "-c", diffOps)
	stowLines := sortedLines(r.must(t, "diff", "diff-stow"))

	if !slices.Equal(dockerLines, stowLines) {
		t.Fatalf("diffs differ\ndocker diff:\n%s\n\nstow diff:\n%s", strings.Join(dockerLines, "\n"), strings.Join(stowLines, "\n"))
	}
	t.Logf("docker diff and stow diff agree:\n%s", strings.Join(stowLines, "\n"))

	// The commit round trip: each runtime's committed image, run by the
	// same runtime, shows the changes, deletions included. Docker's
	// container is killed first, as stow's has exited: neither commit
	// catches a writer.
	const committed = "stowage-diff-committed:latest"
	d.Must("kill", "diff-docker")
	d.Must("commit", "diff-docker", committed)
	r.must(t, "commit", "diff-stow", committed)
	dockerSees := d.Must("run", "--rm", "--network", "none", committed, "sh", "-c", commitCheck)
	stowSees := r.must(t, "run", "--rm", committed, "sh", "-c", commitCheck)
	if dockerSees != stowSees {
		t.Fatalf("containers of the committed images differ\ndocker:\n%s\n\nstow:\n%s", dockerSees, stowSees)
	}
	seen := strings.Split(stowSees, "\n")
	for _, want := range commitWant {
		if !slices.Contains(seen, want) {
			t.Errorf("containers of the committed images lack %q; both printed:\n%s", want, stowSees)
		}
	}
	t.Logf("containers of the committed images agree:\n%s", stowSees)
}

// sortedLines returns the lines of s, sorted.
func sortedLines(s string) []string {
	lines := strings.Split(s, "\n")
	slices.Sort(lines)
	return lines
}
