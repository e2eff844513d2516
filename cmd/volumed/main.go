// Command volumed is stowage's volume daemon: it serves the Docker volume
// plugin protocol and stowage's control API, keeps volume state under its
// root and exports Prometheus metrics.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/stowage/stowage/plugins/csi"
	"github.com/stowage/stowage/plugins/local"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/control"
	"github.com/stowage/stowage/volumed/manager"
	"github.com/stowage/stowage/volumed/metrics"
	"github.com/stowage/stowage/volumed/plugin"
	"github.com/stowage/stowage/volumed/sidecar"
	"github.com/stowage/stowage/volumed/store"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	cfg, showVersion, err := loadConfig(os.Args[1:], os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "volumed: %v\n", err)
		os.Exit(2)
	}
	if showVersion {
		fmt.Println("volumed", version)
		return
	}
	log := newLogger(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("volumed stopped", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx is done. Mounts stay in place when it returns:
// containers that use them keep working, and the next volumed takes over.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	started := time.Now()
	if err := os.MkdirAll(cfg.Root, 0o755); err != nil {
		return fmt.Errorf("create root: %w", err)
	}
	st, err := store.Open(filepath.Join(cfg.Root, "volumed.db"), time.Second)
	if err != nil {
		return err
	}
	defer st.Close()
	// Take the sockets before anything else: a second volumed stops here.
	apiL, err := control.Listen(cfg.APISocket)
	if err != nil {
		return fmt.Errorf("API socket: %w", err)
	}
	defer apiL.Close()
	plugL, err := control.Listen(cfg.PluginSocket)
	if err != nil {
		return fmt.Errorf("plugin socket: %w", err)
	}
	defer plugL.Close()

	w, err := openProviders(cfg, log)
	if err != nil {
		return err
	}
	defer w.close(log)
	m, err := manager.New(manager.Options{
		Root:            cfg.Root,
		Store:           st,
		Providers:       w.providers,
		Kinds:           w.kinds,
		Status:          w.status,
		DefaultProvider: cfg.DefaultProvider,
		Logger:          log,
		ProbeInterval:   cfg.ProbeInterval.Duration,
	})
	if err != nil {
		return err
	}

	var wg sync.WaitGroup // every server and loop below
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
	// Sidecars start (or are adopted) first, so that reconcile and the
	// first probe find them. When volumed stops they keep running, with
	// the mounts they made; the next volumed adopts them.
	for _, sup := range w.sidecars {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sup.Run(ctx)
		}()
	}
	waitSidecars(ctx, w.sidecars, sidecarStartWait)
	if err := m.Reconcile(ctx); err != nil {
		log.Warn("reconcile", "err", err)
	}
	m.ProbeAll(ctx)

	mx := metrics.New(m, metrics.Options{Version: version, Logger: log})

	goServe := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	goServe("supervisor", func() error { m.Run(ctx); return nil })

	if cfg.MetricsAddr != "" {
		l, err := net.Listen("tcp", cfg.MetricsAddr)
		if err != nil {
			return fmt.Errorf("listen for metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", mx.Handler())
		goServe("metrics", func() error { return serveHTTP(ctx, l, mux) })
	}

	info := control.Info{
		Version: version, Root: cfg.Root, PluginSocket: cfg.PluginSocket, APISocket: cfg.APISocket,
		MetricsAddr: cfg.MetricsAddr, StartedAt: started, PID: os.Getpid(),
	}
	goServe("control API", func() error { return serveHTTP(ctx, apiL, control.New(m, info, log)) })

	drv := plugin.New(m, plugin.Options{
		SlowTimeout: cfg.CreateMountTimeout.Duration, Timeout: cfg.RequestTimeout.Duration,
		Observer: mx, Logger: log,
	})
	defer drv.Close()
	goServe("plugin", func() error { return drv.Serve(ctx, plugL) })

	log.Info("volumed ready", "version", version, "root", cfg.Root, "plugin_socket", cfg.PluginSocket,
		"api_socket", cfg.APISocket, "metrics_addr", cfg.MetricsAddr)
	var runErr error
	select {
	case <-ctx.Done():
		log.Info("stopping; mounts stay in place")
	case runErr = <-errc:
	}
	cancel()
	return runErr
}

// wiring is what openProviders makes of the configured providers.
type wiring struct {
	providers map[string]volume.Provider
	kinds     map[string]string // for manager.Options.Kinds
	status    map[string]manager.ProviderStatus
	sidecars  []*sidecar.Supervisor // Run each until volumed stops
	clients   []*csi.Client
}

// close closes the CSI clients.
func (w *wiring) close(log *slog.Logger) {
	for _, c := range w.clients {
		if err := c.Close(); err != nil {
			log.Warn("close CSI client", "err", err)
		}
	}
}

// openProviders constructs the configured providers: local ones in process,
// csi ones as clients of their endpoints, sidecar ones as clients of their
// sidecar's endpoint with a supervisor that runs the sidecar. Connecting is
// lazy, so a CSI driver that is not up yet shows as down until it answers,
// and a client reconnects after its driver restarted.
func openProviders(cfg config, log *slog.Logger) (*wiring, error) {
	w := &wiring{providers: map[string]volume.Provider{}, kinds: map[string]string{}, status: map[string]manager.ProviderStatus{}}
	for name, pc := range cfg.Providers {
		plog := log.With("provider", name)
		w.kinds[name] = pc.kind()
		var err error
		switch pc.Type {
		case typeCSI, typeSidecar:
			var c *csi.Client
			if c, err = csi.Dial(pc.Endpoint, csi.ClientOptions{Logger: plog}); err != nil {
				break
			}
			w.clients = append(w.clients, c)
			w.providers[name] = c
			if pc.Type == typeSidecar {
				var stow string
				if stow, err = stowPath(pc.Stow); err != nil {
					break
				}
				sup := sidecar.New(sidecar.Options{
					Config: sidecar.Config{
						Name: name, Image: pc.Image, Command: pc.Command, Env: pc.Env,
						SocketDir: pc.SocketDir, MountDir: pc.MountDir, DataDir: pc.DataDir,
						Stow: stow, RuntimeRoot: pc.RuntimeRoot,
					},
					Prober: c,
					Logger: plog,
				})
				w.sidecars = append(w.sidecars, sup)
				w.status[name] = sup
			}
		default: // typeLocal; the config admits no other
			w.providers[name], err = local.New(pc.Root, plog)
		}
		if err != nil {
			w.close(log)
			return nil, fmt.Errorf("provider %q: %w", name, err)
		}
	}
	return w, nil
}

// stowPath returns the stow binary that runs sidecars: the configured one,
// else the one beside volumed's executable, else the one on PATH.
func stowPath(configured string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "stow")
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath("stow")
	if err != nil {
		return "", errors.New(`no stow binary to run the sidecar with: none beside volumed, none on PATH; set stow = "/path/to/stow"`)
	}
	return p, nil
}

// sidecarStartWait bounds how long volumed waits at start for its sidecars
// to come up before it reconciles and serves; those still starting then
// show as starting, and mounts wait for them.
const sidecarStartWait = 30 * time.Second

// waitSidecars waits until every sidecar has left the starting state, ctx
// is done or timeout passes.
func waitSidecars(ctx context.Context, sups []*sidecar.Supervisor, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, s := range sups {
		for {
			changed := s.Changed()
			if st, _, _ := s.Status(); st != sidecar.StateStarting {
				break
			}
			select {
			case <-changed:
				continue
			case <-ctx.Done():
				return
			}
		}
	}
}

// serveHTTP serves h on l until ctx is done, then shuts down gracefully.
func serveHTTP(ctx context.Context, l net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
