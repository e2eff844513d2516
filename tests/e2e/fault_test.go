package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/tests/e2e/harness"
	"github.com/stowage/stowage/volumed/api"
)

// faultDriver is a tests/e2e/faultdriver process: a CSI driver that serves
// normally, hangs or fails every call, as told.
type faultDriver struct {
	t      *testing.T
	Socket string
	Root   string // its volumes, directories
	state  string // the mode it is in
	d      *harness.Daemon
}

// startFaultDriver starts a fault driver in mode ok, advertising
// STAGE_UNSTAGE_VOLUME, on a socket in a new temporary directory, and waits
// until the socket accepts connections. A cleanup stops it with SIGTERM and
// fails the test unless it exits 0.
func startFaultDriver(t *testing.T, bin string) *faultDriver {
	t.Helper()
	// Not t.TempDir: a unix socket path must stay below 108 bytes.
	dir, err := os.MkdirTemp("", "stowage-fault-")
	if err != nil {
		t.Fatal(err)
	}
	f := &faultDriver{
		t:      t,
		Socket: filepath.Join(dir, "csi.sock"),
		Root:   filepath.Join(dir, "root"),
		state:  filepath.Join(dir, "mode"),
	}
	log := filepath.Join(dir, "driver.log")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("faultdriver log:\n%s", harness.Tail(log, 60))
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("remove %s: %v", dir, err)
		}
	})
	f.d = harness.StartDaemon(t, log, f.Socket, bin,
		"--endpoint", f.Endpoint(), "--root", f.Root, "--state", f.state, "--stage")
	return f
}

// Endpoint returns the CSI endpoint as unix:///PATH.
func (f *faultDriver) Endpoint() string { return "unix://" + f.Socket }

