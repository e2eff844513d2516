package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/csi"
	"github.com/stowage/stowage/plugins/local"
	"github.com/stowage/stowage/plugins/volume"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "volumed.toml")
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestLoadConfig(t *testing.T) {
	file := writeConfig(t, `
root = "/srv/stowage"
metrics_addr = "127.0.0.1:9999"
log_level = "debug"
probe_interval = "30s"
[providers.fast]
type = "local"
root = "/nvme/stowage"
[providers.ext]
type = "csi"
endpoint = "unix:///run/stowage/csi/ext.sock"
`)
	cfg, _, err := loadConfig([]string{"--config", file, "--metrics-addr", "", "--plugin-socket", "/run/docker/plugins/x.sock"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"root from file", cfg.Root, "/srv/stowage"},
		{"flag beats file", cfg.MetricsAddr, ""},
		{"flag", cfg.PluginSocket, "/run/docker/plugins/x.sock"},
		{"default", cfg.APISocket, "/run/stowage/volumed.sock"},
		{"level", cfg.LogLevel, "debug"},
		{"configured provider root", cfg.Providers["fast"].Root, "/nvme/stowage"},
		{"implicit local provider root", cfg.Providers["local"].Root, "/srv/stowage/local"},
		{"local kind", cfg.Providers["fast"].kind(), "builtin"},
		{"csi type", cfg.Providers["ext"].Type, "csi"},
		{"csi endpoint", cfg.Providers["ext"].Endpoint, "unix:///run/stowage/csi/ext.sock"},
		{"csi has no root", cfg.Providers["ext"].Root, ""},
		{"csi kind", cfg.Providers["ext"].kind(), "csi"},
		{"default provider", cfg.DefaultProvider, "local"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q; want %q", c.name, c.got, c.want)
		}
	}
	if cfg.ProbeInterval.Duration != 30*time.Second {
		t.Errorf("probe interval = %v", cfg.ProbeInterval)
	}
}

