package initproc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// command is what the reaper starts, given on FDConfig.
type command struct {
	Path string   `json:"path"`
	Args []string `json:"args"`
	Env  []string `json:"env"`
}

// becomeReaper executes this program again from self, an open descriptor
// of its file, as ModeReap with cmd on FDConfig and FDStatus still open. It
// returns only with an error.
func becomeReaper(self int, cmd command) error {
	// A pipe could fill before the reaper reads it; a memfd cannot.
	fd, err := unix.MemfdCreate("command", 0)
	if err != nil {
		return fmt.Errorf("start container init: %w", err)
	}
	f := os.NewFile(uintptr(fd), "command")
	if err := json.NewEncoder(f).Encode(cmd); err != nil {
		return fmt.Errorf("start container init: %w", err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		return fmt.Errorf("start container init: %w", err)
	}
	if fd != FDConfig { // it is when the configuration's pipe was closed first
		if err := unix.Dup3(fd, FDConfig, 0); err != nil {
			return fmt.Errorf("start container init: %w", err)
		}
	}
	if _, err := unix.FcntlInt(FDStatus, unix.F_SETFD, 0); err != nil {
		return fmt.Errorf("start container init: %w", err)
	}
	// The runtime's own preemption signal would otherwise come back as a
	// signal to forward.
	env := []string{EnvMode + "=" + ModeReap, "GODEBUG=asyncpreemptoff=1"}
	err = execFD(self, []string{"stow-init"}, env)
	if errors.Is(err, unix.ENOENT) {
		// The file is open: what is missing is its ELF interpreter, on the
		// host's root and not in the container's.
		return fmt.Errorf("start container init: the runtime is not a static binary and no stow-init is installed beside it: %w", err)
	}
	return fmt.Errorf("start container init: %w", err)
}

// execFD executes the program open at fd (execveat with AT_EMPTY_PATH).
func execFD(fd int, argv, envv []string) error {
	argvp, err := syscall.SlicePtrFromStrings(argv)
	if err != nil {
		return err
	}
	envvp, err := syscall.SlicePtrFromStrings(envv)
	if err != nil {
		return err
	}
	empty := []byte{0}
	_, _, e := unix.Syscall6(unix.SYS_EXECVEAT, uintptr(fd), uintptr(unsafe.Pointer(&empty[0])),
		uintptr(unsafe.Pointer(&argvp[0])), uintptr(unsafe.Pointer(&envvp[0])), unix.AT_EMPTY_PATH, 0)
	return e
}

// reap is the container's PID 1 with Config.Init: it starts the command as
// its child, forwards every signal it can catch to it, reaps every process
// that ends in the container and exits with the command's status, 128+N
// when signal N killed it. It runs with the container's privileges and is
// not dumpable, so no process of the container can trace it or reach its
// host file through /proc/1/exe.
func reap() {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		fmt.Fprintf(os.Stderr, "stow-init: %v\n", err)
		os.Exit(CodeSetup)
	}
	fail := statusFailer()
	var cmd command
	cfgFile := os.NewFile(FDConfig, "command")
	if err := json.NewDecoder(cfgFile).Decode(&cmd); err != nil {
		fail(CodeSetup, fmt.Errorf("read init command: %w", err))
	}
	cfgFile.Close()
	// Every signal, SIGCHLD included, from before the child starts.
	sigs := make(chan os.Signal, 64)
	signal.Notify(sigs)
	p, err := os.StartProcess(cmd.Path, cmd.Args, &os.ProcAttr{Env: cmd.Env, Files: []*os.File{os.Stdin, os.Stdout, os.Stderr}})
	if err != nil {
		code := CodeNotRunnable
		if errors.Is(err, unix.ENOENT) {
			code = CodeNotFound
		}
		fail(code, fmt.Errorf("exec %s: %w", cmd.Path, errors.Unwrap(err)))
	}
	unix.Close(FDStatus) // the command runs
	child := p.Pid
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			unix.Kill(child, sig.(syscall.Signal))
		}
		// Each signal, not only SIGCHLD, is a chance to reap: a SIGCHLD
		// dropped while the channel was full is then not missed.
		for {
			var ws unix.WaitStatus
			pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil || pid <= 0 {
				break
			}
			if pid == child {
				// The rest of the container ends with its PID 1.
				if ws.Signaled() {
					os.Exit(128 + int(ws.Signal()))
				}
				os.Exit(ws.ExitStatus())
			}
		}
	}
}