// setMode switches the driver to mode ok, hang or fail by its signal and
// waits until the driver says it has.
func (f *faultDriver) setMode(mode string) {
	f.t.Helper()
	sig := map[string]syscall.Signal{"ok": syscall.SIGHUP, "hang": syscall.SIGUSR1, "fail": syscall.SIGUSR2}[mode]
	if err := f.d.Signal(sig); err != nil {
		f.t.Fatalf("signal faultdriver: %v", err)
	}
	err := harness.Poll(10*time.Second, func() error {
		b, err := os.ReadFile(f.state)
		if err != nil {
			return err
		}
		if got := strings.TrimSpace(string(b)); got != mode {
			return fmt.Errorf("faultdriver is in mode %s, want %s", got, mode)
		}
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
}

// failMessage is the message of every error of a fault driver in mode fail.
const failMessage = "injected failure"

// timedOut returns a regular expression for volumed's error when provider
// did not answer op (create, stage, probe, ...) before the deadline: the
// deadline passes either at volumed ("did not finish") or, a moment
// earlier, at the driver, which gRPC gives the same deadline ("did not
// answer in time").
func timedOut(provider, op string) string {
	p := regexp.QuoteMeta(`provider "` + provider + `"`)
	return p + `( did not finish ` + op + ` within |: ` + op + `: .*did not answer in time)`
}

// TestVolumedFaultyProviders runs volumed with two CSI providers served by
// separate fault driver processes, under a real dockerd. "hung" stops
// answering: docker volume create and docker run -v fail with volumed's
// error naming the provider and the operation, at volumed's configured
// deadline, well before dockerd's own (2 min); nothing is left recorded
// or mounted, and the provider works again once it answers. "bad" fails
// every call: create, mount and remove fail with the driver's message
// through Docker and through stow, and neither volumed's records (also
// after a restart, from its database) nor the host keep anything of the
// failed operations.
func TestVolumedFaultyProviders(t *testing.T) {
	testenv.Require(t, "root", "dockerd", "busybox")
	bins := harness.BuildBinaries(t)
	driver := harness.BuildCommand(t, "./tests/e2e/faultdriver")
	// The drivers start first so that they stop last, after volumed and
	// dockerd have let go of everything.
	hung, bad := startFaultDriver(t, driver), startFaultDriver(t, driver)
	config := filepath.Join(t.TempDir(), "volumed.toml")
	// Deadlines far below dockerd's, so that waiting for them is quick.
	text := fmt.Sprintf(`probe_interval = "1s"
create_mount_timeout = "5s"
request_timeout = "4s"
[providers.hung]
type = "csi"
endpoint = %q
[providers.bad]
type = "csi"
endpoint = %q
`, hung.Endpoint(), bad.Endpoint())
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	v := harness.StartVolumed(t, bins, "--config", config)
	for _, name := range []string{"hung", "bad"} {
		if p := waitProviderState(t, v, name, api.ProviderUp); p.Kind != "csi" || p.Driver != "stowage.fault" {
			t.Errorf("stow provider ls: %s has kind %q and driver %q, want csi and stowage.fault", name, p.Kind, p.Driver)
		}
	}
	d := harness.StartDockerd(t)
	image := harness.ImportBusybox(t, d.Host)
	createWith := func(provider, name string) harness.Result {
		return d.Run("volume", "create", "-d", v.Driver, "-o", "provider="+provider, name)
	}
	for _, name := range []string{"held", "kept"} {
		provider := map[string]string{"held": "hung", "kept": "bad"}[name]
		if r := createWith(provider, name); r.Code != 0 || strings.TrimSpace(r.Stdout) != name {
			t.Fatalf("docker volume create %s on %s while it answers: %s", name, provider, r)
		}
	}
	// nothingLeft checks that volumed lists only want, each ready and not
	// mounted, and that nothing is mounted below its root.
	nothingLeft := func(t *testing.T, want ...string) {
		t.Helper()
		if got := listVolumes(t, v); !slices.Equal(got, want) {
			t.Errorf("stow volume ls: %v, want %v", got, want)
		}
		for _, name := range want {
			if vol := inspectVolume(t, v, name); vol.State != api.StateReady || vol.Mounts != 0 || vol.Mountpoint != "" {
				t.Errorf("stow volume inspect %s: state %s, %d mounts, mount point %q; want ready, unmounted",
					name, vol.State, vol.Mounts, vol.Mountpoint)
			}
		}
		if m := harness.MountsUnder(t, v.Root); len(m) != 0 {
			t.Errorf("mounted below volumed's root: %v", m)
		}
		if out := d.Must("volume", "ls", "-q", "--filter", "driver="+v.Driver); !slices.Equal(strings.Fields(out), want) {
			t.Errorf("docker volume ls: %q, want %v", out, want)
		}
	}
	// failed checks that a command failed with an error that matches
	// every one of the regular expressions want.
	failed := func(t *testing.T, what string, r harness.Result, want ...string) {
		t.Helper()
		if r.Code == 0 {
			t.Errorf("%s succeeded, want it to fail:\n%s", what, r)
			return
		}
		for _, w := range want {
			if !regexp.MustCompile(w).MatchString(r.Stderr) {
				t.Errorf("%s: want an error that matches %s, got %s", what, w, r)
				return
			}
		}
		t.Logf("%s: %s", what, strings.TrimSpace(r.Stderr))
	}
	lit := regexp.QuoteMeta

	t.Run("hang", func(t *testing.T) {
		hung.setMode("hang")
		failed(t, "docker volume create on a hung provider", createWith("hung", "late"),
			lit(`create volume "late"`), timedOut("hung", "create"))
		failed(t, "docker run -v on a hung provider", d.Run(append(runArgs(image, "held", "--rm"), "true")...),
			lit(`mount volume "held"`), timedOut("hung", "stage"))
		nothingLeft(t, "held", "kept")
		down := waitProviderState(t, v, "hung", api.ProviderDown)
		if !regexp.MustCompile(timedOut("hung", "probe")).MatchString(down.LastError) {
			t.Errorf("stow provider ls: hung is down with last error %q, want one that says it did not answer the probe in time", down.LastError)
		}

		// Once it answers again, it serves as before.
		hung.setMode("ok")
		waitProviderState(t, v, "hung", api.ProviderUp)
		d.Must(append(runArgs(image, "held", "--rm"), "sh", "-c", "echo back > /data/f")...)
		if got := d.Must(append(runArgs(image, "held", "--rm"), "cat", "/data/f")...); got != "back" {
			t.Errorf("a container read %q from held after the provider answered again, want back", got)
		}
		d.Must("volume", "rm", "held")
		nothingLeft(t, "kept")
		if entries, err := os.ReadDir(hung.Root); err != nil || len(entries) != 0 {
			t.Errorf("the hung driver's volumes after removing held: %v, %v", entries, err)
		}
	})

	t.Run("fail", func(t *testing.T) {
		bad.setMode("fail")
		failed(t, "docker volume create on a failing provider", createWith("bad", "late"),
			lit(`create volume "late": provider "bad": create:`), lit(failMessage))
		failed(t, "stow volume create on a failing provider", v.Stow("volume", "create", "-p", "bad", "late2"),
			lit(`create volume "late2": provider "bad": create:`), lit(failMessage))
		failed(t, "docker run -v on a failing provider", d.Run(append(runArgs(image, "kept", "--rm"), "true")...),
			lit(`mount volume "kept": provider "bad": stage:`), lit(failMessage))
		failed(t, "docker volume rm on a failing provider", d.Run("volume", "rm", "kept"),
			lit(`remove volume "kept": provider "bad": delete:`), lit(failMessage))
		failed(t, "stow volume rm on a failing provider", v.Stow("volume", "rm", "kept"),
			lit(`remove volume "kept": provider "bad": delete:`), lit(failMessage))
		nothingLeft(t, "kept")
		down := waitProviderState(t, v, "bad", api.ProviderDown)
		if !strings.Contains(down.LastError, failMessage) {
			t.Errorf("stow provider ls: bad is down with last error %q, want the driver's message", down.LastError)
		}
		// What volumed recorded is in its database, not only in memory.
		v.Restart()
		nothingLeft(t, "kept")
		if entries, err := os.ReadDir(bad.Root); err != nil || len(entries) != 1 || entries[0].Name() != "kept" {
			t.Errorf("the failing driver's volumes: %v, %v; want only kept", entries, err)
		}

		bad.setMode("ok")
		waitProviderState(t, v, "bad", api.ProviderUp)
		d.Must("volume", "rm", "kept")
		nothingLeft(t)
		if entries, err := os.ReadDir(bad.Root); err != nil || len(entries) != 0 {
			t.Errorf("the failing driver's volumes after removing kept: %v, %v", entries, err)
		}
	})
}
