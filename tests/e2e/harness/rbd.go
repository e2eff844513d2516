package harness

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/rbd/rbdtest"
)

var stowRBD struct {
	once sync.Once
	path string
	err  error
}

// BuildStowRBD builds ./cmd/stow-rbd, the RBD provider's CSI sidecar, with
// cgo and the build tags ceph and pacific (it links librados and librbd),
// once per test binary, beside the binaries of BuildBinaries, and returns
// its path. Main removes it at the end.
func BuildStowRBD(t testing.TB) string {
	t.Helper()
	testenv.Require(t, "gcc")
	bins := BuildBinaries(t) // makes the directory Main removes
	stowRBD.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			stowRBD.err = err
			return
		}
		gobin, err := exec.LookPath("go")
		if err != nil {
			stowRBD.err = err
			return
		}
		out := filepath.Join(filepath.Dir(bins.Volumed), "stow-rbd")
		cmd := exec.Command(gobin, "build", "-tags", "ceph,pacific", "-trimpath", "-o", out, "./cmd/stow-rbd")
		cmd.Dir = root
		cmd.Env = environ([]string{"CGO_ENABLED=1"})
		if b, err := cmd.CombinedOutput(); err != nil {
			stowRBD.err = fmt.Errorf("go build -tags ceph,pacific ./cmd/stow-rbd: %v\n%s", err, b)
			return
		}
		stowRBD.path = out
	})
	if stowRBD.err != nil {
		t.Fatal(stowRBD.err)
	}
	return stowRBD.path
}

// RBDProvider is a stow-rbd process started by StartStowRBD.
type RBDProvider struct {
	// Socket is the path of its CSI socket.
	Socket string
	// RunDir holds the FUSE files of the volumes it stages.
	RunDir string
	// LogPath is its log.
	LogPath string
	// HostID is its host ID, which names it in write locks.
	HostID string

	*Daemon
}

// Endpoint returns the CSI endpoint as unix:///PATH.
func (p *RBDProvider) Endpoint() string { return "unix://" + p.Socket }

// StartStowRBD starts stow-rbd (bin, from BuildStowRBD) for the cluster c
// with host ID hostID on a socket in a new temporary directory, and waits
// until it answers. A cleanup stops it by its PID with SIGTERM (failing the
// test unless it exits 0), then releases what is left below the directory.
func StartStowRBD(t testing.TB, bin string, c *rbdtest.Cluster, hostID string, extra ...string) *RBDProvider {
	t.Helper()
	// Not t.TempDir: a unix socket path must stay below 108 bytes.
	dir, err := os.MkdirTemp("", "stowage-rbd-")
	if err != nil {
		t.Fatal(err)
	}
	p := &RBDProvider{
		Socket:  filepath.Join(dir, "csi.sock"),
		RunDir:  filepath.Join(dir, "run"),
		LogPath: filepath.Join(dir, "stow-rbd.log"),
		HostID:  hostID,
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stow-rbd %s log (tail):\n%s", hostID, Tail(p.LogPath, 60))
		}
		Sweep(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	args := []string{"--endpoint", p.Endpoint(), "--ceph-conf", c.Conf, "--pool", c.Pool,
		"--host-id", hostID, "--node-id", hostID, "--run-dir", p.RunDir, "--log-level", "debug"}
	if c.Keyring != "" {
		args = append(args, "--keyring", c.Keyring)
	}
	p.Daemon = StartDaemon(t, p.LogPath, p.Socket, bin, append(args, extra...)...)
	return p
}
