//go:build !linux

package manifest

import (
	"context"
	"errors"
	"os"
	"time"
)

var errNotSupported = errors.New("manifest: not supported on this system")

// WalkOptions tune Walk.
type WalkOptions struct {
	Hash     bool
	Previous *Manifest
	Exclude  []string
	Lazy     bool
	Settled  time.Duration
	Settle   bool
}

// SettledHash is as on Linux.
const SettledHash = 100 * time.Millisecond

// Walk is not supported on this system.
func Walk(context.Context, string, WalkOptions) (*Manifest, error) { return nil, errNotSupported }

// Stat is not supported on this system.
func Stat(string, string) (Entry, uint64, error) { return Entry{}, 0, errNotSupported }

// Xattrs is not supported on this system.
func Xattrs(string) (map[string][]byte, error) { return nil, errNotSupported }

// Extents is not supported on this system.
func Extents(*os.File, int64) ([][2]int64, error) { return nil, errNotSupported }

func hashWhole(context.Context, string) (string, error) { return "", errNotSupported }
