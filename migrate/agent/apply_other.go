//go:build !linux

package agent

import (
	"errors"
	"os"

	"github.com/stowage/stowage/migrate/manifest"
)

var errNotSupported = errors.New("migrate agent: not supported on this system")

func create(string, *manifest.Entry) error        { return errNotSupported }
func setMeta(string, *manifest.Entry, bool) error { return errNotSupported }

func writeFile(string, []byte, *manifest.Entry, string) (manifest.Entry, error) {
	return manifest.Entry{}, errNotSupported
}

func rename(from, to string) error { return os.Rename(from, to) }
