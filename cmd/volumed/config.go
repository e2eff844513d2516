package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
)

// config is volumed's configuration: defaults, then the config file, then
// flags given on the command line.
type config struct {
	Root            string                    `toml:"root"`
	PluginSocket    string                    `toml:"plugin_socket"`
	APISocket       string                    `toml:"api_socket"`
	MetricsAddr     string                    `toml:"metrics_addr"`
	LogLevel        string                    `toml:"log_level"`
	LogFormat       string                    `toml:"log_format"`
	DefaultProvider string                    `toml:"default_provider"`
	ProbeInterval   duration                  `toml:"probe_interval"`
	Providers       map[string]providerConfig `toml:"providers"`
}

// providerConfig configures one provider.
type providerConfig struct {
	// Type is "local" (built in, run inside volumed) or "csi" (a CSI
	// driver at Endpoint); default the provider's name.
	Type string `toml:"type"`
	// Root is where a local provider keeps its volumes; default ROOT/NAME.
	Root string `toml:"root"`
	// Endpoint is a csi provider's socket, as unix:///PATH.
	Endpoint string `toml:"endpoint"`
}

// Provider types.
const (
	typeLocal   = "local"
	typeCSI     = "csi"
	typeSidecar = "sidecar"
)

// providerTypes lists the types a config may name, for error messages.
const providerTypes = typeLocal + ", " + typeCSI

// kind is where the provider runs, as `stow provider ls` shows it.
func (p providerConfig) kind() string {
	if p.Type == typeCSI {
		return "csi"
	}
	return "builtin"
}

// check validates p, named name, and fills in its defaults; root is
// volumed's root.
func (p *providerConfig) check(name, root string) error {
	if p.Type == "" {
		p.Type = name
	}
	switch p.Type {
	case typeLocal:
		if p.Endpoint != "" {
			return fmt.Errorf("provider %q: endpoint is only for type csi (type local keeps its volumes under root)", name)
		}
		if p.Root == "" {
			p.Root = filepath.Join(root, name)
		}
	case typeCSI:
		if p.Root != "" {
			return fmt.Errorf("provider %q: root is only for type local (a csi provider keeps its volumes itself)", name)
		}
		if p.Endpoint == "" {
			return fmt.Errorf("provider %q: type csi needs an endpoint, as unix:///PATH", name)
		}
		if path, ok := strings.CutPrefix(p.Endpoint, "unix://"); !ok || !filepath.IsAbs(path) {
			return fmt.Errorf("provider %q: endpoint %q: use unix:///PATH with an absolute path", name, p.Endpoint)
		}
	case typeSidecar:
		return fmt.Errorf("provider %q: type sidecar is not supported yet (types: %s)", name, providerTypes)
	default:
		return fmt.Errorf("provider %q: unknown type %q (types: %s)", name, p.Type, providerTypes)
	}
	return nil
}

// duration reads "15s"-style values from TOML.
type duration struct{ time.Duration }

func (d *duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	if err != nil {
		return fmt.Errorf("duration %q: use a number with a unit, e.g. 15s or 1m", b)
	}
	d.Duration = v
	return nil
}

func defaults() config {
	return config{
		Root:            "/var/lib/stowage",
		PluginSocket:    "/run/docker/plugins/stowage.sock",
		APISocket:       "/run/stowage/volumed.sock",
		MetricsAddr:     "127.0.0.1:9163",
		LogLevel:        "info",
		LogFormat:       "text",
		DefaultProvider: "local",
		ProbeInterval:   duration{15 * time.Second},
	}
}

// loadConfig parses args (without the program name).
func loadConfig(args []string, stderr io.Writer) (config, bool, error) {
	cfg := defaults()
	fs := flag.NewFlagSet("volumed", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		file    string
		version bool
		flagCfg config
	)
	fs.StringVar(&file, "config", "", "configuration file (TOML)")
	fs.StringVar(&flagCfg.Root, "root", cfg.Root, "state root: database, mount points, local volumes")
	fs.StringVar(&flagCfg.PluginSocket, "plugin-socket", cfg.PluginSocket, "Docker volume plugin socket")
	fs.StringVar(&flagCfg.APISocket, "api-socket", cfg.APISocket, "control API socket, used by stow")
	fs.StringVar(&flagCfg.MetricsAddr, "metrics-addr", cfg.MetricsAddr, "Prometheus metrics HOST:PORT; empty turns metrics off")
	fs.StringVar(&flagCfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.StringVar(&flagCfg.LogFormat, "log-format", cfg.LogFormat, "text or json")
	fs.BoolVar(&version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: volumed [flags]\n\nvolumed serves stowage volumes to Docker and stow.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, false, err
	}
	if fs.NArg() > 0 {
		return cfg, false, fmt.Errorf("unexpected argument %q (volumed takes only flags)", fs.Arg(0))
	}
	if version {
		return cfg, true, nil
	}
	if file != "" {
		md, err := toml.DecodeFile(file, &cfg)
		if err != nil {
			return cfg, false, fmt.Errorf("read config %s: %w", file, err)
		}
		if und := md.Undecoded(); len(und) > 0 {
			keys := make([]string, len(und))
			for i, k := range und {
				keys[i] = k.String()
			}
			return cfg, false, fmt.Errorf("config %s: unknown keys %s (valid: root, plugin_socket, api_socket, metrics_addr, log_level, log_format, default_provider, probe_interval, [providers.NAME] type, root, endpoint)",
				file, strings.Join(keys, ", "))
		}
	}
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "root":
			cfg.Root = flagCfg.Root
		case "plugin-socket":
			cfg.PluginSocket = flagCfg.PluginSocket
		case "api-socket":
			cfg.APISocket = flagCfg.APISocket
		case "metrics-addr":
			cfg.MetricsAddr = flagCfg.MetricsAddr
		case "log-level":
			cfg.LogLevel = flagCfg.LogLevel
		case "log-format":
			cfg.LogFormat = flagCfg.LogFormat
		}
	})
	return cfg, false, cfg.finish()
}

// finish checks cfg and fills in what depends on other settings.
func (c *config) finish() error {
	var errs []error
	for name, p := range map[string]string{"root": c.Root, "plugin socket": c.PluginSocket, "API socket": c.APISocket} {
		if !filepath.IsAbs(p) {
			errs = append(errs, fmt.Errorf("%s %q must be an absolute path", name, p))
		}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		errs = append(errs, fmt.Errorf("log format %q: use text or json", c.LogFormat))
	}
	if c.Providers == nil {
		c.Providers = map[string]providerConfig{}
	}
	if _, ok := c.Providers["local"]; !ok {
		c.Providers["local"] = providerConfig{Type: typeLocal}
	}
	names := make([]string, 0, len(c.Providers))
	for name, p := range c.Providers {
		names = append(names, name)
		if err := p.check(name, c.Root); err != nil {
			errs = append(errs, err)
		}
		c.Providers[name] = p
	}
	sort.Strings(names)
	if _, ok := c.Providers[c.DefaultProvider]; !ok {
		errs = append(errs, fmt.Errorf("default provider %q is not configured (configured: %s)", c.DefaultProvider, strings.Join(names, ", ")))
	}
	if c.ProbeInterval.Duration <= 0 {
		errs = append(errs, errors.New("probe_interval must be positive"))
	}
	return errors.Join(errs...)
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log level %q: use debug, info, warn or error", s)
	}
	return l, nil
}

func newLogger(c config) *slog.Logger {
	level, _ := parseLevel(c.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}
