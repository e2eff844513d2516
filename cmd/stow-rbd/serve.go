//go:build ceph && linux && cgo

package main

import (
	"context"
	"io"
	"log/slog"

	"github.com/stowage/stowage/plugins/csi"
	"github.com/stowage/stowage/plugins/rbd"
)

// serve connects to the cluster and serves the provider until ctx is done.
func serve(ctx context.Context, o options, stderr io.Writer) error {
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: o.level}))
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
	l, err := csi.Listen(o.endpoint)
	if err != nil {
		p.Close()
		return err
	}
	srv := csi.NewServer(p, csi.ServerOptions{Name: o.name, Version: version, NodeID: o.nodeID, Logger: log})
	log.Info("serving the RBD provider over CSI", "endpoint", o.endpoint, "pool", o.pool, "namespace", o.namespace, "version", version)
	serr := srv.Serve(ctx, l)
	if err := p.Close(); err != nil {
		log.Warn("close provider", "error", err)
	}
	if serr != nil {
		return serr
	}
	log.Info("stopped")
	return nil
}
