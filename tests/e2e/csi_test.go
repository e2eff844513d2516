package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/tests/e2e/harness"
	"github.com/stowage/stowage/volumed/api"
)

// csiProvider is a `stow provider serve local` process, stopped by its PID.
type csiProvider struct {
	t      *testing.T
	bins   harness.Binaries
	Socket string // the CSI endpoint's path
	Root   string // the local provider's root
	log    string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // cmd.Wait's result, set before done closes
}

// startCSIProvider serves the local provider over CSI on a socket in a new
// temporary directory and waits until the socket answers. A cleanup stops
// it with SIGTERM and fails the test unless it exits 0, then fails a test
// that passed so far if mounts or loop devices are left below the
// directory, and releases them.
func startCSIProvider(t *testing.T, bins harness.Binaries) *csiProvider {
	t.Helper()
	// Not t.TempDir: a unix socket path must stay below 108 bytes.
	dir, err := os.MkdirTemp("", "stowage-csi-")
	if err != nil {
		t.Fatal(err)
	}
	p := &csiProvider{
		t:      t,
		bins:   bins,
		Socket: filepath.Join(dir, "csi.sock"),
		Root:   filepath.Join(dir, "root"),
		log:    filepath.Join(dir, "provider.log"),
	}
	t.Cleanup(func() {
		if p.running() {
			p.stop()
		}
		if t.Failed() {
			t.Logf("provider log:\n%s", harness.Tail(p.log, 60))
		} else {
			if m := harness.MountsUnder(t, dir); len(m) != 0 {
				t.Errorf("mounts left below the provider's directory: %v", m)
			}
			if l := harness.LoopsBackedUnder(t, dir); len(l) != 0 {
				t.Errorf("loop devices left for the provider's root: %v", l)
			}
		}
		harness.Sweep(t, dir)
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	p.start()
	return p
}

// Endpoint returns the CSI endpoint as unix:///PATH.
func (p *csiProvider) Endpoint() string { return "unix://" + p.Socket }

// start starts the provider and waits until its socket accepts connections.
func (p *csiProvider) start() {
	p.t.Helper()
	logFile, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(p.bins.Stow, "provider", "serve", "local",
		"--endpoint", p.Endpoint(), "--root", p.Root, "--node-id", "e2e", "--log-level", "debug")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a ^C to the test does not reach it first
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start stow provider serve: %v", err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		p.err = cmd.Wait()
		close(done)
	}(p.done)
	err = harness.Poll(30*time.Second, func() error {
		if !p.running() {
			return fmt.Errorf("stow provider serve exited: %v", p.err)
		}
		c, err := net.DialTimeout("unix", p.Socket, time.Second)
		if err != nil {
			return err
		}
		return c.Close()
	})
	if err != nil {
		p.t.Fatalf("start stow provider serve: %v\nlog:\n%s", err, harness.Tail(p.log, 40))
	}
}

// running reports whether the last started process still runs.
func (p *csiProvider) running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and fails the test unless the provider exits 0 within
// 30 seconds; after that it kills it.
func (p *csiProvider) stop() {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		if p.err != nil {
			p.t.Errorf("stow provider serve after SIGTERM: %v", p.err)
		}
	case <-time.After(30 * time.Second):
		p.kill9()
		p.t.Errorf("stow provider serve did not stop within 30s of SIGTERM; killed")
	}
}

// kill9 kills the provider with SIGKILL and waits for it to end.
func (p *csiProvider) kill9() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// TestCSISanityLocal runs the CSI conformance suite, csi-sanity, against
// the local provider served by `stow provider serve local`.
func TestCSISanityLocal(t *testing.T) {
	testenv.Require(t, "root", "loop", "mkfs.ext4", "csi-sanity")
	p := startCSIProvider(t, harness.BuildBinaries(t))
	r := harness.CSISanity(t, p.Socket, harness.SanityOptions{
		Dir: filepath.Dir(p.Socket), VolumeSize: 64 << 20, Timeout: 10 * time.Minute,
	})
	if t.Failed() {
		t.FailNow()
	}
	if m := harness.MountsUnder(t, r.Work); len(m) != 0 {
		t.Errorf("csi-sanity left mounts: %v", m)
	}
	for reason, n := range r.Skips {
		if !notImplemented(reason) {
			t.Errorf("csi-sanity skipped %d specs for %q, which the driver should offer", n, reason)
		}
	}
}

