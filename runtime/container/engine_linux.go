package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/container/initproc"
	"github.com/stowage/stowage/runtime/security/seccomp"
	"github.com/stowage/stowage/volumed/client"
)

// Environment of a detached monitor.
const (
	envID     = "_STOWAGE_ID"
	envRoot   = "_STOWAGE_ROOT"
	envPlugin = "_STOWAGE_PLUGIN"
	envInit   = "_STOWAGE_INIT_PROGRAM"
)

// cleanupTimeout bounds the unmounts after a container ends.
const cleanupTimeout = time.Minute

// Options configure an Engine.
type Options struct {
	// Root is the runtime root; containers live in Root/containers.
	Root string
	// PluginSocket is volumed's plugin socket, used by detached monitors
	// and, when Volumes is nil, by this engine.
	PluginSocket string
	// Volumes mounts volumes; nil means volumed at PluginSocket.
	Volumes Volumes
	// Init is the container init program. Empty means stow-init beside
	// this executable or in ../libexec/stowage/ from its directory, and
	// this executable itself, re-executed, when there is none: a program
	// that starts containers calls Init in main for that.
	Init   string
	Logger *slog.Logger
}

// Engine starts and manages containers. Its methods may be called from
// several processes at once: state lives in files.
type Engine struct {
	root   string
	socket string
	store  *Store
	vols   Volumes
	init   string // the container init program
	log    *slog.Logger
}

// New returns an engine over the containers below opts.Root.
func New(opts Options) (*Engine, error) {
	s, err := OpenStore(opts.Root)
	if err != nil {
		return nil, err
	}
	init, err := initProgram(opts.Init)
	if err != nil {
		return nil, err
	}
	e := &Engine{root: opts.Root, socket: opts.PluginSocket, store: s, vols: opts.Volumes, init: init, log: opts.Logger}
	if e.vols == nil {
		e.vols = client.NewPlugin(opts.PluginSocket)
	}
	if e.log == nil {
		e.log = slog.New(slog.DiscardHandler)
	}
	return e, nil
}

// Store returns the engine's container store.
func (e *Engine) Store() *Store { return e.store }

// Create records a new container (see Store.Create).
func (e *Engine) Create(cfg Config) (Container, error) { return e.store.Create(cfg) }

// Run runs the created container id in this process and returns when it
// has ended, with its final state. Signals that arrive on sigs are
// forwarded to the container's PID 1. A command that cannot run is a
// *CommandError; the container then has exited with its code.
func (e *Engine) Run(ctx context.Context, id string, stdio Stdio, sigs <-chan os.Signal) (State, error) {
	c, err := e.store.Get(id)
	if err != nil {
		return State{}, err
	}
	return e.monitor(ctx, c, stdio, sigs, func(error) {})
}

// Start runs the created container id detached: a monitor process of its
// own owns it, with its output in the container's log. Start returns once
// the command runs, or with its *CommandError.
func (e *Engine) Start(ctx context.Context, id string) error {
	c, err := e.store.Get(id)
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("start monitor: %w", err)
	}
	defer r.Close()
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Args = []string{"stow-monitor", c.ID()}
	cmd.Env = []string{initproc.EnvMode + "=" + modeMonitor, envID + "=" + c.ID(), envRoot + "=" + e.root,
		envPlugin + "=" + e.socket, envInit + "=" + e.init}
	cmd.ExtraFiles = []*os.File{w}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return fmt.Errorf("start monitor: %w", err)
	}
	// The monitor outlives this process; it is not waited for.
	cmd.Process.Release()
	var res initproc.Error
	b, _ := io.ReadAll(r)
	if len(b) == 0 {
		return fmt.Errorf("start container %s: the monitor ended without a word (see %s)", c.ID()[:12], filepath.Join(c.Dir, "monitor.log"))
	}
	if err := json.Unmarshal(b, &res); err != nil {
		return fmt.Errorf("start container %s: read monitor: %w", c.ID()[:12], err)
	}
	if res.Msg != "" {
		return &CommandError{Code: res.Code, Msg: res.Msg}
	}
	return nil
}

