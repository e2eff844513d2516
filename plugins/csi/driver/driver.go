// Package driver is what stowage's CSI driver programs (stow-provider,
// stow-rbd) share: the flags every driver takes, serving a provider on a
// unix socket, and a main that stops gracefully on SIGTERM or SIGINT.
package driver

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/stowage/stowage/plugins/csi"
	"github.com/stowage/stowage/plugins/volume"
)

// Flags are the flags every driver program takes.
type Flags struct {
	Endpoint string     // --endpoint unix:///PATH
	Name     string     // --name, the CSI driver name; "" for the provider's
	NodeID   string     // --node-id; "" for the host name
	Level    slog.Level // --log-level
	level    string
}

// Register adds --endpoint, --name, --node-id and --log-level to fs;
// defaultName is the driver name --name's help gives as the default.
func (f *Flags) Register(fs *flag.FlagSet, defaultName string) {
	fs.StringVar(&f.Endpoint, "endpoint", "", "CSI socket as unix:///PATH (required)")
	fs.StringVar(&f.Name, "name", "", "CSI driver name reported by GetPluginInfo (default: "+defaultName+")")
	fs.StringVar(&f.NodeID, "node-id", "", "CSI node ID reported by NodeGetInfo (default: the host name)")
	fs.StringVar(&f.level, "log-level", "info", "debug, info, warn or error")
}

// Check validates the flags after fs.Parse: no arguments left, an
// endpoint, a known log level.
func (f *Flags) Check(fs *flag.FlagSet) error {
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case f.Endpoint == "":
		return errors.New("--endpoint is required, as unix:///PATH")
	}
	if err := f.Level.UnmarshalText([]byte(f.level)); err != nil {
		return fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", f.level)
	}
	return nil
}

// Logger is the text logger at the flags' level, on w.
func (f *Flags) Logger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: f.Level}))
}

// Serve serves p over CSI at the flags' endpoint until ctx is done.
// version is what GetPluginInfo reports ("" for the provider's own); attrs
// go into the log line that says it is serving.
func Serve(ctx context.Context, p volume.Provider, f Flags, version string, log *slog.Logger, attrs ...any) error {
	l, err := csi.Listen(f.Endpoint)
	if err != nil {
		return err
	}
	// Name and node ID default to the provider's and the host's.
	srv := csi.NewServer(p, csi.ServerOptions{Name: f.Name, Version: version, NodeID: f.NodeID, Logger: log})
	log.Info("serving provider over CSI", append([]any{"endpoint", f.Endpoint}, attrs...)...)
	if err := srv.Serve(ctx, l); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// Main runs a driver program called prog: parse reads os.Args[1:] (a bad
// command line exits 2, flag.ErrHelp 0), then serve runs until SIGTERM or
// SIGINT (a failure exits 1).
func Main[O any](prog string, parse func(args []string, stderr io.Writer) (O, error), serve func(ctx context.Context, o O, stderr io.Writer) error) {
	o, err := parse(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, o, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", prog, err)
		os.Exit(1)
	}
}
