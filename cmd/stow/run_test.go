package main

import (
	"errors"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/container"
	"github.com/stowage/stowage/runtime/image"
)

func TestContainerConfig(t *testing.T) {
	img := image.Image{Name: "bb:latest", ID: "sha256:x", Config: image.Config{
		Env: []string{"PATH=/bin", "A=0"}, Cmd: []string{"sh"}, WorkingDir: "/w", User: "nobody",
	}}
	tests := []struct {
		name  string
		opts  runOptions
		args  []string
		check func(t *testing.T, c container.Config)
		err   string
	}{
		{name: "image defaults", opts: runOptions{network: "none"}, check: func(t *testing.T, c container.Config) {
			if !slices.Equal(c.Args, []string{"sh"}) || c.WorkingDir != "/w" || c.User != "nobody" ||
				c.Hostname != c.ID[:12] || c.Network != "none" || !slices.Equal(c.Env, img.Config.Env) {
				t.Errorf("%+v", c)
			}
		}},
		{name: "flags", args: []string{"echo", "hi"}, opts: runOptions{
			network: "host", name: "web", hostname: "h", workdir: "/x", user: "0:0", env: []string{"A=1", "B=2"},
			volumes: []string{"data:/d:ro"}, memory: "64m", cpus: "0.5", pidsLimit: 64, autoRemove: true, init: true,
		}, check: func(t *testing.T, c container.Config) {
			want := container.Resources{MemoryBytes: 64 << 20, CPUs: 0.5, PidsMax: 64}
			if !slices.Equal(c.Args, []string{"echo", "hi"}) || c.Name != "web" || c.Hostname != "h" ||
				c.WorkingDir != "/x" || c.User != "0:0" || c.Network != "host" || c.Resources != want ||
				!c.AutoRemove || !c.Init || !slices.Equal(c.Env, []string{"PATH=/bin", "A=1", "B=2"}) ||
				len(c.Volumes) != 1 || !c.Volumes[0].ReadOnly {
				t.Errorf("%+v", c)
			}
		}},
		{name: "mounts and privileged", opts: runOptions{network: "host", privileged: true, mounts: []string{
			"type=bind,source=/,target=/host,readonly", "type=bind,source=/,target=/mnt,propagation=rshared",
		}}, check: func(t *testing.T, c container.Config) {
			want := []container.Bind{
				{Source: "/", Target: "/host", ReadOnly: true, Propagation: container.PropagationRPrivate},
				{Source: "/", Target: "/mnt", Propagation: container.PropagationRShared},
			}
			if !c.Privileged || !slices.Equal(c.Binds, want) {
				t.Errorf("privileged %v, binds %+v, want %+v", c.Privileged, c.Binds, want)
			}
		}},
		{name: "no pids limit", opts: runOptions{network: "none", pidsLimit: -1}, check: func(t *testing.T, c container.Config) {
			if c.Resources.PidsMax != 0 {
				t.Errorf("PidsMax = %d", c.Resources.PidsMax)
			}
		}},
		{name: "bad memory", opts: runOptions{network: "none", memory: "lots"}, err: "--memory"},
		{name: "bad cpus", opts: runOptions{network: "none", cpus: "0"}, err: "--cpus"},
		{name: "bad pids", opts: runOptions{network: "none", pidsLimit: -5}, err: "--pids-limit"},
		{name: "bad net", opts: runOptions{network: "bridge"}, err: "--net"},
		{name: "bad env", opts: runOptions{network: "none", env: []string{"NOVALUE"}}, err: "KEY=VALUE"},
		{name: "bad volume", opts: runOptions{network: "none", volumes: []string{"data"}}, err: "NAME:/PATH"},
		{name: "relative workdir", opts: runOptions{network: "none", workdir: "x"}, err: "absolute"},
		{name: "bad name", opts: runOptions{network: "none", name: "a/b"}, err: "container name"},
		{name: "bad mount", opts: runOptions{network: "none", mounts: []string{"type=bind,source=/nope-" + img.ID + ",target=/d"}}, err: "does not exist"},
		{name: "mount on a volume", opts: runOptions{network: "none", volumes: []string{"data:/d"}, mounts: []string{"type=bind,source=/,target=/d"}}, err: "mounted twice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := tt.opts.containerConfig(img, []string{"/layers/a"}, tt.args)
			if tt.err != "" {
				if !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want ErrInvalid with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
	noCmd := img
	noCmd.Config.Cmd = nil
	if _, err := (runOptions{network: "none"}).containerConfig(noCmd, nil, nil); err == nil || !strings.Contains(err.Error(), "no command") {
		t.Errorf("image without a command: %v", err)
	}
	entry := img
	entry.Config.Entrypoint = []string{"/init"}
	if c, err := (runOptions{network: "none"}).containerConfig(entry, nil, []string{"x"}); err != nil || !slices.Equal(c.Args, []string{"/init", "x"}) {
		t.Errorf("entrypoint with a command: %q %v", c.Args, err)
	}
}

func TestParseSignal(t *testing.T) {
	for in, want := range map[string]syscall.Signal{"KILL": syscall.SIGKILL, "sigterm": syscall.SIGTERM, "SIGHUP": syscall.SIGHUP, "15": syscall.SIGTERM} {
		if got, err := parseSignal(in); err != nil || got != want {
			t.Errorf("parseSignal(%q) = %v, %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "NOPE", "0", "99"} {
		if _, err := parseSignal(bad); !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("parseSignal(%q) = %v", bad, err)
		}
	}
}

func TestRunUsage(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"run"}, "requires at least 1 arg"},
		{[]string{"exec", "x"}, "requires at least 2 arg"},
		{[]string{"stop", "-t", "-1", "x"}, "invalid -t"},
		{[]string{"kill", "-s", "NOPE", "x"}, `signal "NOPE"`},
	}
	for _, tt := range tests {
		_, stderr, code := stow(t, map[string]string{"STOW_ROOT": t.TempDir()}, tt.args...)
		if code != 1 || !strings.Contains(stderr, tt.want) {
			t.Errorf("stow %q: exit %d, %q, want 1 and %q", tt.args, code, stderr, tt.want)
		}
	}
}

func TestExitStatus(t *testing.T) {
	if got := exitStatus(errors.New("x")); got != 1 {
		t.Errorf("plain error: %d", got)
	}
	if got := exitStatus(containerError(&container.CommandError{Code: 127, Msg: "exec: nope"})); got != 127 {
		t.Errorf("command error: %d", got)
	}
	err := &exitError{code: 3, err: errReported}
	if got := exitStatus(err); got != 3 || !errors.Is(err, errReported) {
		t.Errorf("exit error: %d", got)
	}
}
