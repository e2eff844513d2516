// Command stow-rbd serves stowage's Ceph RBD provider as a CSI driver
// (Identity, Controller and Node services) on a unix socket, until SIGTERM
// or SIGINT stop it gracefully:
//
//	stow-rbd --endpoint unix:///PATH --ceph-conf FILE [--keyring FILE] --pool POOL [--host-id ID] [flags]
//
// It needs cgo and Ceph's client libraries and is built with the build
// tags ceph and pacific (`make build-rbd`); volumed and stow stay static,
// cgo-free binaries and reach it over CSI. The key in the keyring never
// shows in its log or errors: it hands the keyring's path to librados.
//
// It serves the data of staged volumes in-process: stopping it while a
// volume is published leaves that volume's I/O failing until the volume is
// unstaged and staged again, so stop it after its consumers.
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
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// options are the command line of stow-rbd.
type options struct {
	endpoint  string
	conf      string
	keyring   string
	user      string
	pool      string
	namespace string
	hostID    string
	runDir    string
	name      string
	nodeID    string
	level     slog.Level
}

func main() {
	o, err := parse(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "stow-rbd: %v\n", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := serve(ctx, o, os.Stderr); err != nil {
		fmt.Fprintf(os.Stderr, "stow-rbd: %v\n", err)
		os.Exit(1)
	}
}

// parse reads the flags.
func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("stow-rbd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.endpoint, "endpoint", "", "CSI socket as unix:///PATH (required)")
	fs.StringVar(&o.conf, "ceph-conf", "", "ceph.conf of the cluster (required)")
	fs.StringVar(&o.keyring, "keyring", "", "keyring with the user's key (default: the one ceph.conf names)")
	fs.StringVar(&o.user, "user", "admin", "Ceph user, without \"client.\"")
	fs.StringVar(&o.pool, "pool", "", "RBD pool of the volumes (required)")
	fs.StringVar(&o.namespace, "namespace", "", "RADOS namespace in the pool (default: none)")
	fs.StringVar(&o.hostID, "host-id", "", "this host's name in the volumes' write locks (default: the host name)")
	fs.StringVar(&o.runDir, "run-dir", "/run/stowage-rbd", "where the FUSE files of staged volumes are mounted")
	fs.StringVar(&o.name, "name", "", "CSI driver name reported by GetPluginInfo (default: stowage.rbd)")
	fs.StringVar(&o.nodeID, "node-id", "", "CSI node ID reported by NodeGetInfo (default: the host name)")
	level := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case o.endpoint == "":
		return o, errors.New("--endpoint is required, as unix:///PATH")
	case o.conf == "":
		return o, errors.New("--ceph-conf is required")
	case o.pool == "":
		return o, errors.New("--pool is required")
	}
	if err := o.level.UnmarshalText([]byte(*level)); err != nil {
		return o, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", *level)
	}
	return o, nil
}
