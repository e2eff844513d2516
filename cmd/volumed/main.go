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

	providers, kinds, closeProviders, err := openProviders(cfg, log)
	if err != nil {
		return err
	}
	defer closeProviders()
	m, err := manager.New(manager.Options{
		Root:            cfg.Root,
		Store:           st,
		Providers:       providers,
		Kinds:           kinds,
		DefaultProvider: cfg.DefaultProvider,
		Logger:          log,
		ProbeInterval:   cfg.ProbeInterval.Duration,
	})
	if err != nil {
		return err
	}
	if err := m.Reconcile(ctx); err != nil {
		log.Warn("reconcile", "err", err)
	}
	m.ProbeAll(ctx)

	mx := metrics.New(m, metrics.Options{Version: version, Logger: log})

	var wg sync.WaitGroup // every server and loop below
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 4)
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

	drv := plugin.New(m, plugin.Options{Observer: mx, Logger: log})
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

// openProviders constructs the configured providers: local ones in process,
// csi ones as clients of their endpoints. Connecting is lazy, so a CSI
// driver that is not up yet shows as down until it answers. It returns each
// provider's kind for manager.Options.Kinds and a function that closes the
// CSI clients.
func openProviders(cfg config, log *slog.Logger) (map[string]volume.Provider, map[string]string, func(), error) {
	providers := map[string]volume.Provider{}
	kinds := map[string]string{}
	var clients []*csi.Client
	closeAll := func() {
		for _, c := range clients {
			if err := c.Close(); err != nil {
				log.Warn("close CSI client", "err", err)
			}
		}
	}
	for name, pc := range cfg.Providers {
		plog := log.With("provider", name)
		kinds[name] = pc.kind()
		switch pc.Type {
		case typeCSI:
			c, err := csi.Dial(pc.Endpoint, csi.ClientOptions{Logger: plog})
			if err != nil {
				closeAll()
				return nil, nil, nil, fmt.Errorf("provider %q: %w", name, err)
			}
			clients = append(clients, c)
			providers[name] = c
		default: // typeLocal; the config admits no other
			p, err := local.New(pc.Root, plog)
			if err != nil {
				closeAll()
				return nil, nil, nil, fmt.Errorf("provider %q: %w", name, err)
			}
			providers[name] = p
		}
	}
	return providers, kinds, closeAll, nil
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
