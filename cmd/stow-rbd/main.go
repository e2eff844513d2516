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
	"errors"
	"flag"
	"io"

	"github.com/stowage/stowage/plugins/csi/driver"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// options are the command line of stow-rbd.
type options struct {
	driver.Flags
	conf      string
	keyring   string
	user      string
	pool      string
	namespace string
	hostID    string
	runDir    string
}

func main() { driver.Main("stow-rbd", parse, serve) }

// parse reads the flags.
func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("stow-rbd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.Register(fs, "stowage.rbd")
	fs.StringVar(&o.conf, "ceph-conf", "", "ceph.conf of the cluster (required)")
	fs.StringVar(&o.keyring, "keyring", "", "keyring with the user's key (default: the one ceph.conf names)")
	fs.StringVar(&o.user, "user", "admin", "Ceph user, without \"client.\"")
	fs.StringVar(&o.pool, "pool", "", "RBD pool of the volumes (required)")
	fs.StringVar(&o.namespace, "namespace", "", "RADOS namespace in the pool (default: none)")
	fs.StringVar(&o.hostID, "host-id", "", "this host's name in the volumes' write locks (default: the host name)")
	fs.StringVar(&o.runDir, "run-dir", "/run/stowage-rbd", "where the FUSE files of staged volumes are mounted")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if err := o.Check(fs); err != nil {
		return o, err
	}
	switch {
	case o.conf == "":
		return o, errors.New("--ceph-conf is required")
	case o.pool == "":
		return o, errors.New("--pool is required")
	}
	return o, nil
}
