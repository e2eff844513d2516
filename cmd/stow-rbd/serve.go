//go:build ceph && linux && cgo

package main

import (
	"context"
	"io"

	"github.com/stowage/stowage/plugins/csi/driver"
	"github.com/stowage/stowage/plugins/rbd"
)

// serve connects to the cluster and serves the provider until ctx is done.
func serve(ctx context.Context, o options, stderr io.Writer) error {
	log := o.Logger(stderr)
	p, err := rbd.New(ctx, rbd.Config{
		ConfFile:  o.conf,
		Keyring:   o.keyring,
		User:      o.user,
		Pool:      o.pool,
		Namespace: o.namespace,
		HostID:    o.hostID,
		RunDir:    o.runDir,
	}, log.With("provider", "rbd"))
	if err != nil {
		return err
	}
	serr := driver.Serve(ctx, p, o.Flags, version, log, "provider", "rbd", "pool", o.pool, "namespace", o.namespace, "version", version)
	if err := p.Close(); err != nil {
		log.Warn("close provider", "error", err)
	}
	return serr
}
