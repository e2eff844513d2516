package harness

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
)

// Binaries are the paths of the binaries BuildBinaries built.
type Binaries struct {
	Volumed string
	Stow    string
}

var build struct {
	once sync.Once
	dir  string
	bins Binaries
	err  error
}

// BuildBinaries builds ./cmd/volumed and ./cmd/stow (CGO_ENABLED=0) once per
// test binary and returns their paths. Main removes them at the end.
func BuildBinaries(t testing.TB) Binaries {
	t.Helper()
	build.once.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			build.err = err
			return
		}
		build.dir, err = os.MkdirTemp("", "stowage-bin-")
		if err != nil {
			build.err = err
			return
		}
		gobin, err := exec.LookPath("go")
		if err != nil {
			build.err = err
			return
		}
		// stow finds stow-init and stow-provider beside itself.
		cmd := exec.Command(gobin, "build", "-trimpath", "-o", build.dir+"/", "./cmd/volumed", "./cmd/stow", "./cmd/stow-init", "./cmd/stow-provider")
		cmd.Dir = root
		cmd.Env = environ([]string{"CGO_ENABLED=0"})
		if out, err := cmd.CombinedOutput(); err != nil {
			build.err = fmt.Errorf("go build ./cmd/volumed ./cmd/stow ./cmd/stow-init ./cmd/stow-provider: %v\n%s", err, out)
			return
		}
		build.bins = Binaries{
			Volumed: filepath.Join(build.dir, "volumed"),
			Stow:    filepath.Join(build.dir, "stow"),
		}
	})
	if build.err != nil {
		t.Fatal(build.err)
	}
	return build.bins
}

// Main runs the tests of m and then removes what the harness kept across
// tests. Call it from TestMain.
func Main(m *testing.M) {
	code := m.Run()
	if build.dir != "" {
		os.RemoveAll(build.dir)
	}
	os.Exit(code)
}

var volumedSeq atomic.Int64

// Volumed is a volumed process started by StartVolumed.
type Volumed struct {
	t    testing.TB
	Bins Binaries
	// Driver is the Docker volume driver name under which dockerd finds
	// volumed's plugin socket (/run/docker/plugins/<Driver>.sock).
	Driver       string
	Root         string
	PluginSocket string
	APISocket    string
	MetricsAddr  string
	LogPath      string
	// Args is the full argument list of every start.
	Args []string

	proc *process
}

// StartVolumed starts volumed with a temporary --root, a plugin socket under
// a unique driver name, an API socket in a temporary directory and a free
// metrics port, followed by args (which may override those flags), and
// waits until its API and plugin sockets answer. A cleanup stops it with
// SIGTERM (and fails the test unless it exits 0), then unmounts what it left
// below its root.
func StartVolumed(t testing.TB, bins Binaries, args ...string) *Volumed {
	t.Helper()
	testenv.Require(t, "root")
	dir, err := os.MkdirTemp("", "stowage-volumed-")
	if err != nil {
		t.Fatalf("make volumed dir: %v", err)
	}
	driver := fmt.Sprintf("stowage-e2e-%d-%d", os.Getpid(), volumedSeq.Add(1))
	v := &Volumed{
		t:            t,
		Bins:         bins,
		Driver:       driver,
		Root:         filepath.Join(dir, "root"),
		PluginSocket: filepath.Join("/run/docker/plugins", driver+".sock"),
		APISocket:    filepath.Join(dir, "api.sock"),
		MetricsAddr:  freeAddr(t),
		LogPath:      filepath.Join(dir, "volumed.log"),
	}
	if err := os.MkdirAll(filepath.Dir(v.PluginSocket), 0o755); err != nil {
		t.Fatalf("make plugin dir: %v", err)
	}
	v.Args = append([]string{
		"--root", v.Root,
		"--plugin-socket", v.PluginSocket,
		"--api-socket", v.APISocket,
		"--metrics-addr", v.MetricsAddr,
		"--log-level", "debug",
	}, args...)
	v.applyOverrides(args)
	t.Cleanup(func() {
		if v.proc != nil && !v.proc.exited() {
			v.Stop()
		}
		if t.Failed() {
			t.Logf("volumed log (tail):\n%s", Tail(v.LogPath, 80))
		}
		Sweep(t, v.Root)
		os.Remove(v.PluginSocket)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	v.start()
	return v
}

// applyOverrides records flags in args that replace the defaults.
func (v *Volumed) applyOverrides(args []string) {
	fields := map[string]*string{
		"--root": &v.Root, "--plugin-socket": &v.PluginSocket,
		"--api-socket": &v.APISocket, "--metrics-addr": &v.MetricsAddr,
	}
	for i, a := range args {
		name, value, ok := strings.Cut(a, "=")
		if !ok && i+1 < len(args) {
			value = args[i+1]
		}
		if p := fields[name]; p != nil {
			*p = value
		}
	}
}

// start starts volumed and waits until it answers.
func (v *Volumed) start() {
	v.t.Helper()
	p, err := startProcess(v.LogPath, nil, v.Bins.Volumed, v.Args...)
	if err != nil {
		v.t.Fatal(err)
	}
	v.proc = p
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", v.APISocket)
		}},
	}
	defer client.CloseIdleConnections()
	err = Poll(30*time.Second, func() error {
		if p.exited() {
			return fmt.Errorf("volumed exited: %v", p.err)
		}
		resp, err := client.Get("http://volumed/v1/status")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET /v1/status: %s", resp.Status)
		}
		c, err := net.DialTimeout("unix", v.PluginSocket, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		v.t.Fatalf("start volumed: %v\nvolumed log:\n%s", err, Tail(v.LogPath, 40))
	}
}

// PID returns the process ID of the running volumed.
func (v *Volumed) PID() int { return v.proc.pid() }

// Host returns the address of the API socket for stow's --host.
func (v *Volumed) Host() string { return "unix://" + v.APISocket }

// Stop stops volumed with SIGTERM and fails the test unless it exits 0
// within 30 seconds.
func (v *Volumed) Stop() {
	v.t.Helper()
	killed, err := v.proc.stop(30 * time.Second)
	switch {
	case killed:
		v.t.Errorf("volumed did not stop within 30s of SIGTERM; killed")
	case err != nil:
		v.t.Errorf("volumed after SIGTERM: %v", err)
	}
}

// Kill9 kills volumed with SIGKILL and waits for it to end.
func (v *Volumed) Kill9() {
	v.proc.kill()
}

// Restart stops volumed (SIGTERM) if it runs, then starts it again with the
// same arguments and waits until it answers.
func (v *Volumed) Restart() {
	v.t.Helper()
	if !v.proc.exited() {
		v.Stop()
	}
	v.start()
}

// Stow runs the stow binary against this volumed.
func (v *Volumed) Stow(args ...string) Result {
	return run(nil, nil, v.Bins.Stow, append([]string{"--host", v.Host()}, args...)...)
}

// MustStow runs stow, fails the test unless it exits 0, and returns its
// standard output without surrounding space.
func (v *Volumed) MustStow(args ...string) string {
	v.t.Helper()
	r := v.Stow(args...)
	if r.Code != 0 {
		v.t.Fatalf("stow %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}
