package manager

import (
	"fmt"

	"github.com/stowage/stowage/plugins/volume"
)

// MaxNameLength is the longest volume name accepted: a name is a file name
// on the host, so it is bounded by NAME_MAX.
const MaxNameLength = 255

// ValidateName returns an ErrInvalid error unless name follows Docker's
// rule for volume names.
func ValidateName(name string) error {
	return checkName("volume", name)
}

// checkName returns an ErrInvalid error, calling the name what, unless name
// follows Docker's rule for volume names.
func checkName(what, name string) error {
	switch {
	case name == "":
		return fmt.Errorf("%w: %s name is empty (names match "+volume.NameRule+")", volume.ErrInvalid, what)
	case len(name) > MaxNameLength:
		return fmt.Errorf("%w: %s name is %d characters long (at most %d)", volume.ErrInvalid, what, len(name), MaxNameLength)
	case !volume.ValidName(name):
		return fmt.Errorf("%w: %s name %q has characters that are not allowed (names match "+volume.NameRule+")", volume.ErrInvalid, what, name)
	}
	return nil
}
