package compile

import (
	"fmt"

	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// compatProgram returns a filter for the i386 ABI of an x86_64 kernel. A
// 64-bit process can still enter the kernel through int 0x80 with i386
// system call numbers; the native filter checks the architecture and lets
// other ones through, so this second filter denies the same calls, with
// the same personality exceptions, under their i386 numbers. Calls of
// every other architecture pass to the native filter.
func compatProgram() ([]bpf.Instruction, error) {
	var denied []uint32
	for _, name := range deniedSyscalls {
		if nr, ok := arch.I386.SyscallNames[name]; ok {
			denied = append(denied, uint32(nr))
		}
	}
	personality, ok := arch.I386.SyscallNames["personality"]
	if !ok {
		return nil, fmt.Errorf("no i386 number for personality")
	}
	const (
		archOffset = 4  // seccomp_data.arch
		nrOffset   = 0  // seccomp_data.nr
		arg0Offset = 16 // low word of seccomp_data.args[0] on little-endian
	)
	// Layout: load arch, check i386, load nr, one jump to deny per denied
	// call, the personality block, then deny and allow.
	n := 3 + len(denied) + 2 + len(allowedPersonalities)
	deny, allow := n, n+1
	skip := func(from, to int) uint8 { return uint8(to - from - 1) }
	prog := []bpf.Instruction{
		bpf.LoadAbsolute{Off: archOffset, Size: 4},
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(arch.I386.ID), SkipFalse: skip(1, allow)},
		bpf.LoadAbsolute{Off: nrOffset, Size: 4},
	}
	for _, nr := range denied {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: nr, SkipTrue: skip(len(prog), deny)})
	}
	prog = append(prog,
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(personality), SkipFalse: skip(len(prog), allow)},
		bpf.LoadAbsolute{Off: arg0Offset, Size: 4},
	)
	for _, p := range allowedPersonalities {
		prog = append(prog, bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(p), SkipTrue: skip(len(prog), allow)})
	}
	prog = append(prog,
		bpf.RetConstant{Val: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		bpf.RetConstant{Val: unix.SECCOMP_RET_ALLOW},
	)
	if len(prog) != n+2 || n > 255 {
		return nil, fmt.Errorf("i386 filter layout: %d instructions, want %d", len(prog), n+2)
	}
	return prog, nil
}