// notImplemented reports whether csi-sanity may skip specs for reason:
// what the README says the CSI server does not implement. Anything else
// skipped is a capability lost.
func notImplemented(reason string) bool {
	if reason == "Service does not have single node multi writer capability" {
		return true
	}
	feature, ok := strings.CutSuffix(reason, " not supported")
	return ok && slices.Contains([]string{
		"ControllerPublishVolume", "ControllerUnpublishVolume", "Controller Publish, UnpublishVolume",
		"Snapshot", "CreateSnapshot", "DeleteSnapshot", "GetSnapshot", "ListSnapshots", "Volume Cloning",
		"ControllerExpandVolume", "NodeExpandVolume",
		"ControllerModifyVolume", "Modify volume", "Modify Volume", "GroupControllerService", "GetCapacity",
		"ControllerGetVolumeHealth", "ControllerListVolumeHealth", "NodeGetVolumeHealth", "NodeGetStorageHealth",
	}, feature)
}

// providerState returns `stow provider ls` for the named provider.
func providerState(t *testing.T, v *harness.Volumed, name string) (api.Provider, error) {
	t.Helper()
	var ps []api.Provider
	out := v.MustStow("--format", "json", "provider", "ls")
	if err := json.Unmarshal([]byte(out), &ps); err != nil {
		t.Fatalf("decode stow provider ls: %v\n%s", err, out)
	}
	for _, p := range ps {
		if p.Name == name {
			return p, nil
		}
	}
	return api.Provider{}, fmt.Errorf("stow provider ls does not list %s: %s", name, out)
}

