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
		{"unknown provider type", nil, "[providers.x]\ntype = \"nfs\"", `provider "x": unknown type "nfs" (types: local, csi)`},
		{"provider name as unknown type", nil, "[providers.fast]\nroot = \"/nvme\"", `provider "fast": unknown type "fast" (types: local, csi)`},
		{"unknown provider key", nil, "[providers.x]\ntype = \"csi\"\nsocket = \"/run/x.sock\"",
			"unknown keys providers.x.socket (valid: root, plugin_socket, api_socket, metrics_addr, log_level, log_format, default_provider, probe_interval, [providers.NAME] type, root, endpoint)"},
		{"sidecar", nil, "[providers.x]\ntype = \"sidecar\"", `provider "x": type sidecar is not supported yet (types: local, csi)`},
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

	providers, kinds, closeProviders, err := openProviders(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer closeProviders()
	if want := map[string]string{"local": "builtin", "ext": "csi", "gone": "csi"}; !maps.Equal(kinds, want) {
		t.Errorf("kinds = %v, want %v", kinds, want)
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
}