func TestLoadConfigDefaults(t *testing.T) {
	cfg, _, err := loadConfig(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Root != "/var/lib/stowage" || cfg.PluginSocket != "/run/docker/plugins/stowage.sock" ||
		cfg.MetricsAddr != "127.0.0.1:9163" || cfg.Providers["local"].Type != "local" {
		t.Fatalf("defaults = %+v", cfg)
	}
	// The default deadlines leave dockerd's (2 min for Create and Mount,
	// 1 min for the rest) room to carry volumed's error to the user.
	if d := cfg.CreateMountTimeout.Duration; d <= 0 || d >= 2*time.Minute {
		t.Errorf("default create_mount_timeout = %s; want below dockerd's 2m", d)
	}
	if d := cfg.RequestTimeout.Duration; d <= 0 || d >= time.Minute {
		t.Errorf("default request_timeout = %s; want below dockerd's 1m", d)
	}
}

func TestLoadConfigTimeouts(t *testing.T) {
	file := writeConfig(t, "create_mount_timeout = \"5s\"\nrequest_timeout = \"3s\"\n")
	cfg, _, err := loadConfig([]string{"--config", file}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.CreateMountTimeout.Duration != 5*time.Second || cfg.RequestTimeout.Duration != 3*time.Second {
		t.Errorf("create_mount_timeout, request_timeout = %s, %s; want 5s, 3s", cfg.CreateMountTimeout, cfg.RequestTimeout)
	}
}

func TestLoadConfigErrors(t *testing.T) {
	cases := []struct {
		name string
		args []string
		file string
		want string
	}{
		{"unknown key", nil, `colour = "red"`, "unknown keys colour"},
		{"bad duration", nil, `probe_interval = "soon"`, "use a number with a unit"},
		{"create_mount_timeout at dockerd's", nil, `create_mount_timeout = "2m"`,
			"create_mount_timeout 2m0s: use a duration above 0 and below 2m0s, dockerd's deadline for Create and Mount"},
		{"request_timeout above dockerd's", nil, `request_timeout = "90s"`,
			"request_timeout 1m30s: use a duration above 0 and below 1m0s, dockerd's deadline for every other request"},
		{"zero request_timeout", nil, `request_timeout = "0s"`, "request_timeout 0s: use a duration above 0"},
		{"negative create_mount_timeout", nil, `create_mount_timeout = "-1s"`, "create_mount_timeout -1s: use a duration above 0"},
		{"unknown provider type", nil, "[providers.x]\ntype = \"nfs\"", `provider "x": unknown type "nfs" (types: local, csi, sidecar)`},
		{"provider name as unknown type", nil, "[providers.fast]\nroot = \"/nvme\"", `provider "fast": unknown type "fast" (types: local, csi, sidecar)`},
		{"unknown provider key", nil, "[providers.x]\ntype = \"csi\"\nsocket = \"/run/x.sock\"",
			"unknown keys providers.x.socket (valid: root, plugin_socket, api_socket, metrics_addr, log_level, log_format, default_provider, probe_interval, create_mount_timeout, request_timeout, [providers.NAME] type, root, endpoint, image, command, env, socket_dir, mount_dir, data_dir, stow, runtime_root)"},
		{"unknown sidecar key", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nprivileged = true", "unknown keys providers.x.privileged"},
		{"sidecar without image", nil, "[providers.x]\ntype = \"sidecar\"", `provider "x": type sidecar needs an image`},
		{"sidecar command not a list", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\ncommand = \"drv --x\"", "command"},
		{"sidecar bad env", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nenv = [\"A\"]", `provider "x": env "A": use KEY=VALUE`},
		{"sidecar empty env key", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nenv = [\"=1\"]", `provider "x": env "=1": use KEY=VALUE`},
		{"sidecar with endpoint", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nendpoint = \"unix:///x.sock\"", `provider "x": root and endpoint are not for type sidecar`},
		{"sidecar with root", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nroot = \"/srv\"", `provider "x": root and endpoint are not for type sidecar`},
		{"sidecar relative socket_dir", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nsocket_dir = \"run/x\"", `provider "x": socket_dir "run/x" must be an absolute path`},
		{"sidecar relative stow", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nstow = \"bin/stow\"", `provider "x": stow "bin/stow" must be an absolute path`},
		{"sidecar mount_dir outside root", []string{"--root", "/var/lib/stowage"}, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nmount_dir = \"/mnt\"",
			`provider "x": mount_dir "/mnt" must be volumed's root "/var/lib/stowage" or hold it`},
		{"sidecar mount_dir below root", []string{"--root", "/var/lib/stowage"}, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nmount_dir = \"/var/lib/stowage/mounts\"",
			`mount_dir "/var/lib/stowage/mounts" must be volumed's root`},
		{"sidecar mount_dir /", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nmount_dir = \"/\"", `mount_dir / would share the whole host`},
		{"sidecar socket too long", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nsocket_dir = \"/" + strings.Repeat("s", 100) + "\"", "is too long"},
		{"sidecar bad name", nil, "[providers.\"x y\"]\ntype = \"sidecar\"\nimage = \"i\"", `a sidecar's name must match`},
		{"sidecars share socket_dir", nil, "[providers.x]\ntype = \"sidecar\"\nimage = \"i\"\nsocket_dir = \"/run/s\"\n[providers.y]\ntype = \"sidecar\"\nimage = \"i\"\nsocket_dir = \"/run/s\"",
			`providers "x" and "y": two sidecars share socket_dir /run/s`},
		{"local with image", nil, "[providers.x]\ntype = \"local\"\nimage = \"i\"", `provider "x": image is only for type sidecar`},
		{"csi with sidecar keys", nil, "[providers.x]\ntype = \"csi\"\nendpoint = \"unix:///x.sock\"\ncommand = [\"a\"]\nsocket_dir = \"/s\"", `provider "x": command, socket_dir are only for type sidecar`},
		{"csi without endpoint", nil, "[providers.x]\ntype = \"csi\"", `provider "x": type csi needs an endpoint, as unix:///PATH`},
		{"csi relative endpoint", nil, "[providers.x]\ntype = \"csi\"\nendpoint = \"unix://run/x.sock\"",
			`provider "x": endpoint "unix://run/x.sock": use unix:///PATH with an absolute path`},
		{"csi bare path endpoint", nil, "[providers.x]\ntype = \"csi\"\nendpoint = \"/run/x.sock\"",
			`provider "x": endpoint "/run/x.sock": use unix:///PATH`},
		{"csi tcp endpoint", nil, "[providers.x]\ntype = \"csi\"\nendpoint = \"tcp://127.0.0.1:10000\"",
			`provider "x": endpoint "tcp://127.0.0.1:10000": use unix:///PATH`},
		{"csi empty path", nil, "[providers.x]\ntype = \"csi\"\nendpoint = \"unix://\"", `provider "x": endpoint "unix://": use unix:///PATH`},
		{"csi with root", nil, "[providers.x]\ntype = \"csi\"\nendpoint = \"unix:///run/x.sock\"\nroot = \"/srv\"",
			`provider "x": root is only for type local`},
		{"local with endpoint", nil, "[providers.x]\ntype = \"local\"\nendpoint = \"unix:///run/x.sock\"",
			`provider "x": endpoint is only for type csi`},
		{"implicit local with endpoint", nil, "[providers.local]\nendpoint = \"unix:///run/x.sock\"",
			`provider "local": endpoint is only for type csi`},
		{"missing default provider", nil, `default_provider = "ceph"`, `default provider "ceph" is not configured`},
		{"relative root", []string{"--root", "var/lib"}, "", "must be an absolute path"},
		{"bad level", []string{"--log-level", "loud"}, "", `log level "loud"`},
		{"bad format", []string{"--log-format", "xml"}, "", `log format "xml"`},
		{"argument", []string{"serve"}, "", `unexpected argument "serve"`},
		{"unknown flag", []string{"--colour"}, "", "flag provided but not defined"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if tc.file != "" {
				args = append(args, "--config", writeConfig(t, tc.file))
			}
			_, _, err := loadConfig(args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("loadConfig(%q) err = %v; want it to contain %q", args, err, tc.want)
			}
		})
	}
}

// TestOpenProviders wires a local provider in process and a csi provider
// served over a socket, and asks both who they are.
func TestOpenProviders(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "ext.sock")
	file := writeConfig(t, fmt.Sprintf("[providers.ext]\ntype = \"csi\"\nendpoint = \"unix://%s\"\n[providers.gone]\ntype = \"csi\"\nendpoint = \"unix://%s/gone.sock\"\n", sock, dir))
	cfg, _, err := loadConfig([]string{"--config", file, "--root", filepath.Join(dir, "root")}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}

	served, err := local.New(filepath.Join(dir, "served"), nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := csi.Listen("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	serveErr := make(chan error, 1)
	go func() { serveErr <- csi.NewServer(served, csi.ServerOptions{NodeID: "n1"}).Serve(ctx, l) }()
	defer func() {
		cancel()
		if err := <-serveErr; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()

	w, err := openProviders(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close(slog.New(slog.DiscardHandler))
	providers := w.providers
	if want := map[string]string{"local": "builtin", "ext": "csi", "gone": "csi"}; !maps.Equal(w.kinds, want) {
		t.Errorf("kinds = %v, want %v", w.kinds, want)
	}
	if len(w.sidecars) != 0 || len(w.status) != 0 {
		t.Errorf("sidecars without a sidecar provider: %d, %v", len(w.sidecars), w.status)
	}
	for name, want := range map[string]string{"local": local.Name, "ext": local.Name} {
		info, err := providers[name].Info(ctx)
		if err != nil || info.Name != want {
			t.Errorf("provider %s: Info = %+v, %v; want name %s", name, info, err, want)
		}
	}
	if err := providers["gone"].Probe(ctx); !errors.Is(err, volume.ErrUnavailable) || !strings.Contains(err.Error(), "not reachable") {
		t.Errorf("Probe of a csi provider without a driver = %v, want unavailable, not reachable", err)
	}
}

// TestExampleConfig keeps contrib/volumed.toml honest: as shipped it sets
// the defaults, and with its commented provider examples switched on it
// still loads.
func TestExampleConfig(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "contrib", "volumed.toml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _, err := loadConfig([]string{"--config", writeConfig(t, string(b))}, io.Discard)
	if err != nil {
		t.Fatalf("contrib/volumed.toml: %v", err)
	}
	want := defaults()
	if err := want.finish(); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("contrib/volumed.toml sets\n%+v\nwant the defaults\n%+v", cfg, want)
	}

	example := regexp.MustCompile(`(?m)^# (\[providers\.[a-z]+\]|[a-z_]+ = .*)$`)
	on := example.ReplaceAllString(string(b), "$1")
	cfg, _, err = loadConfig([]string{"--config", writeConfig(t, on)}, io.Discard)
	if err != nil {
		t.Fatalf("contrib/volumed.toml with its examples: %v\n%s", err, on)
	}
	if got := cfg.Providers["ext"]; got.Type != "csi" || got.kind() != "csi" {
		t.Errorf("example provider ext = %+v, want type csi", got)
	}
	if got := cfg.Providers["fast"]; got.Type != "local" || got.Root != "/nvme/stowage" {
		t.Errorf("example provider fast = %+v", got)
	}
	if got := cfg.Providers["side"]; got.Type != "sidecar" || got.Image != "stowage-provider" ||
		got.Endpoint != "unix:///run/stowage/sidecars/side/csi.sock" || got.MountDir != "/var/lib/stowage" || len(got.Command) != 6 {
		t.Errorf("example provider side = %+v", got)
	}
}

// TestLoadConfigSidecar: the keys of a sidecar provider and their
// defaults, which depend on the provider's name and volumed's root.
func TestLoadConfigSidecar(t *testing.T) {
	file := writeConfig(t, `
[providers.ext]
type = "sidecar"
image = "stowage-provider"
command = ["stow-provider", "local", "--endpoint", "unix:///csi/csi.sock", "--root", "/data"]
env = ["K=V", "EMPTY="]
[providers.mine]
type = "sidecar"
image = "vendor/driver:1"
socket_dir = "/run/drv/"
mount_dir = "/srv"
data_dir = "/srv/drv-data"
stow = "/opt/stowage/stow"
runtime_root = "/srv/runtime"
`)
	cfg, _, err := loadConfig([]string{"--config", file, "--root", "/srv/stowage"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		got  providerConfig
		want providerConfig
	}{
		{"defaults", cfg.Providers["ext"], providerConfig{
			Type: "sidecar", Image: "stowage-provider", Endpoint: "unix:///run/stowage/sidecars/ext/csi.sock",
			Command:   []string{"stow-provider", "local", "--endpoint", "unix:///csi/csi.sock", "--root", "/data"},
			Env:       []string{"K=V", "EMPTY="},
			SocketDir: "/run/stowage/sidecars/ext", MountDir: "/srv/stowage", DataDir: "/srv/stowage/ext",
			RuntimeRoot: "/srv/stowage/runtime",
		}},
		{"set", cfg.Providers["mine"], providerConfig{
			Type: "sidecar", Image: "vendor/driver:1", Endpoint: "unix:///run/drv/csi.sock",
			SocketDir: "/run/drv", MountDir: "/srv", DataDir: "/srv/drv-data",
			Stow: "/opt/stowage/stow", RuntimeRoot: "/srv/runtime",
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if !reflect.DeepEqual(tc.got, tc.want) {
				t.Errorf("provider =\n%+v\nwant\n%+v", tc.got, tc.want)
			}
			if tc.got.kind() != "sidecar" {
				t.Errorf("kind = %q, want sidecar", tc.got.kind())
			}
		})
	}
}

// TestOpenProvidersSidecar: a sidecar provider is a CSI client of its
// sidecar's endpoint, with a supervisor whose status the manager reads.
func TestOpenProvidersSidecar(t *testing.T) {
	dir := t.TempDir()
	file := writeConfig(t, fmt.Sprintf("[providers.ext]\ntype = \"sidecar\"\nimage = \"stowage-provider\"\nsocket_dir = %q\nstow = \"/opt/stow\"\n", filepath.Join(dir, "s")))
	cfg, _, err := loadConfig([]string{"--config", file, "--root", filepath.Join(dir, "root")}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	w, err := openProviders(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer w.close(slog.New(slog.DiscardHandler))
	if w.kinds["ext"] != "sidecar" || len(w.sidecars) != 1 || w.status["ext"] == nil {
		t.Fatalf("wiring = kinds %v, %d sidecars, status %v", w.kinds, len(w.sidecars), w.status)
	}
	if _, ok := w.providers["ext"].(*csi.Client); !ok {
		t.Errorf("provider ext is %T, want *csi.Client", w.providers["ext"])
	}
	if st, _, _ := w.status["ext"].Status(); st != "starting" {
		t.Errorf("state before Run = %q, want starting", st)
	}
}

func TestStowPath(t *testing.T) {
	if got, err := stowPath("/opt/stow"); got != "/opt/stow" || err != nil {
		t.Errorf("stowPath(/opt/stow) = %q, %v", got, err)
	}
	bin := t.TempDir()
	if err := os.WriteFile(filepath.Join(bin, "stow"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	// The test binary has no stow beside it, so PATH decides.
	if got, err := stowPath(""); got != filepath.Join(bin, "stow") || err != nil {
		t.Errorf("stowPath() = %q, %v; want the one on PATH", got, err)
	}
	t.Setenv("PATH", t.TempDir())
	if _, err := stowPath(""); err == nil || !strings.Contains(err.Error(), "set stow =") {
		t.Errorf("stowPath() without a stow = %v", err)
	}
}
