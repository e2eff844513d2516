//go:build !linux

package agent

import (
	"errors"
	"os"
)

// cloneFile fails: blocks are copied.
func cloneFile(dst, src *os.File) error { return errors.New("cannot share blocks") }
