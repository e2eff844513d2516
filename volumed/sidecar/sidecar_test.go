package sidecar

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/csi"
	"github.com/stowage/stowage/plugins/volume/volumetest"
)

// The test binary doubles as the fake sidecar that testdata/fakestow.sh,
// the fake stow, runs as its container.
const (
	// fakeStowEnv names the directory where the fake stow keeps its state.
	fakeStowEnv = "STOWAGE_FAKE_STOW_DIR"
	// fakeServeEnv names the socket the fake sidecar serves CSI on.
	fakeServeEnv = "STOWAGE_FAKE_SIDECAR_SOCKET"
	// fakeSidecarEnv names the fake sidecar's binary for the fake stow.
	fakeSidecarEnv = "FAKE_SIDECAR"
)

func TestMain(m *testing.M) {
	if sock := os.Getenv(fakeServeEnv); sock != "" {
		os.Exit(fakeSidecar(sock))
	}
	os.Exit(m.Run())
}

// fakeSidecar serves a fake provider over CSI until SIGTERM.
func fakeSidecar(sock string) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	l, err := csi.Listen("unix://" + sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := csi.NewServer(volumetest.NewFake(filepath.Dir(sock), true), csi.ServerOptions{}).Serve(ctx, l); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(b)))
}

// alive reports whether pid runs: it exists and is no zombie.
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	return !strings.HasPrefix(rest, "Z") && !strings.HasPrefix(rest, "X")
}

// fakeClock is a Clock whose waits the test ends one by one.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan wait
}

// wait is one wait of the supervisor on the clock.
type wait struct {
	d time.Duration
	c chan time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC), waits: make(chan wait, 64)}
}

func (f *fakeClock) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fakeClock) After(d time.Duration) <-chan time.Time {
	c := make(chan time.Time, 1)
	f.waits <- wait{d: d, c: c}
	return c
}

// next returns the supervisor's next wait; the supervisor stays in it
// until fire.
func (f *fakeClock) next(t *testing.T) wait {
	t.Helper()
	select {
	case w := <-f.waits:
		return w
	case <-time.After(30 * time.Second): // a guard against a hung test, not a sleep
		t.Fatal("the supervisor did not wait on its clock within 30s")
		return wait{}
	}
}

// fire moves the clock on by the wait's duration and ends the wait.
func (f *fakeClock) fire(w wait) {
	f.mu.Lock()
	f.now = f.now.Add(w.d)
	now := f.now
	f.mu.Unlock()
	w.c <- now
}

// harness runs a supervisor against the fake stow.
type harness struct {
	t     *testing.T
	dir   string // the fake stow's state
	cfg   Config
	clock *fakeClock
	opts  Options
	sup   *Supervisor

	pending *wait // the wait the supervisor is in, not ended yet
	cancel  context.CancelFunc
	done    chan struct{}
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	fakeStow, err := filepath.Abs(filepath.Join("testdata", "fakestow.sh"))
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: a unix socket path must stay below 108 bytes.
	base, err := os.MkdirTemp("", "sidecar-")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dir: filepath.Join(base, "stow")}
	if err := os.Mkdir(h.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The fake stow finds its directory in the environment, which the
	// supervisor's children inherit.
	t.Setenv(fakeStowEnv, h.dir)
	t.Setenv(fakeSidecarEnv, self)
	h.cfg = Config{
		Name:        "ext",
		Image:       "stowage-provider",
		Command:     []string{"stow-provider", "local", "--endpoint", "unix:///csi/csi.sock", "--root", "/data"},
		Env:         []string{"A=1"},
		SocketDir:   filepath.Join(base, "sock"),
		MountDir:    filepath.Join(base, "root"),
		DataDir:     filepath.Join(base, "data"),
		Stow:        fakeStow,
		RuntimeRoot: filepath.Join(base, "runtime"),
	}
	client, err := csi.Dial(h.cfg.Endpoint(), csi.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h.clock = newFakeClock()
	h.opts = Options{
		Config: h.cfg, Prober: client, Clock: h.clock,
		PollInterval: 5 * time.Second, ProbeTimeout: 2 * time.Second, ProbeFailures: 2,
		StartTimeout: time.Hour, StartPoll: 100 * time.Millisecond,
		MinBackoff: time.Second, MaxBackoff: 8 * time.Second, StableAfter: 30 * time.Second, FailAfter: 3,
	}
	t.Cleanup(func() {
		h.stop()
		client.Close()
		b, _ := os.ReadFile(filepath.Join(h.dir, "pids"))
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		os.RemoveAll(base)
	})
	return h
}

// start runs a new supervisor.
func (h *harness) start() {
	h.sup = New(h.opts)
	h.pending = nil
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel, h.done = cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		h.sup.Run(ctx)
	}(h.done)
}

