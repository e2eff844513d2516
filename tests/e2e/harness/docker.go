package harness

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
)

// Image is the name of the busybox image ImportBusybox makes.
const Image = "stowage-bb:latest"

// dataParent holds the private dockerds' data roots. It must be on a real
// disk: overlay2 cannot stack on overlayfs or tmpfs everywhere.
const dataParent = "/var/lib/stowage-test"

var dockerSeq atomic.Int64

// Docker is a private dockerd started by StartDockerd.
type Docker struct {
	t testing.TB
	// Host is the daemon's address, "unix://<socket>", for DOCKER_HOST.
	Host     string
	DataRoot string
	ExecRoot string
	LogPath  string
	proc     *process
}

// StartDockerd starts a private dockerd with its own data root, exec root,
// socket and supervised containerd, without networking (containers must use
// --network none), and waits until it answers. A cleanup removes its
// containers, stops it by PID and removes its directories.
func StartDockerd(t testing.TB) *Docker {
	t.Helper()
	testenv.Require(t, "root", "dockerd")
	base, err := os.MkdirTemp("", "stowage-dockerd-") // short: socket paths have a length limit
	if err != nil {
		t.Fatalf("make dockerd dir: %v", err)
	}
	if err := os.MkdirAll(dataParent, 0o700); err != nil {
		t.Fatalf("make %s: %v", dataParent, err)
	}
	dataRoot, err := os.MkdirTemp(dataParent, "d")
	if err != nil {
		t.Fatalf("make data root: %v", err)
	}
	d := &Docker{
		t:        t,
		Host:     "unix://" + filepath.Join(base, "docker.sock"),
		DataRoot: dataRoot,
		ExecRoot: filepath.Join(base, "exec"),
		LogPath:  filepath.Join(base, "dockerd.log"),
	}
	config := filepath.Join(base, "daemon.json")
	if err := os.WriteFile(config, []byte("{}\n"), 0o644); err != nil {
		t.Fatalf("write dockerd config: %v", err)
	}
	// A containerd namespace of its own, should dockerd find a system
	// containerd and use it instead of starting its own.
	ns := fmt.Sprintf("stowage-e2e-%d-%d", os.Getpid(), dockerSeq.Add(1))
	args := []string{
		"--config-file", config,
		"--data-root", d.DataRoot,
		"--exec-root", d.ExecRoot,
		"--pidfile", filepath.Join(base, "docker.pid"),
		"-H", d.Host,
		"--containerd-namespace", ns,
		"--containerd-plugins-namespace", ns + "-plugins",
		"--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
		"--userland-proxy=false",
		"--shutdown-timeout=5",
	}
	dockerd, err := testenv.LookPath("dockerd")
	if err != nil {
		t.Fatal(err)
	}
	d.proc, err = startProcess(d.LogPath, nil, dockerd, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		d.stop()
		Sweep(t, d.DataRoot)
		Sweep(t, base)
		for _, dir := range []string{d.DataRoot, base} {
			if err := os.RemoveAll(dir); err != nil {
				t.Errorf("remove %s: %v", dir, err)
			}
		}
	})
	err = Poll(60*time.Second, func() error {
		if d.proc.exited() {
			return fmt.Errorf("dockerd exited: %v", d.proc.err)
		}
		if r := d.Run("info", "--format", "{{.ServerVersion}}"); r.Code != 0 {
			return fmt.Errorf("docker info: %s", strings.TrimSpace(r.Stderr))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("start dockerd: %v\ndockerd log:\n%s", err, Tail(d.LogPath, 40))
	}
	return d
}

// stop removes every container (so dockerd unmounts their volumes while the
// volume plugin still answers), then stops dockerd by PID.
func (d *Docker) stop() {
	d.t.Helper()
	if !d.proc.exited() {
		if ids := strings.Fields(d.Run("ps", "-aq").Stdout); len(ids) > 0 {
			if r := d.Run(append([]string{"rm", "-f"}, ids...)...); r.Code != 0 {
				d.t.Logf("cleanup: docker rm -f: %s", r)
			}
		}
	}
	if killed, _ := d.proc.stop(30 * time.Second); killed {
		d.t.Logf("cleanup: dockerd did not stop on SIGTERM; killed")
	}
	if d.t.Failed() {
		d.t.Logf("dockerd log (tail):\n%s", Tail(d.LogPath, 60))
	}
}

// PID returns dockerd's process ID.
func (d *Docker) PID() int { return d.proc.pid() }

// Env returns the environment entries that point a docker CLI at d.
func (d *Docker) Env() []string { return []string{"DOCKER_HOST=" + d.Host} }

// Run runs the docker CLI against d.
func (d *Docker) Run(args ...string) Result {
	return dockerCLI(d.Host, nil, args...)
}

// Must runs the docker CLI against d, fails the test unless it exits 0, and
// returns its standard output without surrounding space.
func (d *Docker) Must(args ...string) string {
	d.t.Helper()
	r := d.Run(args...)
	if r.Code != 0 {
		d.t.Fatalf("docker %s: %s", strings.Join(args, " "), r)
	}
	return strings.TrimSpace(r.Stdout)
}

func dockerCLI(host string, stdin []byte, args ...string) Result {
	docker, err := testenv.LookPath("docker")
	if err != nil {
		return Result{Code: -1, Stderr: err.Error()}
	}
	return run([]string{"DOCKER_HOST=" + host}, stdin, docker, args...)
}

var busybox struct {
	once sync.Once
	tar  []byte
	err  error

	mu       sync.Mutex
	imported map[string]bool // by docker host
}

// ImportBusybox imports a busybox image named Image into the dockerd at
// dockerHost (once per daemon) and returns the image name. The image has
// /bin/busybox and a link in /bin for each of its applets (sh, cat, echo,
// dd, sleep, true, ...).
func ImportBusybox(t testing.TB, dockerHost string) string {
	t.Helper()
	tarball := BusyboxTar(t)
	busybox.mu.Lock()
	defer busybox.mu.Unlock()
	if busybox.imported[dockerHost] {
		return Image
	}
	r := dockerCLI(dockerHost, tarball, "import", "--change", `CMD ["sh"]`, "-", Image)
	if r.Code != 0 {
		t.Fatalf("docker import: %s", r)
	}
	if busybox.imported == nil {
		busybox.imported = make(map[string]bool)
	}
	busybox.imported[dockerHost] = true
	return Image
}

// BusyboxTar returns a rootfs tarball of the static busybox and a link in
// /bin for each of its applets, built once per test binary.
func BusyboxTar(t testing.TB) []byte {
	t.Helper()
	testenv.Require(t, "busybox")
	busybox.once.Do(func() { busybox.tar, busybox.err = busyboxTar() })
	if busybox.err != nil {
		t.Fatalf("build busybox rootfs: %v", busybox.err)
	}
	return busybox.tar
}

// busyboxTar returns a rootfs tar of the static busybox and its applets.
func busyboxTar() ([]byte, error) {
	path, err := testenv.StaticBusybox()
	if err != nil {
		return nil, err
	}
	bin, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	list := run(nil, nil, path, "--list")
	if list.Code != 0 {
		return nil, fmt.Errorf("busybox --list: %s", list)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	now := time.Now()
	for _, dir := range []string{"bin", "dev", "etc", "proc", "root", "sys", "tmp", "var"} {
		mode := int64(0o755)
		if dir == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: mode, ModTime: now}); err != nil {
			return nil, err
		}
	}
	files := map[string][]byte{
		"bin/busybox": bin,
		"etc/passwd":  []byte("root:x:0:0:root:/root:/bin/sh\n"),
		"etc/group":   []byte("root:x:0:\n"),
	}
	for _, name := range []string{"bin/busybox", "etc/passwd", "etc/group"} {
		mode := int64(0o644)
		if name == "bin/busybox" {
			mode = 0o755
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(files[name])), ModTime: now}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(files[name]); err != nil {
			return nil, err
		}
	}
	for _, applet := range strings.Fields(list.Stdout) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		hdr := &tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + applet, Linkname: "busybox", Mode: 0o777, ModTime: now}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
