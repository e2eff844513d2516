package seccomp

import "slices"

// Programs returns the default filter as raw BPF programs, each an array
// of struct sock_filter in the machine's byte order, to be loaded in this
// order with TSYNC: the native one, then the one that denies the same
// calls through the i386 ABI.
func Programs() ([][]byte, error) {
	return [][]byte{slices.Clone(nativeProgram), slices.Clone(i386Program)}, nil
}
