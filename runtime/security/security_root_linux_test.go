package security

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/runtime/security/seccomp"
)

// childEnv makes the test binary confine itself like a container init and
// report what it may still do (see confinedChild).
const childEnv = "STOWAGE_SECURITY_TEST_CHILD"

func TestMain(m *testing.M) {
	if bb := os.Getenv(childEnv); bb != "" {
		confinedChild(bb)
	}
	os.Exit(m.Run())
}

// confinedChild applies what a container's init applies before exec, in
// the same order, prints "key value" lines about its state, then executes
// busybox to show what the program it starts gets.
func confinedChild(busybox string) {
	runtime.LockOSThread()
	fail := func(err error) {
		fmt.Println("error", err)
		os.Exit(1)
	}
	if err := NoNewPrivileges(); err != nil {
		fail(err)
	}
	if err := DropCapabilities(DefaultCapabilities()); err != nil {
		fail(err)
	}
	progs, err := seccomp.Programs()
	if err != nil {
		fail(err)
	}
	if err := LoadSeccomp(progs); err != nil {
		fail(err)
	}
	status, err := os.ReadFile("/proc/thread-self/status")
	if err != nil {
		fail(err)
	}
	for line := range strings.Lines(string(status)) {
		if k, v, ok := strings.Cut(line, ":"); ok && (strings.HasPrefix(k, "Cap") || k == "NoNewPrivs" || k == "Seccomp") {
			fmt.Println("self."+k, strings.TrimSpace(v))
		}
	}
	errno := func(err error) string {
		if err == nil {
			return "ok"
		}
		return unix.ErrnoName(err.(syscall.Errno))
	}
	fmt.Println("unshare", errno(unix.Unshare(unix.CLONE_NEWUTS)))
	// An unknown keyctl operation is EOPNOTSUPP without the filter.
	_, _, e := unix.Syscall(unix.SYS_KEYCTL, 9999, 0, 0)
	fmt.Println("keyctl", errno(errOrNil(e)))
	_, _, e = unix.Syscall(unix.SYS_PERSONALITY, 0x0400000, 0, 0)
	fmt.Println("personality.addr_no_randomize", errno(errOrNil(e)))
	_, _, e = unix.Syscall(unix.SYS_PERSONALITY, 0xffffffff, 0, 0)
	fmt.Println("personality.query", errno(errOrNil(e)))
	fmt.Println("init_module", errno(unix.InitModule(nil, "")))
	fmt.Println("getpid", os.Getpid() == unix.Getpid())
	// TSYNC: another thread has the filter too.
	other := make(chan string)
	go func() {
		runtime.LockOSThread() // a fresh thread, never unlocked: it exits with the goroutine
		_, _, e := unix.Syscall(unix.SYS_KEYCTL, 9999, 0, 0)
		other <- errno(errOrNil(e))
	}()
	fmt.Println("keyctl.other_thread", <-other)
	fmt.Println("exec")
	os.Stdout.Sync()
	fail(syscall.Exec(busybox, []string{"busybox", "grep", "-E", "^(Cap|NoNewPrivs|Seccomp)", "/proc/self/status"}, nil))
}

func errOrNil(e syscall.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

func TestRootConfinedProcess(t *testing.T) {
	testenv.Require(t, "root", "busybox")
	bb, err := testenv.StaticBusybox()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), childEnv+"="+bb)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	before, after, _ := strings.Cut(string(out), "exec\n")
	got := make(map[string]string)
	for line := range strings.Lines(before) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		got[k] = v
	}
	for line := range strings.Lines(after) {
		k, v, _ := strings.Cut(line, ":")
		got["exec."+k] = strings.TrimSpace(v)
	}

	caps, err := parseCapabilities(DefaultCapabilities())
	if err != nil {
		t.Fatal(err)
	}
	var mask uint64
	for _, c := range caps {
		mask |= 1 << uint(c)
	}
	want := fmt.Sprintf("%016x", mask)
	for k, v := range map[string]string{
		"self.CapEff": want, "self.CapPrm": want, "self.CapInh": want, "self.CapBnd": want,
		"self.CapAmb": "0000000000000000", "self.NoNewPrivs": "1", "self.Seccomp": "2",
		"exec.CapEff": want, "exec.CapPrm": want, "exec.CapBnd": want,
		"exec.CapAmb": "0000000000000000", "exec.NoNewPrivs": "1", "exec.Seccomp": "2",
		"unshare": "EPERM", "keyctl": "EPERM", "keyctl.other_thread": "EPERM",
		"personality.addr_no_randomize": "EPERM", "personality.query": "ok",
		"init_module": "EPERM", "getpid": "true",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if bnd, err := strconv.ParseUint(got["self.CapBnd"], 16, 64); err != nil || bnd&(1<<unix.CAP_SYS_ADMIN) != 0 {
		t.Errorf("CAP_SYS_ADMIN still in the bounding set %q (%v)", got["self.CapBnd"], err)
	}
	if t.Failed() {
		t.Logf("child output:\n%s", out)
	}
}
