// Package sidecar runs a CSI driver in a container of the bundled runtime
// and keeps it running: it starts the container through the stow binary (a
// child process, so the daemon core links no runtime code), waits until the
// driver answers Probe on its socket, watches it, and restarts it with
// exponential backoff when it exits or stops answering.
//
// The container is `stow run -d --privileged --net host` with three bind
// mounts: the socket directory at /csi (the driver listens on
// /csi/csi.sock, volumed dials SocketDir/csi.sock), the mount directory at
// the same path with rshared propagation (so the mounts the driver makes
// below volumed's root reach the host and the consumers), and the data
// directory at /data (so volumes outlive the container).
//
// When its context is done, Run leaves the container running: the mounts
// it made stay in place for the consumers that hold them, and the next
// volumed adopts the container if it still answers Probe, instead of
// restarting it.
package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stowage/stowage/volumed/api"
)

// States of a sidecar, as Status reports them: the provider states of
// volumed/api.
const (
	// StateStarting: the first start since Run began is in progress.
	StateStarting = api.ProviderStarting
	// StateUp: the container runs and its driver answers Probe.
	StateUp = api.ProviderUp
	// StateRestarting: the sidecar went down, or a start failed, and the
	// supervisor is bringing it back (waiting out the backoff or starting).
	StateRestarting = api.ProviderRestarting
	// StateFailed: FailAfter starts in a row failed; the supervisor keeps
	// trying at the longest backoff, but a user should look.
	StateFailed = api.ProviderFailed
)

// SocketName is the name of the driver's socket in the socket directory.
const SocketName = "csi.sock"

// containerSocketDir is where the socket directory appears in the container.
const containerSocketDir = "/csi"

// containerDataDir is where the data directory appears in the container.
const containerDataDir = "/data"

// Config describes one sidecar.
type Config struct {
	// Name is the provider's name; the container is ContainerName().
	Name string
	// Image and Command are what the container runs; an empty Command
	// runs the image's own.
	Image   string
	Command []string
	// Env holds KEY=VALUE entries for the container.
	Env []string
	// SocketDir is the host directory bound at /csi; the driver must
	// listen on unix:///csi/csi.sock.
	SocketDir string
	// MountDir is the host directory bound at the same path with rshared
	// propagation; it must hold volumed's staging and mounts directories.
	MountDir string
	// DataDir is the host directory bound at /data.
	DataDir string
	// Stow is the path of the stow binary; RuntimeRoot its --root.
	Stow        string
	RuntimeRoot string
}

// ContainerName returns the name of the sidecar's container.
func (c Config) ContainerName() string { return "stowage-sidecar-" + c.Name }

// Endpoint returns the CSI endpoint volumed dials, unix://SOCKETDIR/csi.sock.
func (c Config) Endpoint() string { return "unix://" + filepath.Join(c.SocketDir, SocketName) }

// RunArgs returns the arguments of `stow --root RUNTIME_ROOT` that start
// the container.
func (c Config) RunArgs() []string {
	args := []string{"run", "-d", "--name", c.ContainerName(),
		"--privileged", "--net", "host",
		"--mount", "type=bind,source=" + c.SocketDir + ",target=" + containerSocketDir,
		"--mount", "type=bind,source=" + c.MountDir + ",target=" + c.MountDir + ",propagation=rshared",
		"--mount", "type=bind,source=" + c.DataDir + ",target=" + containerDataDir,
	}
	for _, e := range c.Env {
		args = append(args, "-e", e)
	}
	args = append(args, c.Image)
	return append(args, c.Command...)
}

// Prober asks the driver whether it is ready; *csi.Client is one. Probe
// honours ctx and returns an error while the driver is not ready.
type Prober interface {
	Probe(ctx context.Context) error
}

// reconnecter is a Prober that can skip its reconnect backoff, as
// csi.Client can: the supervisor calls Reconnect while it starts the
// driver, so that a connection whose backoff grew while the driver was
// away connects as soon as the new driver listens. Those that share the
// Prober (volumed's manager) get the fresh connection too.
type reconnecter interface {
	Reconnect()
}