// runMonitor is the detached monitor: it runs one container and records
// its end.
func runMonitor() {
	unix.CloseOnExec(initproc.FDConfig)
	readyFile := os.NewFile(initproc.FDConfig, "ready")
	id, root := os.Getenv(envID), os.Getenv(envRoot)
	var once sync.Once
	ready := func(err error) {
		once.Do(func() {
			var res initproc.Error
			if err != nil {
				res = initproc.Error{Msg: err.Error(), Code: initproc.CodeSetup}
				var ce *CommandError
				if errors.As(err, &ce) {
					res.Code = ce.Code
				}
			}
			json.NewEncoder(readyFile).Encode(res)
			readyFile.Close()
		})
	}
	dir := filepath.Join(root, "containers", id)
	logf, err := os.OpenFile(filepath.Join(dir, "log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0o640)
	if err != nil {
		ready(fmt.Errorf("open container log: %w", err))
		os.Exit(1)
	}
	mlog, err := os.OpenFile(filepath.Join(dir, "monitor.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND|unix.O_CLOEXEC, 0o640)
	if err != nil {
		ready(fmt.Errorf("open monitor log: %w", err))
		os.Exit(1)
	}
	log := slog.New(slog.NewTextHandler(mlog, nil)).With("container", id)
	e, err := New(Options{Root: root, PluginSocket: os.Getenv(envPlugin), Init: os.Getenv(envInit), Logger: log})
	if err != nil {
		ready(err)
		os.Exit(1)
	}
	c, err := e.store.Get(id)
	if err != nil {
		ready(err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, forwarded...)
	st, err := e.monitor(context.Background(), c, Stdio{Stdout: logf, Stderr: logf}, sigs, ready)
	log.Info("container ended", "exit_code", st.ExitCode, "oom_killed", st.OOMKilled, "err", err)
	os.Exit(0)
}

// forwarded are the signals a monitor passes on to the container.
var forwarded = []os.Signal{unix.SIGINT, unix.SIGTERM, unix.SIGHUP, unix.SIGQUIT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGWINCH}

// Forwarded returns the signals that Run should be given to forward.
func Forwarded() []os.Signal { return append([]os.Signal(nil), forwarded...) }

// monitor owns container c from start to end: volumes, cgroup, the init,
// signals, the exit, the clean-up. ready is called once, when the command
// runs or could not start.
func (e *Engine) monitor(ctx context.Context, c Container, stdio Stdio, sigs <-chan os.Signal, ready func(error)) (State, error) {
	id := c.ID()
	log := e.log.With("container", id)
	st := c.State
	if st.MonitorPID != os.Getpid() {
		st.MonitorPID = os.Getpid()
		st.MonitorStart, _ = procStart(st.MonitorPID)
	}
	var g group
	finish := func(code int, cause error) (State, error) {
		st.Status, st.ExitCode, st.FinishedAt, st.PID, st.PIDStart = Exited, code, time.Now().UTC(), 0, 0
		if cause != nil {
			st.Error = cause.Error()
		}
		// A container to remove that holds no volumes has nothing left to
		// record: its directory goes while its cgroup is released.
		var removed chan error
		if c.Config.AutoRemove && len(st.Mounts) == 0 {
			removed = make(chan error, 1)
			go func() { removed <- e.store.Remove(id) }()
		}
		e.release(ctx, &st, g, log)
		switch {
		case removed != nil:
			if err := <-removed; err != nil {
				log.Warn("remove container", "err", err)
			}
		case c.Config.AutoRemove && len(st.Mounts) == 0:
			if err := e.store.Remove(id); err != nil {
				log.Warn("remove container", "err", err)
			}
		default:
			if err := e.store.SaveState(id, st); err != nil {
				log.Warn("save state", "err", err)
			}
		}
		ready(cause)
		return st, cause
	}
	// A foreground monitor is the process that created the container,
	// which Create recorded already.
	if st.MonitorPID != c.State.MonitorPID || st.MonitorStart != c.State.MonitorStart {
		if err := e.store.SaveState(id, st); err != nil {
			return finish(initproc.CodeSetup, err)
		}
	}
	// The first process start of a program makes os check once whether
	// pidfds work, which forks a child; done now, beside what follows, it
	// does not delay the init's start.
	pidfdChecked := make(chan struct{})
	go func() {
		defer close(pidfdChecked)
		if p, err := os.FindProcess(os.Getpid()); err == nil {
			p.Release()
		}
	}()
	defer func() { <-pidfdChecked }()
	var mounts []initproc.BindMount
	for i, v := range c.Config.Volumes {
		mid := fmt.Sprintf("%s-%d", id, i)
		src, err := e.vols.Mount(ctx, v.Name, mid)
		if err != nil {
			return finish(initproc.CodeSetup, err)
		}
		st.Mounts = append(st.Mounts, MountedVolume{Name: v.Name, ID: mid, Source: src})
		if err := e.store.SaveState(id, st); err != nil {
			return finish(initproc.CodeSetup, err)
		}
		mounts = append(mounts, initproc.BindMount{Source: src, Target: v.Target, ReadOnly: v.ReadOnly})
	}
	binds, err := hostBinds(c.Config.Binds)
	if err != nil {
		return finish(initproc.CodeSetup, err)
	}
	mounts = sortMounts(append(mounts, binds...))
	// The cgroup, the init layer and the /etc files are made while the
	// init starts: it needs them only once it has its configuration.
	type madeGroup struct {
		g   group
		err error
	}
	cgroupMade := make(chan madeGroup, 1)
	go func() {
		g, err := newGroup(id, c.Config.Resources)
		cgroupMade <- madeGroup{g, err}
	}()
	type madeRoot struct {
		initLayer string
		etc       []initproc.BindMount
		err       error
	}
	rootMade := make(chan madeRoot, 1)
	go func() {
		var r madeRoot
		if r.initLayer, r.err = e.initLayer(); r.err == nil {
			r.etc, r.err = writeEtc(c, mounts)
		}
		rootMade <- r
	}()
	// prepared waits for both; the cgroup, once made, is released by
	// finish.
	prepared := func() (madeRoot, error) {
		m, r := <-cgroupMade, <-rootMade
		if m.err != nil {
			return r, errors.Join(fmt.Errorf("make cgroup: %w", m.err), r.err)
		}
		g = m.g
		return r, r.err
	}
	icfg := initproc.Config{
		Version:  initproc.Version,
		Rootfs:   filepath.Join(c.Dir, "rootfs"),
		Upper:    filepath.Join(c.Dir, "upper"),
		Work:     filepath.Join(c.Dir, "work"),
		Hostname: c.Config.Hostname,
		NewNet:   c.Config.Network != NetHost,
		Args:     c.Config.Args,
		Env:      containerEnv(c.Config, nil),
		Cwd:      c.Config.WorkingDir,
		User:     c.Config.User,
		Init:     c.Config.Init,
		// Privileged also gives the container the host's /dev.
		Privileged: c.Config.Privileged,
	}
	// The cgroup namespace comes later, from the init, once it is in its
	// cgroup: that cgroup is then the root of the namespace.
	flags := uintptr(unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC)
	if icfg.NewNet {
		flags |= unix.CLONE_NEWNET
	}
	cmd := e.initCommand(initproc.ModeInit, stdio)
	// The container dies with its monitor: a monitor that is gone leaves
	// nothing running that no one records.
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: flags, Setsid: true, Pdeathsig: unix.SIGKILL}
	<-pidfdChecked
	s, err := spawn(cmd)
	if err != nil {
		_, perr := prepared()
		return finish(initproc.CodeSetup, errors.Join(fmt.Errorf("start container: %w", err), perr))
	}
	root, err := prepared()
	if err != nil {
		s.abort()
		return finish(initproc.CodeSetup, err)
	}
	icfg.Lowers = append([]string{root.initLayer}, c.Config.Lowers...)
	icfg.Mounts = sortMounts(append(mounts, root.etc...))
	// On cgroup v1 the init joins its cgroup by itself, at once.
	icfg.Cgroup = g.ThreadFiles()
	if !icfg.Privileged {
		// The filter comes from the runtime, so that the init links no
		// compiler of it.
		if icfg.Seccomp, err = seccomp.Programs(); err != nil {
			s.abort()
			return finish(initproc.CodeSetup, err)
		}
	}
	st.Status, st.PID, st.StartedAt = Running, cmd.Process.Pid, time.Now().UTC()
	st.PIDStart, _ = procStart(st.PID)
	// Recorded before the command can run, while the init prepares: it
	// waits for the word to go on.
	record := func() {
		if err := e.store.SaveState(id, st); err != nil {
			log.Warn("save state", "err", err)
		}
	}
	add := g.Add
	if len(icfg.Cgroup) > 0 {
		add = nil
	}
	if err := s.handshake(icfg, add, record); err != nil {
		return finish(exitCodeOf(err), err)
	}
	ready(nil)
	code := wait(cmd, sigs)
	if oom, err := g.OOMKilled(); err == nil && oom {
		st.OOMKilled = true
	}
	return finish(code, nil)
}

// release undoes what a container held on the host: its volume mounts
// (those volumed fails to unmount stay in st.Mounts) and its cgroup.
func (e *Engine) release(ctx context.Context, st *State, g group, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
	defer cancel()
	var kept []MountedVolume
	for _, m := range st.Mounts {
		if err := e.vols.Unmount(ctx, m.Name, m.ID); err != nil && !errors.Is(err, volume.ErrNotFound) {
			log.Warn("unmount volume", "volume", m.Name, "mount_id", m.ID, "err", err)
			kept = append(kept, m)
		}
	}
	st.Mounts = kept
	if g != nil {
		// The PID 1 of a container takes every other process of its PID
		// namespace along when it ends, so the group is nearly always empty
		// here; Kill, which freezes it first, is for what is left.
		err := g.Delete()
		if errors.Is(err, volume.ErrInUse) {
			if err := g.Kill(); err != nil {
				log.Warn("kill cgroup", "err", err)
			}
			err = g.Delete()
		}
		if err != nil {
			log.Warn("delete cgroup", "err", err)
		}
	}
}

// containerEnv is the environment of a container's processes: the
// configured one with PATH, HOSTNAME and HOME filled in, then extra.
func containerEnv(cfg Config, extra []string) []string {
	env := append([]string(nil), cfg.Env...)
	if _, ok := lookupEnv(env, "PATH"); !ok {
		env = append([]string{"PATH=" + initproc.DefaultPath}, env...)
	}
	if _, ok := lookupEnv(env, "HOSTNAME"); !ok {
		env = append(env, "HOSTNAME="+cfg.Hostname)
	}
	if _, ok := lookupEnv(env, "HOME"); !ok {
		env = append(env, "HOME=/root")
	}
	for _, kv := range extra {
		env = setEnv(env, kv)
	}
	return env
}

// initCommand returns the command that starts the container init program
// in mode.
func (e *Engine) initCommand(mode string, stdio Stdio) *exec.Cmd {
	cmd := exec.Command(e.init)
	cmd.Args = []string{initName}
	// The init does one thing at a time: with one P its Go runtime starts
	// fewer threads. Its command does not inherit this environment.
	cmd.Env = []string{initproc.EnvMode + "=" + mode, "GOMAXPROCS=1"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio.Stdin, stdio.Stdout, stdio.Stderr
	return cmd
}

// started is a re-executed init that waits for its configuration.
type started struct {
	cmd      *exec.Cmd
	cfgW     *os.File
	statusR  *os.File
	spawnErr error
}

// spawn starts cmd with the configuration and status pipes, and extra
// files from initproc.FDMountNS on.
func spawn(cmd *exec.Cmd, extra ...*os.File) (*started, error) {
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	stR, stW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return nil, err
	}
	cmd.ExtraFiles = append([]*os.File{cfgR, stW}, extra...)
	err = cmd.Start()
	cfgR.Close()
	stW.Close()
	if err != nil {
		cfgW.Close()
		stR.Close()
		return nil, err
	}
	return &started{cmd: cmd, cfgW: cfgW, statusR: stR}, nil
}

// abort stops an init that has not been told to go on and waits for it.
func (s *started) abort() {
	s.cmd.Process.Kill()
	s.cfgW.Close()
	s.statusR.Close()
	s.cmd.Wait()
}

// handshake sends the init its configuration at once, puts the init into
// its cgroup with add (unless nil: the init joins by itself) and calls
// record (if not nil) while the init prepares, then tells it to go on and
// waits until it executes the command or reports why it cannot. Moving a
// process into a cgroup waits for an RCU grace period: done in parallel,
// that wait overlaps the init's own start and its building of the root.
func (s *started) handshake(cfg initproc.Config, add func(pid int) error, record func()) error {
	defer s.statusR.Close()
	err := json.NewEncoder(s.cfgW).Encode(cfg)
	if err != nil {
		err = fmt.Errorf("send init config: %w", err)
	} else {
		joined := make(chan error, 1)
		go func() {
			if add == nil {
				joined <- nil
				return
			}
			joined <- add(s.cmd.Process.Pid)
		}()
		if record != nil {
			record()
		}
		if err = <-joined; err != nil {
			err = fmt.Errorf("join cgroup: %w", err)
		}
	}
	if err != nil {
		// Killed before its pipe closes, so the init never runs the
		// command outside its cgroup.
		s.cmd.Process.Kill()
	} else {
		// An init that failed while it prepared is gone and this write
		// fails; its status says why.
		s.cfgW.Write([]byte{initproc.GoAhead})
	}
	s.cfgW.Close()
	b, _ := io.ReadAll(s.statusR)
	if len(b) == 0 && err == nil {
		return nil // the command runs
	}
	s.cmd.Wait()
	if len(b) == 0 {
		return err
	}
	// What the init reports explains a failed join too: it ended first.
	var ie initproc.Error
	if err := json.Unmarshal(b, &ie); err != nil {
		ie = initproc.Error{Msg: "container init: " + string(b), Code: initproc.CodeSetup}
	}
	return &CommandError{Code: ie.Code, Msg: ie.Msg}
}

// exitCodeOf returns the exit code that err stands for.
func exitCodeOf(err error) int {
	var ce *CommandError
	if errors.As(err, &ce) {
		return ce.Code
	}
	return initproc.CodeSetup
}

// wait forwards signals to cmd until it ends and returns its exit code:
// its status, or 128+N when signal N killed it.
func wait(cmd *exec.Cmd, sigs <-chan os.Signal) int {
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	for {
		select {
		case s := <-sigs:
			cmd.Process.Signal(s)
		case <-done:
			ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
			switch {
			case !ok:
				return cmd.ProcessState.ExitCode()
			case ws.Signaled():
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
}

// Exec runs args in the running container ref (a name, an ID or its prefix), in all its namespaces and
// its cgroup, with its environment plus env, its working directory and
// user, and the same reduced privileges; it returns the exit code.
func (e *Engine) Exec(ctx context.Context, ref string, args, env []string, stdio Stdio, sigs <-chan os.Signal) (int, error) {
	c, err := e.Get(ctx, ref)
	if err != nil {
		return 0, err
	}
	if c.State.Status != Running || !alive(c.State.PID, c.State.PIDStart) {
		return 0, fmt.Errorf("%w: container %s is not running", volume.ErrInvalid, c.Config.Name)
	}
	// The mount namespace is joined by the init itself, after its start:
	// the binary and its loader are found on the host.
	var nsFiles []*os.File
	defer func() {
		for _, f := range nsFiles {
			f.Close()
		}
	}()
	for _, ns := range []string{"ipc", "uts", "net", "pid", "cgroup", "mnt"} {
		f, err := os.Open(fmt.Sprintf("/proc/%d/ns/%s", c.State.PID, ns))
		if err != nil {
			return 0, fmt.Errorf("enter container %s: %w", c.Config.Name, err)
		}
		nsFiles = append(nsFiles, f)
	}
	g, err := loadGroup(c.ID())
	if err != nil {
		return 0, fmt.Errorf("enter container %s: %w", c.Config.Name, err)
	}
	cmd := e.initCommand(initproc.ModeExec, stdio)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	mnt := nsFiles[len(nsFiles)-1]
	type result struct {
		s   *started
		err error
	}
	res := make(chan result, 1)
	go func() {
		// This thread enters the container's namespaces and ends with this
		// goroutine (it stays locked): the init is forked from it and so
		// starts in them.
		runtime.LockOSThread()
		for _, f := range nsFiles[:len(nsFiles)-1] {
			if err := unix.Setns(int(f.Fd()), 0); err != nil {
				res <- result{err: fmt.Errorf("enter %s: %w", f.Name(), err)}
				return
			}
		}
		s, err := spawn(cmd, mnt)
		res <- result{s, err}
	}()
	r := <-res
	if r.err != nil {
		return 0, r.err
	}
	icfg := initproc.Config{
		Version: initproc.Version,
		Args:    args,
		Env:     containerEnv(c.Config, env),
		Cwd:     c.Config.WorkingDir,
		User:    c.Config.User,
		// A process joins a privileged container with its privileges.
		Privileged: c.Config.Privileged,
	}
	if !icfg.Privileged {
		if icfg.Seccomp, err = seccomp.Programs(); err != nil {
			r.s.abort()
			return 0, err
		}
	}
	if err := r.s.handshake(icfg, g.Add, nil); err != nil {
		return exitCodeOf(err), err
	}
	return wait(cmd, sigs), nil
}
