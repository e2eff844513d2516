//go:build linux && !amd64

package seccomp

import "github.com/stowage/stowage/runtime/security/seccomp/internal/compile"

// Programs returns the default filter as raw BPF programs, each an array
// of struct sock_filter in the machine's byte order, to be loaded in this
// order with TSYNC. An architecture without a system call table is
// ErrNotSupported.
func Programs() ([][]byte, error) { return compile.Programs() }
