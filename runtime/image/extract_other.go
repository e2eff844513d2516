//go:build !linux

package image

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/stowage/stowage/plugins/volume"
)

const noFollow = 0

var errXattrNotSupported = errors.ErrUnsupported

var errNotLinux = fmt.Errorf("image store: %w on this system", volume.ErrNotSupported)

func mknodWhiteout(string) error                  { return errNotLinux }
func setOpaque(string) error                      { return errNotLinux }
func mkfifo(string) error                         { return errNotLinux }
func lchown(string, int, int) error               { return errNotLinux }
func chmod(string, uint32) error                  { return errNotLinux }
func lsetxattr(string, string, []byte) error      { return errNotLinux }
func setTimes(string, time.Time, time.Time) error { return errNotLinux }
func flock(*os.File) error                        { return errNotLinux }