// stop cancels the supervisor and waits for Run to return.
func (h *harness) stop() {
	if h.cancel == nil {
		return
	}
	h.cancel()
	<-h.done
	h.cancel = nil
}

// step ends the wait the supervisor is in, if any, and returns the
// duration of its next wait, in which it then stays.
func (h *harness) step() time.Duration {
	h.t.Helper()
	if h.pending != nil {
		h.clock.fire(*h.pending)
		h.pending = nil
	}
	w := h.clock.next(h.t)
	h.pending = &w
	return w.d
}

// until steps the supervisor until, during a wait, its state is state, and
// returns that wait's duration.
func (h *harness) until(state string) time.Duration {
	h.t.Helper()
	for range 1000 {
		d := h.step()
		if st, _, _ := h.sup.Status(); st == state {
			return d
		}
	}
	st, lastErr, _ := h.sup.Status()
	h.t.Fatalf("the sidecar did not become %s: it is %s (last error %q)", state, st, lastErr)
	return 0
}

// calls returns the fake stow's calls, without the --root option.
func (h *harness) calls() []string {
	b, err := os.ReadFile(filepath.Join(h.dir, "calls"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		h.t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			out = append(out, strings.TrimPrefix(l, "--root "+h.cfg.RuntimeRoot+" "))
		}
	}
	return out
}

// count returns how many calls of stow sub there were.
func (h *harness) count(sub string) int {
	n := 0
	for _, c := range h.calls() {
		if strings.HasPrefix(c, sub+" ") {
			n++
		}
	}
	return n
}

// pid returns the running fake container's PID.
func (h *harness) pid() int {
	h.t.Helper()
	pid, err := readPID(filepath.Join(h.dir, "pid"))
	if err != nil {
		h.t.Fatal(err)
	}
	return pid
}

