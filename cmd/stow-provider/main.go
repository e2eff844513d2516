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
	"slices"
	"strings"

	"github.com/stowage/stowage/plugins/csi/driver"
	"github.com/stowage/stowage/plugins/local"
	"github.com/stowage/stowage/plugins/volume"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Types are the provider types stow-provider serves.
var types = []string{"local"}

// options are the command line of stow-provider.
type options struct {
	driver.Flags
	typ  string
	root string
}

func main() { driver.Main("stow-provider", parse, serve) }

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
	o.Register(fs, "the provider's, "+local.Name+" for local")
	fs.StringVar(&o.root, "root", "", "directory where the provider keeps its volumes (required)")
	if err := fs.Parse(args[1:]); err != nil {
		return o, err
	}
	if err := o.Check(fs); err != nil {
		return o, err
	}
	if o.root == "" {
		return o, errors.New("--root is required")
	}
	return o, nil
}

// serve serves the provider o names until ctx is done.
func serve(ctx context.Context, o options, stderr io.Writer) error {
	log := o.Logger(stderr)
	p, err := newProvider(o.typ, o.root, log.With("provider", o.typ))
	if err != nil {
		return err
	}
	// The version GetPluginInfo reports is the provider's.
	return driver.Serve(ctx, p, o.Flags, "", log, "provider", o.typ, "root", o.root, "version", version)
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