// waitProviderState polls `stow provider ls` until the named provider is in
// state, and returns what it showed last.
func waitProviderState(t *testing.T, v *harness.Volumed, name, state string) api.Provider {
	t.Helper()
	var last api.Provider
	err := harness.Poll(30*time.Second, func() error {
		p, err := providerState(t, v, name)
		if err != nil {
			return err
		}
		last = p
		if p.State != state {
			return fmt.Errorf("provider %s is %s (last error %q), want %s", name, p.State, p.LastError, state)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return last
}

// TestVolumedWithCSIEndpoint uses the local provider served over CSI as
// volumed's provider "ext" of kind csi: volumes created by stow and by
// Docker, written and read by containers, a container that keeps its volume
// while the provider is killed and restarted, and a final unmount that
// unpublishes and unstages through the restarted provider.
func TestVolumedWithCSIEndpoint(t *testing.T) {
	testenv.Require(t, "root", "dockerd", "busybox", "loop", "mkfs.ext4")
	bins := harness.BuildBinaries(t)
	// The provider starts first so that it stops last, after volumed and
	// dockerd have unmounted everything through it.
	p := startCSIProvider(t, bins)
	config := filepath.Join(t.TempDir(), "volumed.toml")
	text := fmt.Sprintf("probe_interval = \"1s\"\n[providers.ext]\ntype = \"csi\"\nendpoint = %q\n", p.Endpoint())
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	v := harness.StartVolumed(t, bins, "--config", config)

	ext := waitProviderState(t, v, "ext", api.ProviderUp)
	if ext.Kind != "csi" || ext.Driver != "stowage.local" {
		t.Errorf("stow provider ls: ext has kind %q and driver %q, want csi and stowage.local", ext.Kind, ext.Driver)
	}
	if local, err := providerState(t, v, "local"); err != nil || local.Kind != "builtin" {
		t.Errorf("stow provider ls: local = %+v, %v; want kind builtin", local, err)
	}
	if got := v.MustStow("volume", "create", "-p", "ext", "-o", "size=64MiB", "v"); got != "v" {
		t.Fatalf("stow volume create printed %q, want v", got)
	}
	if vol := inspectVolume(t, v, "v"); vol.Provider != "ext" || vol.State != api.StateReady {
		t.Errorf("stow volume inspect v: provider %q, state %q; want ext, ready", vol.Provider, vol.State)
	}
	if _, err := os.Stat(filepath.Join(p.Root, "v")); err != nil {
		t.Errorf("the provider has no volume v: %v", err)
	}

	d := harness.StartDockerd(t)
	image := harness.ImportBusybox(t, d.Host)
	create := func(name string) {
		t.Helper()
		if got := d.Must("volume", "create", "-d", v.Driver, "-o", "provider=ext", "-o", "size=64MiB", name); got != name {
			t.Fatalf("docker volume create printed %q, want %s", got, name)
		}
	}

	// Write and read through two containers.
	create("v2")
	d.Must(append(runArgs(image, "v2", "--rm"), "sh", "-c", "echo hi > /data/f")...)
	if got := d.Must(append(runArgs(image, "v2", "--rm"), "cat", "/data/f")...); got != "hi" {
		t.Errorf("second container read %q, want hi", got)
	}
	d.Must("volume", "rm", "v2")
	if _, err := os.Stat(filepath.Join(p.Root, "v2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the provider still has v2 after docker volume rm: %v", err)
	}

	// A container holds a volume while the provider dies.
	create("held")
	d.Must(append(runArgs(image, "held", "-d", "--name", "holder"), "sleep", "300")...)
	d.Must("exec", "holder", "sh", "-c", "echo before > /data/f")
	if m := harness.MountsUnder(t, filepath.Join(v.Root, "staging", "held")); len(m) == 0 {
		t.Errorf("held is not staged while a container uses it (the provider has STAGE_UNSTAGE_VOLUME)")
	}
	p.kill9()
	d.Must("exec", "holder", "sh", "-c", "echo during >> /data/f")
	if got := d.Must("exec", "holder", "cat", "/data/f"); got != "before\nduring" {
		t.Errorf("holder read %q while the provider was down, want before, during", got)
	}
	down := waitProviderState(t, v, "ext", api.ProviderDown)
	t.Logf("stow provider ls while the provider is down: last error %q", down.LastError)
	if r := v.Stow("volume", "create", "-p", "ext", "-o", "size=64MiB", "early"); r.Code == 0 ||
		!strings.Contains(r.Stderr, "unavailable") || !strings.Contains(r.Stderr, p.Socket) {
		t.Errorf("stow volume create while the provider is down: want unavailable naming the socket, got %s", r)
	} else {
		t.Logf("stow volume create while the provider is down: %s", strings.TrimSpace(r.Stderr))
	}
	if slices.Contains(listVolumes(t, v), "early") {
		t.Errorf("a create that failed left volume early behind")
	}

	p.start()
	waitProviderState(t, v, "ext", api.ProviderUp)
	create("v3")
	if got := d.Must(append(runArgs(image, "v3", "--rm"), "sh", "-c", "echo new > /data/f && cat /data/f")...); got != "new" {
		t.Errorf("a container of a new volume read %q after the provider restarted, want new", got)
	}
	d.Must("exec", "holder", "sh", "-c", "echo after >> /data/f")
	if got := d.Must("exec", "holder", "cat", "/data/f"); got != "before\nduring\nafter" {
		t.Errorf("holder read %q after the provider restarted", got)
	}

	// The last unmount unpublishes and unstages through the new provider.
	d.Must("stop", "-t", "1", "holder")
	if got := inspectVolume(t, v, "held"); got.Mounts != 0 {
		t.Errorf("stow volume inspect held after docker stop: mounts = %d, want 0", got.Mounts)
	}
	for _, dir := range []string{filepath.Join(v.Root, "mounts", "held"), filepath.Join(v.Root, "staging", "held")} {
		if m := harness.MountsUnder(t, dir); len(m) != 0 {
			t.Errorf("still mounted after docker stop: %v", m)
		}
	}
	d.Must("rm", "holder")
	d.Must("volume", "rm", "held", "v3")
	v.MustStow("volume", "rm", "v")
	if got := listVolumes(t, v); len(got) != 0 {
		t.Errorf("stow volume ls after removing everything: %v", got)
	}
	if entries, err := os.ReadDir(p.Root); err != nil || len(entries) != 0 {
		t.Errorf("the provider's root after removing everything: %v, %v", entries, err)
	}
	for _, dir := range []string{v.Root, p.Root} {
		if m := harness.MountsUnder(t, dir); len(m) != 0 {
			t.Errorf("mounts left below %s: %v", dir, m)
		}
		if l := harness.LoopsBackedUnder(t, dir); len(l) != 0 {
			t.Errorf("loop devices left for %s: %v", dir, l)
		}
	}
}
