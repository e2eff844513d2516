package harness

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// process is a daemon the harness started and stops by its PID.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // set before done closes
}

// startProcess starts name with args, its output appended to logPath.
func startProcess(logPath string, env []string, name string, args ...string) (*process, error) {
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(name, args...)
	cmd.Env = environ(env)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Own process group: a ^C to the test does not reach the daemon first.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// pid returns the process ID.
func (p *process) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then sends SIGKILL and waits. It
// reports whether SIGKILL was needed, and the process's exit error.
func (p *process) stop(grace time.Duration) (killed bool, err error) {
	if p.exited() {
		return false, p.err
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return false, p.err
	case <-time.After(grace):
	}
	p.kill()
	return true, p.err
}

// kill sends SIGKILL and waits for the process to end.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}