func TestWithTag(t *testing.T) {
	for in, want := range map[string]string{
		"stowage-provider": "stowage-provider:latest", "stowage-provider:1": "stowage-provider:1",
		"host:5000/x": "host:5000/x:latest", "x@sha256:ab": "x@sha256:ab",
	} {
		if got := withTag(in); got != want {
			t.Errorf("withTag(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRunArgs(t *testing.T) {
	c := Config{
		Name: "ext", Image: "img", Command: []string{"drv", "--x"}, Env: []string{"A=1", "B=2"},
		SocketDir: "/run/stowage/sidecars/ext", MountDir: "/var/lib/stowage", DataDir: "/var/lib/stowage/ext",
	}
	want := []string{"run", "-d", "--name", "stowage-sidecar-ext", "--privileged", "--net", "host",
		"--mount", "type=bind,source=/run/stowage/sidecars/ext,target=/csi",
		"--mount", "type=bind,source=/var/lib/stowage,target=/var/lib/stowage,propagation=rshared",
		"--mount", "type=bind,source=/var/lib/stowage/ext,target=/data",
		"-e", "A=1", "-e", "B=2", "img", "drv", "--x"}
	if got := c.RunArgs(); !reflect.DeepEqual(got, want) {
		t.Errorf("RunArgs =\n%q\nwant\n%q", got, want)
	}
	if got := c.Endpoint(); got != "unix:///run/stowage/sidecars/ext/csi.sock" {
		t.Errorf("Endpoint = %q", got)
	}
}

// TestStartStopAdopt: the supervisor starts the sidecar with the right
// command, reports it up, leaves it running when its context ends, and the
// next supervisor adopts it instead of starting another.
func TestStartStopAdopt(t *testing.T) {
	h := newHarness(t)
	h.start()
	if st, _, _ := h.sup.Status(); st != StateStarting && st != StateUp {
		t.Errorf("state at start = %s, want starting", st)
	}
	if d := h.until(StateUp); d != h.opts.PollInterval {
		t.Errorf("an up sidecar waits %s, want the poll interval %s", d, h.opts.PollInterval)
	}
	want := "run " + strings.Join(h.cfg.RunArgs()[1:], " ")
	if calls := h.calls(); len(calls) < 2 || calls[0] != "inspect stowage-sidecar-ext" || calls[1] != want {
		t.Errorf("stow calls = %q; want inspect, then %q", calls, want)
	}
	for _, dir := range []string{h.cfg.SocketDir, h.cfg.MountDir, h.cfg.DataDir} {
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("the supervisor did not create %s: %v", dir, err)
		}
	}
	pid := h.pid()

	h.stop()
	if !alive(pid) {
		t.Fatal("the sidecar stopped with its supervisor; it must keep running")
	}
	if n := h.count("rm"); n != 0 {
		t.Errorf("stow rm was called %d times", n)
	}

	h.start()
	h.until(StateUp)
	if n := h.count("run"); n != 1 {
		t.Errorf("stow run was called %d times, want once: the second supervisor must adopt the sidecar", n)
	}
	if got := h.pid(); got != pid {
		t.Errorf("the sidecar's PID changed from %d to %d", pid, got)
	}
	if _, lastErr, restarts := h.sup.Status(); restarts != 0 || lastErr != "" {
		t.Errorf("after adoption: restarts %d, last error %q; want 0 and none", restarts, lastErr)
	}

	// A running container with another image is replaced, not adopted.
	h.stop()
	h.opts.Config.Image = "other"
	h.start()
	h.until(StateUp)
	if n, m := h.count("run"), h.count("rm"); n != 2 || m != 1 {
		t.Errorf("after a config change: %d runs and %d removals, want 2 and 1", n, m)
	}
	if alive(pid) {
		t.Errorf("the old sidecar %d still runs after it was replaced", pid)
	}
}

// TestRestartBackoff: a sidecar that dies is restarted after 1s, 2s, 4s,
// then at most MaxBackoff, and again after 1s once it stayed up for
// StableAfter.
func TestRestartBackoff(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.until(StateUp)
	var backoffs []time.Duration
	for i := range 5 {
		if err := syscall.Kill(h.pid(), syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		backoffs = append(backoffs, h.until(StateRestarting))
		state, lastErr, restarts := h.sup.Status()
		if restarts != i+1 || !strings.Contains(lastErr, "sidecar exited with code 137") || !strings.Contains(lastErr, "fake sidecar says bye") {
			t.Errorf("after crash %d: %s, restarts %d, last error %q", i+1, state, restarts, lastErr)
		}
		h.until(StateUp)
	}
	if want := []time.Duration{1 * time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}; !reflect.DeepEqual(backoffs, want) {
		t.Errorf("backoffs = %v, want %v", backoffs, want)
	}
	if n := h.count("run"); n != 6 {
		t.Errorf("stow run was called %d times, want 6", n)
	}
	if _, lastErr, _ := h.sup.Status(); lastErr != "" {
		t.Errorf("up again with last error %q, want none", lastErr)
	}

	// Up for StableAfter: the next crash waits MinBackoff again.
	for range int(h.opts.StableAfter / h.opts.PollInterval) {
		if d := h.step(); d != h.opts.PollInterval {
			t.Fatalf("an up sidecar waits %s, want the poll interval", d)
		}
	}
	if err := syscall.Kill(h.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	if d := h.until(StateRestarting); d != time.Second {
		t.Errorf("backoff after a stable run = %s, want 1s", d)
	}
}

// TestRestartWhenProbeFails: a sidecar that runs but stops answering
// Probe is replaced after ProbeFailures probes in a row.
func TestRestartWhenProbeFails(t *testing.T) {
	h := newHarness(t)
	h.opts.ProbeTimeout = 500 * time.Millisecond // each failed Probe takes this long
	h.start()
	h.until(StateUp)
	pid := h.pid()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	h.until(StateRestarting)
	if _, lastErr, restarts := h.sup.Status(); restarts != 1 || !strings.Contains(lastErr, "did not answer Probe 2 times in a row") {
		t.Errorf("restarts %d, last error %q; want 1 and Probe failures", restarts, lastErr)
	}
	h.until(StateUp)
	if alive(pid) {
		t.Errorf("the hung sidecar %d was not removed", pid)
	}
	if n, m := h.count("run"), h.count("rm"); n != 2 || m != 1 {
		t.Errorf("%d runs and %d removals, want 2 and 1", n, m)
	}
}

// TestFailedStarts: a sidecar that cannot start is retried with backoff,
// shows failed after FailAfter attempts and comes up once it can.
func TestFailedStarts(t *testing.T) {
	h := newHarness(t)
	failRun := filepath.Join(h.dir, "fail-run")
	if err := os.WriteFile(failRun, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	h.start()
	var states []string
	var backoffs []time.Duration
	for range 5 {
		d := h.step()
		st, lastErr, _ := h.sup.Status()
		if !strings.Contains(lastErr, `start sidecar: stow run: stow: image "stowage-provider": not found`) {
			t.Errorf("last error %q, want stow run's", lastErr)
		}
		states, backoffs = append(states, st), append(backoffs, d)
	}
	if want := []string{StateRestarting, StateRestarting, StateFailed, StateFailed, StateFailed}; !reflect.DeepEqual(states, want) {
		t.Errorf("states = %v, want %v", states, want)
	}
	if want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 8 * time.Second}; !reflect.DeepEqual(backoffs, want) {
		t.Errorf("backoffs = %v, want %v", backoffs, want)
	}
	if err := os.Remove(failRun); err != nil {
		t.Fatal(err)
	}
	h.until(StateUp)
	if _, lastErr, restarts := h.sup.Status(); lastErr != "" || restarts != 5 {
		t.Errorf("up: last error %q, restarts %d; want none and 5", lastErr, restarts)
	}
}

// TestChanged: Changed's channel closes at the next change of state.
func TestChanged(t *testing.T) {
	h := newHarness(t)
	h.start()
	ch := h.sup.Changed()
	h.until(StateUp)
	select {
	case <-ch:
	default:
		t.Error("Changed did not close when the sidecar came up")
	}
}

// received reports whether c is closed or holds a value, without waiting.
func received(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// awaitClosed waits until c is closed.
func awaitClosed(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(30 * time.Second): // a guard against a hung test, not a sleep
		t.Fatalf("%s within 30s", what)
	}
}

// waitDead polls until pid has ended.
func waitDead(t *testing.T, pid int) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for alive(pid) {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("process %d still runs 30s after SIGKILL", pid)
		}
	}
}

// TestCheckNow: asked to check now, the supervisor checks at once rather
// than at its next poll: a healthy sidecar stays up and the answer comes
// without the clock moving; a crashed one is restarting at once, without
// waiting for the poll interval.
func TestCheckNow(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.until(StateUp)
	pid, now := h.pid(), h.clock.Now()

	done := h.sup.CheckNow()
	awaitClosed(t, done, "CheckNow of a healthy sidecar did not answer")
	if st, _, restarts := h.sup.Status(); st != StateUp || restarts != 0 {
		t.Errorf("after CheckNow of a healthy sidecar: %s, %d restarts; want up, 0", st, restarts)
	}
	// The supervisor polls again, from the check on.
	w := h.clock.next(t)
	h.pending = &w
	if w.d != h.opts.PollInterval {
		t.Errorf("after the check the supervisor waits %s, want the poll interval", w.d)
	}

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitDead(t, pid) // so that the check cannot still find it running
	done = h.sup.CheckNow()
	// The poll's wait is not ended: the next wait is the restart's backoff.
	w = h.clock.next(t)
	h.pending = &w
	state, lastErr, restarts := h.sup.Status()
	if w.d != h.opts.MinBackoff || state != StateRestarting || restarts != 1 || !strings.Contains(lastErr, "sidecar exited with code 137") {
		t.Errorf("after a crash and CheckNow: waits %s in state %s, %d restarts, last error %q; want %s restarting, 1, exit code 137",
			w.d, state, restarts, lastErr, h.opts.MinBackoff)
	}
	if !received(done) {
		t.Error("CheckNow's channel is still open after the sidecar was found down")
	}
	if got := h.clock.Now(); !got.Equal(now) {
		t.Errorf("the clock moved by %s; the supervisor must not wait for its poll", got.Sub(now))
	}

	h.until(StateUp)
	if n := h.count("run"); n != 2 {
		t.Errorf("stow run was called %d times, want 2", n)
	}
}

// TestCheckNowWhileDown: CheckNow while the sidecar waits to restart is
// answered when it is up again; the request left over makes one more
// check, which changes nothing.
func TestCheckNowWhileDown(t *testing.T) {
	h := newHarness(t)
	h.start()
	h.until(StateUp)
	if err := syscall.Kill(h.pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	h.until(StateRestarting)
	done := h.sup.CheckNow()
	if received(done) {
		t.Fatal("CheckNow answered while the sidecar waits to restart")
	}
	h.until(StateUp)
	if !received(done) {
		t.Error("CheckNow's channel is still open after the sidecar came up")
	}
	for range 3 {
		if h.step(); h.sup.currentState() != StateUp {
			t.Fatalf("the sidecar is %s after a left-over check", h.sup.currentState())
		}
	}
	if n := h.count("run"); n != 2 {
		t.Errorf("stow run was called %d times, want 2", n)
	}
}
