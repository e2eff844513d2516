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

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/plugin"
)

// config is volumed's configuration: defaults, then the config file, then
// flags given on the command line.
type config struct {
	Root            string   `toml:"root"`
	PluginSocket    string   `toml:"plugin_socket"`
	APISocket       string   `toml:"api_socket"`
	MetricsAddr     string   `toml:"metrics_addr"`
	LogLevel        string   `toml:"log_level"`
	LogFormat       string   `toml:"log_format"`
	DefaultProvider string   `toml:"default_provider"`
	ProbeInterval   duration `toml:"probe_interval"`
	// CreateMountTimeout and RequestTimeout bound the plugin requests
	// dockerd sends: Create and Mount, and every other one. Each must stay
	// below dockerd's own deadline for them, so that a provider that does
	// not answer gives the user volumed's error naming it.
	CreateMountTimeout duration                  `toml:"create_mount_timeout"`
	RequestTimeout     duration                  `toml:"request_timeout"`
	Providers          map[string]providerConfig `toml:"providers"`
}

// providerConfig configures one provider.
type providerConfig struct {
	// Type is "local" (built in, run inside volumed), "csi" (a CSI driver
	// at Endpoint) or "sidecar" (a CSI driver in a container volumed
	// runs); default the provider's name.
	Type string `toml:"type"`
	// Root is where a local provider keeps its volumes; default ROOT/NAME.
	Root string `toml:"root"`
	// Endpoint is a csi provider's socket, as unix:///PATH; for a
	// sidecar, volumed sets it to unix://SOCKET_DIR/csi.sock.
	Endpoint string `toml:"endpoint"`

	// The keys of type sidecar; see volumed/sidecar.Config.
	Image   string   `toml:"image"`
	Command []string `toml:"command"`
	Env     []string `toml:"env"`
	// SocketDir is bound at /csi; default /run/stowage/sidecars/NAME.
	SocketDir string `toml:"socket_dir"`
	// MountDir is bound at the same path, rshared; default ROOT, and it
	// must hold ROOT.
	MountDir string `toml:"mount_dir"`
	// DataDir is bound at /data; default ROOT/NAME.
	DataDir string `toml:"data_dir"`
	// Stow is the stow binary; empty means the one beside volumed, else
	// the one on PATH (see stowPath).
	Stow string `toml:"stow"`
	// RuntimeRoot is stow's --root; default ROOT/runtime.
	RuntimeRoot string `toml:"runtime_root"`
}

// Provider types.
const (
	typeLocal   = "local"
	typeCSI     = "csi"
	typeSidecar = "sidecar"
)

// providerTypes lists the types a config may name, for error messages.
const providerTypes = typeLocal + ", " + typeCSI + ", " + typeSidecar

// validKeys lists the config keys, for the error about unknown ones.
const validKeys = "root, plugin_socket, api_socket, metrics_addr, log_level, log_format, default_provider, probe_interval, " +
	"create_mount_timeout, request_timeout, " +
	"[providers.NAME] type, root, endpoint, image, command, env, socket_dir, mount_dir, data_dir, stow, runtime_root"

// sidecarSocketDir is the parent of the default socket_dir of a sidecar.
const sidecarSocketDir = "/run/stowage/sidecars"

// maxSocketPath is the longest path a unix socket address holds on Linux.
const maxSocketPath = 107

// kind is where the provider runs, as `stow provider ls` shows it.
func (p providerConfig) kind() string {
	switch p.Type {
	case typeCSI, typeSidecar:
		return p.Type
	}
	return "builtin"
}

// sidecarKeys returns the sidecar keys p sets, for errors about them on
// other types.
func (p providerConfig) sidecarKeys() []string {
	var keys []string
	for _, k := range []struct {
		name string
		set  bool
	}{
		{"image", p.Image != ""}, {"command", p.Command != nil}, {"env", p.Env != nil},
		{"socket_dir", p.SocketDir != ""}, {"mount_dir", p.MountDir != ""}, {"data_dir", p.DataDir != ""},
		{"stow", p.Stow != ""}, {"runtime_root", p.RuntimeRoot != ""},
	} {
		if k.set {
			keys = append(keys, k.name)
		}
	}
	return keys
}

// check validates p, named name, and fills in its defaults; root is
// volumed's root.
func (p *providerConfig) check(name, root string) error {
	if p.Type == "" {
		p.Type = name
	}
	if keys := p.sidecarKeys(); len(keys) > 0 && p.Type != typeSidecar {
		return fmt.Errorf("provider %q: %s only for type sidecar", name, strings.Join(keys, ", ")+plural(len(keys), " is", " are"))
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
		return p.checkSidecar(name, root)
	default:
		return fmt.Errorf("provider %q: unknown type %q (types: %s)", name, p.Type, providerTypes)
	}
	return nil
}

