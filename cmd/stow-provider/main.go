// Command stow-provider serves a built-in stowage provider as a CSI driver
// (Identity, Controller and Node services) on a unix socket, until SIGTERM
// or SIGINT stop it gracefully:
//
//	stow-provider TYPE --endpoint unix:///PATH --root DIR [--name NAME] [--node-id ID] [--log-level LEVEL]
//
// `stow provider serve` runs it. It is a program of its own so that stow,
// whose every start counts when it starts containers, links no gRPC.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/stowage/stowage/plugins/csi"
	"github.com/stowage/stowage/plugins/local"
	"github.com/stowage/stowage/plugins/volume"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Types are the provider types stow-provider serves.
var types = []string{"local"}

// options are the command line of stow-provider.
type options struct {
	typ      string
	endpoint string
	root     string
	name     string
	nodeID   string
	level    slog.Level
}

func main() {
	o, err := parse(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "stow-provider: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, o, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "stow-provider: %v\n", err)
		os.Exit(1)
	}
}

// parse reads TYPE and the flags after it.
func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fmt.Fprintf(stderr, "Usage: stow-provider TYPE --endpoint unix:///PATH --root DIR [flags]\nTypes: %s\n", strings.Join(types, ", "))
			return o, flag.ErrHelp
		}
		return o, fmt.Errorf("missing provider type (types: %s)", strings.Join(types, ", "))
	}
	o.typ = args[0]
	if !slices.Contains(types, o.typ) {
		return o, fmt.Errorf("unknown provider type %q (types: %s)", o.typ, strings.Join(types, ", "))
	}
	fs := flag.NewFlagSet("stow-provider "+o.typ, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.endpoint, "endpoint", "", "CSI socket as unix:///PATH (required)")
	fs.StringVar(&o.root, "root", "", "directory where the provider keeps its volumes (required)")
	fs.StringVar(&o.name, "name", "", "CSI driver name reported by GetPluginInfo (default: the provider's, "+local.Name+" for local)")
	fs.StringVar(&o.nodeID, "node-id", "", "CSI node ID reported by NodeGetInfo (default: the host name)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args[1:]); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.endpoint == "":
		return o, errors.New("--endpoint is required, as unix:///PATH")
	case o.root == "":
		return o, errors.New("--root is required")
	}
	if err := o.level.UnmarshalText([]byte(*level)); err != nil {
		return o, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", *level)
	}
	return o, nil
}

// serve serves the provider o names until ctx is done.
func serve(ctx context.Context, o options, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.level}))
	p, err := newProvider(o.typ, o.root, log.With("provider", o.typ))
	if err != nil {
		return err
	}
	l, err := csi.Listen(o.endpoint)
	if err != nil {
		return err
	}
	// Name, version and node ID default to the provider's and the host's.
	srv := csi.NewServer(p, csi.ServerOptions{Name: o.name, NodeID: o.nodeID, Logger: log})
	log.Info("serving provider over CSI", "provider", o.typ, "endpoint", o.endpoint, "root", o.root, "version", version)
	if err := srv.Serve(ctx, l); err != nil {
		return err
	}
	log.Info("stopped", "provider", o.typ)
	return nil
}

// newProvider constructs a provider of type typ.
func newProvider(typ, root string, log *slog.Logger) (volume.Provider, error) {
	switch typ {
	case "local":
		p, err := local.New(root, log)
		if err != nil {
			return nil, fmt.Errorf("local provider: %w", err)
		}
		return p, nil
	}
	return nil, fmt.Errorf("unknown provider type %q (types: %s)", typ, strings.Join(types, ", "))
}