// Clock is the time the supervisor waits on; tests inject a fake one.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Options configure a Supervisor. Zero durations and counts take the
// defaults given.
type Options struct {
	Config Config
	// Prober probes the driver at Config.Endpoint(); it must reconnect by
	// itself across restarts, as csi.Client does.
	Prober Prober
	Logger *slog.Logger
	// Clock nil is the real clock.
	Clock Clock
	// PollInterval is how often a running sidecar is checked (container
	// state and Probe); 5 s.
	PollInterval time.Duration
	// ProbeTimeout bounds one Probe; 5 s.
	ProbeTimeout time.Duration
	// ProbeFailures is how many Probes in a row may fail before the
	// sidecar is restarted; 3.
	ProbeFailures int
	// StartTimeout bounds a start, from `stow run` until Probe answers;
	// 60 s. StartPoll is how often Probe is tried meanwhile; 250 ms.
	StartTimeout time.Duration
	StartPoll    time.Duration
	// CommandTimeout bounds one stow command; 30 s.
	CommandTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before a restart, which
	// doubles after each restart; 1 s and 60 s. The backoff starts again
	// from MinBackoff once the sidecar has stayed up for StableAfter;
	// 5 min.
	MinBackoff  time.Duration
	MaxBackoff  time.Duration
	StableAfter time.Duration
	// FailAfter is how many starts in a row may fail before the state is
	// failed rather than restarting; 5.
	FailAfter int
}

// Supervisor runs one sidecar. Its methods are safe for concurrent use.
type Supervisor struct {
	cfg  Config
	opts Options
	log  *slog.Logger

	mu       sync.Mutex // guards the fields below
	state    string
	lastErr  string
	restarts int
	changed  chan struct{} // closed and replaced at every change
	// checking is closed when the check in progress ends, nextCheck when
	// the next one does (or at the next change, which answers both); nil
	// while nobody waits for them.
	checking, nextCheck chan struct{}

	wake chan struct{} // CheckNow's request to watch; buffered, at most one pending
}

// New returns a supervisor of the sidecar opts.Config; Run starts it.
func New(opts Options) *Supervisor {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&opts.PollInterval, 5*time.Second)
	def(&opts.ProbeTimeout, 5*time.Second)
	def(&opts.StartTimeout, 60*time.Second)
	def(&opts.StartPoll, 250*time.Millisecond)
	def(&opts.CommandTimeout, 30*time.Second)
	def(&opts.MinBackoff, time.Second)
	def(&opts.MaxBackoff, 60*time.Second)
	def(&opts.StableAfter, 5*time.Minute)
	if opts.ProbeFailures <= 0 {
		opts.ProbeFailures = 3
	}
	if opts.FailAfter <= 0 {
		opts.FailAfter = 5
	}
	if opts.Clock == nil {
		opts.Clock = realClock{}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Supervisor{
		cfg: opts.Config, opts: opts, log: log.With("container", opts.Config.ContainerName()),
		state: StateStarting, changed: make(chan struct{}), wake: make(chan struct{}, 1),
	}
}

// Status returns the sidecar's state (one of the State constants), the
// last error that took it down or kept it from starting, and how often it
// was restarted since Run began.
func (s *Supervisor) Status() (state, lastErr string, restarts int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state, s.lastErr, s.restarts
}

func (s *Supervisor) currentState() string {
	st, _, _ := s.Status()
	return st
}

// Changed returns a channel that is closed at the next change of Status.
func (s *Supervisor) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// CheckNow asks the supervisor to check the running sidecar (container
// state and Probe) at once rather than at the next PollInterval, as when
// its user finds the driver not answering. It does not block. The channel
// it returns is closed once a check that began after the call has ended,
// or at the next change of Status, whichever comes first: a caller that
// sees the state still up then knows the sidecar was found running. A
// check found failing counts towards ProbeFailures like a polled one.
// While the sidecar starts or waits to restart there is nothing to check:
// the channel closes at the next change. Once Run has returned it never
// closes.
func (s *Supervisor) CheckNow() <-chan struct{} {
	s.mu.Lock()
	if s.nextCheck == nil {
		s.nextCheck = make(chan struct{})
	}
	done := s.nextCheck
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default: // a check is asked for already; it answers this call too
	}
	return done
}

// beginCheck makes the requests so far wait for the check that begins.
func (s *Supervisor) beginCheck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checking, s.nextCheck = s.nextCheck, nil
}

// endCheck answers the requests that the check that ended covers.
func (s *Supervisor) endCheck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	closeCheck(&s.checking)
}

