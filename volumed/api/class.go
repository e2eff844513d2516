package api

import (
	"errors"

	"github.com/stowage/stowage/plugins/volume"
)

// classes pairs each wire class with its error class of plugins/volume, in
// the order errors are tested: an error wrapping several classes takes the
// first.
var classes = []struct {
	name string
	err  error
}{
	{ClassNotFound, volume.ErrNotFound},
	{ClassExists, volume.ErrExists},
	{ClassInUse, volume.ErrInUse},
	{ClassInvalid, volume.ErrInvalid},
	{ClassUnavailable, volume.ErrUnavailable},
	{ClassNotSupported, volume.ErrNotSupported},
}

// ClassOf returns the wire class of err: the first class of plugins/volume
// it wraps, or ClassInternal.
func ClassOf(err error) string {
	for _, c := range classes {
		if errors.Is(err, c.err) {
			return c.name
		}
	}
	return ClassInternal
}

// ClassError returns the error class of plugins/volume that a wire class
// names; nil for ClassInternal and unknown classes.
func ClassError(class string) error {
	for _, c := range classes {
		if c.name == class {
			return c.err
		}
	}
	return nil
}
