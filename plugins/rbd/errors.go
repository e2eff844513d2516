package rbd

import (
	"context"
	"errors"
	"fmt"
	"syscall"

	"github.com/stowage/stowage/plugins/volume"
)

// eBlocklisted is Ceph's EBLOCKLISTED: this client was fenced off by
// Unlock on another host. It shares its number with ESHUTDOWN.
const eBlocklisted = syscall.ESHUTDOWN

// errnoOf returns the errno an error of librados, librbd or the kernel
// carries, or 0. go-ceph's errors have an ErrorCode method returning the
// negative errno of the C call.
func errnoOf(err error) syscall.Errno {
	var coded interface{ ErrorCode() int }
	if errors.As(err, &coded) {
		c := coded.ErrorCode()
		if c < 0 {
			c = -c
		}
		return syscall.Errno(c)
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return 0
}

// classOf returns the contract class for an errno: what the caller can do
// about it.
func classOf(e syscall.Errno) error {
	switch e {
	case syscall.ENOENT:
		return volume.ErrNotFound
	case syscall.EEXIST:
		return volume.ErrExists
	case syscall.EBUSY, syscall.EROFS, syscall.ENOTEMPTY:
		return volume.ErrInUse
	case syscall.EINVAL, syscall.ERANGE, syscall.EDOM, syscall.ENAMETOOLONG, syscall.EFBIG:
		return volume.ErrInvalid
	case syscall.ENOSYS, syscall.EOPNOTSUPP:
		return volume.ErrNotSupported
	}
	return volume.ErrUnavailable
}

// wrap adds "op what" to err and a contract class by its cause, keeping
// the cause; an error that already has a class, or is a context's error,
// keeps it. nil stays nil. Ceph's error texts name the call and the errno,
// never a key.
func wrap(err error, op, what string) error {
	if err == nil {
		return nil
	}
	for _, c := range []error{volume.ErrNotFound, volume.ErrExists, volume.ErrInUse, volume.ErrInvalid,
		volume.ErrUnavailable, volume.ErrNotSupported, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, c) {
			return fmt.Errorf("%s %s: %w", op, what, err)
		}
	}
	e := errnoOf(err)
	switch e {
	case syscall.EACCES, syscall.EPERM:
		return fmt.Errorf("%w: %s %s: %w (check the Ceph user's key and capabilities)", volume.ErrUnavailable, op, what, err)
	case eBlocklisted:
		return fmt.Errorf("%w: %s %s: %w (this host's Ceph client was fenced by an unlock on another host; restart the provider)",
			volume.ErrUnavailable, op, what, err)
	case syscall.ETIMEDOUT:
		return fmt.Errorf("%w: %s %s: %w (is the Ceph cluster reachable?)", volume.ErrUnavailable, op, what, err)
	}
	return fmt.Errorf("%w: %s %s: %w", classOf(e), op, what, err)
}