func closeCheck(c *chan struct{}) {
	if *c != nil {
		close(*c)
		*c = nil
	}
}

// set records a new status and wakes those waiting on Changed and on
// CheckNow.
func (s *Supervisor) set(state string, err error, restarted bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	closeCheck(&s.checking)
	closeCheck(&s.nextCheck)
	s.state = state
	if err != nil {
		s.lastErr = err.Error()
	} else if state == StateUp {
		s.lastErr = ""
	}
	if restarted {
		s.restarts++
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

// Run keeps the sidecar running until ctx is done, then returns and leaves
// the container running (see the package doc). It first adopts a running
// container of the same name, image and command that answers Probe.
func (s *Supervisor) Run(ctx context.Context) {
	backoff := s.opts.MinBackoff
	failures := 0 // starts in a row that failed
	adopt := true
	for {
		upAt, err := s.start(ctx, adopt)
		adopt = false
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			failures = 0
			s.set(StateUp, nil, false)
			err = s.watch(ctx)
			if ctx.Err() != nil {
				return
			}
			if s.opts.Clock.Now().Sub(upAt) >= s.opts.StableAfter {
				backoff = s.opts.MinBackoff
			}
			s.log.Warn("sidecar down; restarting", "err", err, "backoff", backoff)
		} else {
			failures++
			s.log.Warn("start sidecar", "err", err, "attempt", failures, "backoff", backoff)
		}
		state := StateRestarting
		if failures >= s.opts.FailAfter {
			state = StateFailed
		}
		s.set(state, err, true)
		select {
		case <-ctx.Done():
			return
		case <-s.opts.Clock.After(backoff):
		}
		backoff = min(2*backoff, s.opts.MaxBackoff)
	}
}

// start starts the container, or adopts a running one when adopt is set,
// and waits until its driver answers Probe. It returns when it came up.
func (s *Supervisor) start(ctx context.Context, adopt bool) (time.Time, error) {
	c, found, err := s.inspect(ctx)
	if err != nil {
		return time.Time{}, err
	}
	if found && adopt && c.State.Status == "running" && s.sameConfig(c) {
		err := s.probe(ctx)
		if err == nil {
			s.log.Info("adopted running sidecar", "pid", c.State.PID)
			return s.opts.Clock.Now(), nil
		}
		s.log.Info("running sidecar does not answer; replacing it", "err", err)
	}
	if found {
		if _, err := s.stow(ctx, "rm", "-f", s.cfg.ContainerName()); err != nil {
			return time.Time{}, fmt.Errorf("remove old sidecar container: %w", err)
		}
	}
	for _, dir := range []string{s.cfg.SocketDir, s.cfg.MountDir, s.cfg.DataDir} {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return time.Time{}, fmt.Errorf("create sidecar directory: %w", err)
		}
	}
	// The old container is gone, so whatever socket is left is stale; a
	// driver that does not remove it itself would fail to listen.
	if err := os.Remove(filepath.Join(s.cfg.SocketDir, SocketName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return time.Time{}, fmt.Errorf("remove stale socket: %w", err)
	}
	if _, err := s.stow(ctx, s.cfg.RunArgs()...); err != nil {
		return time.Time{}, fmt.Errorf("start sidecar: %w", err)
	}
	s.log.Info("sidecar started", "image", s.cfg.Image)
	deadline := s.opts.Clock.Now().Add(s.opts.StartTimeout)
	for {
		perr := s.probe(ctx)
		if perr == nil {
			return s.opts.Clock.Now(), nil
		}
		if err := s.running(ctx); err != nil {
			return time.Time{}, err
		}
		if !s.opts.Clock.Now().Before(deadline) {
			return time.Time{}, fmt.Errorf("sidecar did not answer Probe within %s: %w", s.opts.StartTimeout, perr)
		}
		select {
		case <-ctx.Done():
			return time.Time{}, ctx.Err()
		case <-s.opts.Clock.After(s.opts.StartPoll):
		}
	}
}

// watch checks the running sidecar every PollInterval, and at once when
// CheckNow asks, and returns why it went down, or nil when ctx is done. A
// check that finds it down is answered by Run's change of state.
func (s *Supervisor) watch(ctx context.Context) error {
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.opts.Clock.After(s.opts.PollInterval):
		case <-s.wake:
		}
		s.beginCheck()
		if err := s.running(ctx); err != nil {
			return err
		}
		err := s.probe(ctx)
		if err == nil {
			failures = 0
			s.endCheck()
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		failures++
		s.log.Warn("sidecar did not answer Probe", "err", err, "failures", failures)
		if failures >= s.opts.ProbeFailures {
			return fmt.Errorf("sidecar did not answer Probe %d times in a row: %w", failures, err)
		}
		s.endCheck()
	}
}

