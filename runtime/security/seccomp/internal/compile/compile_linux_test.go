package compile

import (
	"encoding/binary"
	"testing"

	libseccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/elastic/go-seccomp-bpf/arch"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
)

// seccompData encodes struct seccomp_data as the kernel hands it to a
// filter on a little-endian machine, with each 32-bit word stored big
// endian because the bpf package's VM loads words in network order.
func seccompData(nr int, auditArch uint32, args ...uint64) []byte {
	b := make([]byte, 64)
	binary.BigEndian.PutUint32(b[0:], uint32(nr))
	binary.BigEndian.PutUint32(b[4:], auditArch)
	for i, a := range args {
		binary.BigEndian.PutUint32(b[16+8*i:], uint32(a))
		binary.BigEndian.PutUint32(b[16+8*i+4:], uint32(a>>32))
	}
	return b
}

func TestDefaultFilterProgram(t *testing.T) {
	native, err := arch.GetInfo("")
	if err != nil {
		testenv.Unavailable(t, "no syscall table for this architecture: %v", err)
	}
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		testenv.Unavailable(t, "the encoding here assumes a little-endian machine")
	}
	f := defaultFilter()
	insts, err := f.Policy.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(insts)
	if err != nil {
		t.Fatal(err)
	}
	eperm := int(libseccomp.ActionErrno) | int(unix.EPERM)
	allow := int(libseccomp.ActionAllow)
	nr := func(name string) int {
		n, ok := native.SyscallNames[name]
		if !ok {
			t.Fatalf("no syscall %s", name)
		}
		return n
	}
	type call struct {
		name string
		args []uint64
		want int
	}
	calls := []call{
		{"getpid", nil, allow},
		{"write", []uint64{1, 0, 0}, allow},
		{"ptrace", nil, allow},
		{"clone", []uint64{uint64(unix.SIGCHLD)}, allow},
		{"personality", []uint64{0xffffffff}, allow},
		{"personality", []uint64{0x8}, allow},
		{"personality", []uint64{0x0400000}, eperm}, // ADDR_NO_RANDOMIZE
	}
	for _, n := range deniedSyscalls {
		calls = append(calls, call{n, nil, eperm})
	}
	for _, c := range calls {
		got, err := vm.Run(seccompData(nr(c.name), uint32(native.ID), c.args...))
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("%s%v: action %#x, want %#x", c.name, c.args, got, c.want)
		}
	}
	if f.Flag != libseccomp.FilterFlagTSync {
		t.Errorf("filter flag %v, want tsync", f.Flag)
	}
}

func TestCompatFilterProgram(t *testing.T) {
	insts, err := compatProgram()
	if err != nil {
		t.Fatal(err)
	}
	vm, err := bpf.NewVM(insts)
	if err != nil {
		t.Fatal(err)
	}
	eperm := unix.SECCOMP_RET_ERRNO | int(unix.EPERM)
	allow := unix.SECCOMP_RET_ALLOW
	i386 := func(name string) int {
		n, ok := arch.I386.SyscallNames[name]
		if !ok {
			t.Fatalf("no i386 syscall %s", name)
		}
		return n
	}
	type call struct {
		nr   int
		arch uint32
		args []uint64
		want int
	}
	calls := []call{
		{i386("getpid"), uint32(arch.I386.ID), nil, allow},
		{i386("write"), uint32(arch.I386.ID), nil, allow},
		{i386("personality"), uint32(arch.I386.ID), []uint64{0x8}, allow},
		{i386("personality"), uint32(arch.I386.ID), []uint64{0x0400000}, eperm},
		// Native calls pass to the native filter, whatever their number.
		{i386("mount"), uint32(arch.X86_64.ID), nil, allow},
	}
	denied := 0
	for _, name := range deniedSyscalls {
		if n, ok := arch.I386.SyscallNames[name]; ok {
			calls = append(calls, call{n, uint32(arch.I386.ID), nil, eperm})
			denied++
		}
	}
	if denied < len(deniedSyscalls)/2 {
		t.Fatalf("only %d of %d denied calls have i386 numbers", denied, len(deniedSyscalls))
	}
	for _, c := range calls {
		got, err := vm.Run(seccompData(c.nr, c.arch, c.args...))
		if err != nil {
			t.Fatal(err)
		}
		if got != c.want {
			t.Errorf("nr %d arch %#x %v: action %#x, want %#x", c.nr, c.arch, c.args, got, c.want)
		}
	}
}
