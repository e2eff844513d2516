package compile

import (
	"encoding/binary"
	"fmt"

	libseccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"

	"github.com/stowage/stowage/plugins/volume"
)

// Programs returns the default filter as raw BPF programs, each an array
// of struct sock_filter in the machine's byte order, to load in this
// order with TSYNC: every system call is allowed except deniedSyscalls
// and personality with arguments Docker does not allow, which fail with
// EPERM; the x32 ABI fails with ENOSYS. On x86_64 a second program denies
// the same calls through the i386 ABI. An architecture without a system
// call table is ErrNotSupported.
func Programs() ([][]byte, error) {
	native, err := arch.GetInfo("")
	if err != nil {
		return nil, fmt.Errorf("compile seccomp filter: %w: %w", err, volume.ErrNotSupported)
	}
	f := defaultFilter()
	insts, err := f.Policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("compile seccomp filter: %w", err)
	}
	progs := [][]bpf.Instruction{insts}
	if native.ID == arch.X86_64.ID {
		compat, err := compatProgram()
		if err != nil {
			return nil, fmt.Errorf("compile seccomp filter for the i386 ABI: %w", err)
		}
		progs = append(progs, compat)
	}
	out := make([][]byte, len(progs))
	for i, p := range progs {
		if out[i], err = encode(p); err != nil {
			return nil, fmt.Errorf("compile seccomp filter: %w", err)
		}
	}
	return out, nil
}

func defaultFilter() libseccomp.Filter {
	var notAllowed libseccomp.ArgumentConditions
	for _, p := range allowedPersonalities {
		notAllowed = append(notAllowed, libseccomp.Condition{Argument: 0, Operation: libseccomp.NotEqual, Value: p})
	}
	return libseccomp.Filter{
		Flag: libseccomp.FilterFlagTSync,
		Policy: libseccomp.Policy{
			DefaultAction: libseccomp.ActionAllow,
			Syscalls: []libseccomp.SyscallGroup{{
				Action: libseccomp.ActionErrno,
				Names:  deniedSyscalls,
				NamesWithCondtions: []libseccomp.NameWithConditions{
					{Name: "personality", Conditions: notAllowed},
				},
			}},
		},
	}
}

// sockFilterSize is the size of struct sock_filter: u16 code, u8 jt,
// u8 jf, u32 k.
const sockFilterSize = 8

// encode assembles prog into an array of struct sock_filter.
func encode(prog []bpf.Instruction) ([]byte, error) {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(raw)*sockFilterSize)
	for _, r := range raw {
		b = binary.NativeEndian.AppendUint16(b, r.Op)
		b = append(b, r.Jt, r.Jf)
		b = binary.NativeEndian.AppendUint32(b, r.K)
	}
	return b, nil
}