func (s *Supervisor) probe(ctx context.Context) error {
	if r, ok := s.opts.Prober.(reconnecter); ok && s.currentState() != StateUp {
		r.Reconnect()
	}
	pctx, cancel := context.WithTimeout(ctx, s.opts.ProbeTimeout)
	defer cancel()
	return s.opts.Prober.Probe(pctx)
}

// running returns an error saying how the container ended unless it runs.
func (s *Supervisor) running(ctx context.Context) error {
	c, found, err := s.inspect(ctx)
	switch {
	case err != nil:
		return err
	case !found:
		return errors.New("sidecar container is gone")
	case c.State.Status != "running":
		msg := fmt.Sprintf("sidecar exited with code %d", c.State.ExitCode)
		if c.State.Error != "" {
			msg += ": " + c.State.Error
		}
		if tail := s.logTail(ctx); tail != "" {
			msg += "; last output: " + tail
		}
		return errors.New(msg)
	}
	return nil
}

// container is the part of `stow inspect` the supervisor reads.
type container struct {
	Config struct {
		Image string   `json:"image"`
		Args  []string `json:"args"`
		Env   []string `json:"env"`
	} `json:"config"`
	State struct {
		Status   string `json:"status"`
		PID      int    `json:"pid"`
		ExitCode int    `json:"exit_code"`
		Error    string `json:"error"`
	} `json:"state"`
}

// inspect returns the container; found is false when there is none.
func (s *Supervisor) inspect(ctx context.Context) (c container, found bool, err error) {
	out, err := s.stow(ctx, "inspect", s.cfg.ContainerName())
	var cs []container
	if jerr := json.Unmarshal(out, &cs); jerr != nil {
		if err == nil {
			err = fmt.Errorf("read stow inspect: %w", jerr)
		}
		return c, false, fmt.Errorf("inspect sidecar: %w", err)
	}
	// stow inspect prints the containers it found and fails for the
	// others: an empty list is a container that does not exist.
	if len(cs) == 0 {
		return c, false, nil
	}
	return cs[0], true, nil
}

// sameConfig reports whether a container found at start runs what the
// configuration says, so that it may be adopted.
func (s *Supervisor) sameConfig(c container) bool {
	return withTag(c.Config.Image) == withTag(s.cfg.Image) && (len(s.cfg.Command) == 0 || slices.Equal(c.Config.Args, s.cfg.Command))
}

// withTag returns an image reference with its tag, ":latest" when it has
// neither tag nor digest, as stow records it.
func withTag(ref string) string {
	if strings.Contains(ref, "@") || strings.Contains(ref[strings.LastIndex(ref, "/")+1:], ":") {
		return ref
	}
	return ref + ":latest"
}

// logTail returns the last lines of the container's output, on one line.
func (s *Supervisor) logTail(ctx context.Context) string {
	out, err := s.stow(ctx, "logs", s.cfg.ContainerName())
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	tail := strings.Join(lines[max(0, len(lines)-3):], " | ")
	if len(tail) > 400 {
		tail = "…" + tail[len(tail)-400:]
	}
	return tail
}

// stow runs `stow --root RUNTIME_ROOT` with args and returns its standard
// output; args[0] is the subcommand, named in errors. It
// is not cancelled with ctx, only bounded by CommandTimeout, so that
// stopping volumed never interrupts a container's start halfway.
func (s *Supervisor) stow(ctx context.Context, args ...string) ([]byte, error) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.opts.CommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, s.cfg.Stow, append([]string{"--root", s.cfg.RuntimeRoot}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	// A detached container's monitor may keep stow's output open.
	cmd.WaitDelay = time.Second
	detach(cmd)
	err := cmd.Run()
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		return stdout.Bytes(), nil
	}
	msg := strings.TrimSpace(stderr.String())
	if msg == "" {
		msg = err.Error()
	}
	return stdout.Bytes(), fmt.Errorf("stow %s: %s", args[0], msg)
}
