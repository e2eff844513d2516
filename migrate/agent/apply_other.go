//go:build !linux

package agent

import (
	"errors"

	"github.com/stowage/stowage/migrate/manifest"
)

var errNotSupported = errors.New("migrate agent: not supported on this system")

func create(string, *manifest.Entry) error        { return errNotSupported }
func setMeta(string, *manifest.Entry, bool) error { return errNotSupported }
