package main

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
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
		{"unknown provider type", nil, "[providers.x]\ntype = \"nfs\"", `unknown type "nfs"`},
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
