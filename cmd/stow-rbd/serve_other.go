//go:build !(ceph && linux && cgo)

package main

import (
	"context"
	"errors"
	"io"
)

// serve fails: this build has no Ceph client.
func serve(ctx context.Context, o options, stderr io.Writer) error {
	return errors.New("this stow-rbd was built without Ceph support: build it on Linux with cgo and the tags ceph,pacific (make build-rbd)")
}