// checkSidecar validates a sidecar's keys and fills in their defaults.
func (p *providerConfig) checkSidecar(name, root string) error {
	if p.Root != "" || p.Endpoint != "" {
		return fmt.Errorf("provider %q: root and endpoint are not for type sidecar (data_dir holds its volumes; it listens in socket_dir)", name)
	}
	// A sidecar's container is named stowage-sidecar-NAME.
	if !volume.ValidName(name) {
		return fmt.Errorf("provider %q: a sidecar's name must match "+volume.NameRule+" (its container is stowage-sidecar-NAME)", name)
	}
	if p.Image == "" {
		return fmt.Errorf("provider %q: type sidecar needs an image, e.g. image = \"stowage-provider\" (make provider-image)", name)
	}
	for _, e := range p.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			return fmt.Errorf("provider %q: env %q: use KEY=VALUE", name, e)
		}
	}
	defaults := []struct {
		key string
		v   *string
		def string
	}{
		{"socket_dir", &p.SocketDir, filepath.Join(sidecarSocketDir, name)},
		{"mount_dir", &p.MountDir, root},
		{"data_dir", &p.DataDir, filepath.Join(root, name)},
		{"runtime_root", &p.RuntimeRoot, filepath.Join(root, "runtime")},
		{"stow", &p.Stow, ""},
	}
	for _, d := range defaults {
		if *d.v == "" {
			*d.v = d.def
			continue
		}
		if !filepath.IsAbs(*d.v) {
			return fmt.Errorf("provider %q: %s %q must be an absolute path", name, d.key, *d.v)
		}
		*d.v = filepath.Clean(*d.v)
	}
	// volumed hands the driver ROOT/staging/NAME and ROOT/mounts/NAME,
	// host paths, which the container sees only below mount_dir.
	if rel, err := filepath.Rel(p.MountDir, root); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("provider %q: mount_dir %q must be volumed's root %q or hold it: volumed stages and mounts volumes below its root", name, p.MountDir, root)
	}
	if p.MountDir == "/" {
		return fmt.Errorf("provider %q: mount_dir / would share the whole host; use volumed's root", name)
	}
	for _, d := range []struct{ key, v string }{{"socket_dir", p.SocketDir}, {"data_dir", p.DataDir}} {
		if d.v == "/" {
			return fmt.Errorf("provider %q: %s must not be /", name, d.key)
		}
	}
	p.Endpoint = sidecarEndpoint(p.SocketDir)
	if sock := strings.TrimPrefix(p.Endpoint, "unix://"); len(sock) > maxSocketPath {
		return fmt.Errorf("provider %q: socket_dir %q is too long: the socket %s needs at most %d bytes", name, p.SocketDir, sock, maxSocketPath)
	}
	return nil
}

// sidecarEndpoint is the endpoint volumed dials for a sidecar whose driver
// listens on /csi/csi.sock, SOCKET_DIR bound at /csi.
func sidecarEndpoint(socketDir string) string {
	return "unix://" + filepath.Join(socketDir, "csi.sock")
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
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

		CreateMountTimeout: duration{plugin.DefaultSlowTimeout},
		RequestTimeout:     duration{plugin.DefaultTimeout},
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
			return cfg, false, fmt.Errorf("config %s: unknown keys %s (valid: %s)", file, strings.Join(keys, ", "), validKeys)
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
	sockets := map[string]string{}
	for _, name := range names {
		if p := c.Providers[name]; p.Type == typeSidecar {
			if other, ok := sockets[p.SocketDir]; ok {
				errs = append(errs, fmt.Errorf("providers %q and %q: two sidecars share socket_dir %s", other, name, p.SocketDir))
			}
			sockets[p.SocketDir] = name
		}
	}
	if _, ok := c.Providers[c.DefaultProvider]; !ok {
		errs = append(errs, fmt.Errorf("default provider %q is not configured (configured: %s)", c.DefaultProvider, strings.Join(names, ", ")))
	}
	if c.ProbeInterval.Duration <= 0 {
		errs = append(errs, errors.New("probe_interval must be positive"))
	}
	for _, t := range []struct {
		key    string
		v      time.Duration
		docker time.Duration
		what   string
	}{
		{"create_mount_timeout", c.CreateMountTimeout.Duration, plugin.DockerSlowDeadline, "Create and Mount"},
		{"request_timeout", c.RequestTimeout.Duration, plugin.DockerDeadline, "every other request"},
	} {
		if t.v <= 0 || t.v >= t.docker {
			errs = append(errs, fmt.Errorf("%s %s: use a duration above 0 and below %s, dockerd's deadline for %s",
				t.key, t.v, t.docker, t.what))
		}
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
