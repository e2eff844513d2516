package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/container"
	"github.com/stowage/stowage/runtime/image"
	"github.com/stowage/stowage/volumed/client"
)

// exitError makes stow exit with a status other than 1: a container's exit
// code. Its text is printed unless it wraps errReported.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitStatus returns the exit status for a command's error: an exitError's
// code, else 1.
func exitStatus(err error) int {
	var e *exitError
	if errors.As(err, &e) {
		return e.code
	}
	return 1
}

// containerError gives a container command's error the exit status that
// Docker gives it (127 for a command not found, ...).
func containerError(err error) error {
	var ce *container.CommandError
	if errors.As(err, &ce) {
		return &exitError{code: ce.Code, err: err}
	}
	return err
}

// runtimeCLI holds what the container commands share.
type runtimeCLI struct {
	*app
	pluginSocket string
}

// addContainerCommands adds run, ps, stop, kill, rm, exec, inspect, logs,
// diff, commit, pause and unpause, and the --plugin-socket flag they use.
func (a *app) addContainerCommands(root *cobra.Command) {
	r := &runtimeCLI{app: a}
	root.PersistentFlags().StringVar(&r.pluginSocket, "plugin-socket", client.DefaultPluginSocket,
		"volumed's plugin `SOCKET`, through which containers mount volumes (env STOW_PLUGIN_SOCKET)")
	root.AddCommand(r.runCommand(), r.psCommand(), r.stopCommand(), r.killCommand(), r.rmCommand(),
		r.execCommand(), r.inspectCommand(), r.logsCommand(), r.diffCommand(), r.commitCommand(),
		r.pauseCommand(), r.unpauseCommand())
}

// engine returns the container engine over the runtime root; its warnings
// go to standard error.
func (r *runtimeCLI) engine(cmd *cobra.Command) (*container.Engine, error) {
	socket := r.pluginSocket
	if !cmd.Flags().Changed("plugin-socket") {
		if s := r.getenv("STOW_PLUGIN_SOCKET"); s != "" {
			socket = s
		}
	}
	log := slog.New(slog.NewTextHandler(r.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return container.New(container.Options{Root: r.runtimeRoot(), PluginSocket: socket, Logger: log})
}

// runOptions are the flags of `stow run`.
type runOptions struct {
	name, workdir, hostname, user string
	memory, cpus, network         string
	pidsLimit                     int64
	autoRemove, detach, init      bool
	privileged                    bool
	env, volumes, mounts          []string
}

// containerConfig checks the flags and makes the container's configuration
// from them and the image.
func (o runOptions) containerConfig(img image.Image, lowers, cmdArgs []string) (container.Config, error) {
	cfg := container.Config{
		ID: container.NewID(), Name: o.name, Image: img.Name, ImageID: img.ID, Lowers: lowers,
		WorkingDir: img.Config.WorkingDir, User: img.Config.User, Hostname: o.hostname,
		Init: o.init, AutoRemove: o.autoRemove, Detach: o.detach, Created: time.Now().UTC(),
	}
	var err error
	if cfg.Name != "" {
		if err := container.ValidateName(cfg.Name); err != nil {
			return cfg, err
		}
	}
	if cfg.Volumes, err = container.ParseVolumes(o.volumes); err != nil {
		return cfg, err
	}
	if cfg.Binds, err = container.ParseMounts(o.mounts, cfg.Volumes); err != nil {
		return cfg, err
	}
	cfg.Privileged = o.privileged
	if cfg.Env, err = container.ParseEnv(img.Config.Env, o.env); err != nil {
		return cfg, err
	}
	if cfg.Network, err = container.ParseNetwork(o.network); err != nil {
		return cfg, err
	}
	if o.memory != "" {
		if cfg.Resources.MemoryBytes, err = volume.ParseSize(o.memory); err != nil {
			return cfg, fmt.Errorf("--memory: %w", err)
		}
	}
	if o.cpus != "" {
		if cfg.Resources.CPUs, err = container.ParseCPUs(o.cpus); err != nil {
			return cfg, err
		}
	}
	switch {
	case o.pidsLimit > 0:
		cfg.Resources.PidsMax = o.pidsLimit
	case o.pidsLimit < -1:
		return cfg, fmt.Errorf("%w: --pids-limit %d: use a positive number, or -1 or 0 for none", volume.ErrInvalid, o.pidsLimit)
	}
	if o.workdir != "" {
		if o.workdir[0] != '/' {
			return cfg, fmt.Errorf("%w: -w %q: the working directory must be absolute", volume.ErrInvalid, o.workdir)
		}
		cfg.WorkingDir = o.workdir
	}
	if o.user != "" {
		cfg.User = o.user
	}
	cfg.Args = append(append([]string(nil), img.Config.Entrypoint...), img.Config.Cmd...)
	if len(cmdArgs) > 0 {
		cfg.Args = append(append([]string(nil), img.Config.Entrypoint...), cmdArgs...)
	}
	if len(cfg.Args) == 0 {
		return cfg, fmt.Errorf("%w: no command: the image %s has none; give one after the image", volume.ErrInvalid, img.Name)
	}
	if cfg.Hostname == "" {
		cfg.Hostname = cfg.ID[:12]
	}
	return cfg, nil
}

func (r *runtimeCLI) runCommand() *cobra.Command {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run [OPTIONS] IMAGE [COMMAND [ARG...]]",
		Short: "Run a command in a new container",
		Long: `Run a command in a new container of an image and wait for it.

The command runs as PID 1 of the container, with standard input, output
and error attached; stow exits with its exit code (128+N when signal N
killed it, 125 when the container could not be set up, 126 when the command
cannot be executed, 127 when it is not found) and forwards the signals it
gets (INT, TERM, HUP, QUIT, USR1, USR2, WINCH) to it. As PID 1, the command
gets only the signals it handles, and must reap the children it starts, as
a shell does. With --init a minimal init is PID 1 instead and the command
its child, as with 'docker run --init': the init forwards every signal it
can catch to the command, reaps every zombie and exits with the command's
status.

With -d the container runs detached: stow prints its ID once its command
runs, and its output goes to a log ('stow logs').

Volumes come from volumed through its plugin socket (--plugin-socket):
-v NAME:/PATH[:ro] mounts the volume NAME at /PATH; only named volumes are
supported. The container has no network but its own loopback with
--net none (the default), or the host's with --net host. As in Docker, its
/etc/hostname, /etc/hosts (localhost and its host name) and
/etc/resolv.conf (the host's with --net host, without name servers
otherwise) are files of its own, bound over the image's, unless a mount
covers them.

--mount type=bind,source=/HOST/DIR,target=/PATH binds a host directory
(absolute, existing) into the container, with what is mounted below it.
Further fields: readonly (or ro, =true|false), and propagation
(or bind-propagation) = rprivate (the default; private means the same),
rshared or rslave. With rshared, mounts made below the target inside the
container appear below the source on the host, and the other way round;
with rslave only the host's appear in the container. For both the host side
must be a shared mount: if neither the source nor the mount that holds it
is, stow binds the source on itself and marks it shared, and leaves that
bind in place. Mounts the container made below an rshared target stay on
the host after it ends: whoever made them unmounts them.

--privileged keeps every capability and the container runs without the
seccomp filter, so it may mount; its /dev is the host's (with its own
devpts, shm and mqueue), so it sees every device, also loop devices
allocated later. no_new_privs, the masked /proc paths and the read-only
/sys stay. A storage provider runs as a sidecar this way:

  stow run -d --privileged --net host \
    --mount type=bind,source=/run/stowage/csi,target=/csi \
    --mount type=bind,source=/srv/provider,target=/data \
    --mount type=bind,source=/var/lib/stowage,target=/var/lib/stowage,propagation=rshared \
    stowage-provider stow-provider local --endpoint unix:///csi/csi.sock --root /data`,
		Example: `  stow run --rm -v data:/data busybox sh -c 'echo hi > /data/f'
  stow run -d --name web --memory 64m --cpus 0.5 busybox httpd -f`,
		Args:                  cobra.MinimumNArgs(1),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := r.imageStore()
			if err != nil {
				return err
			}
			img, err := findImage(s, args[0])
			if err != nil {
				return err
			}
			lowers, err := s.LayerDirs(img)
			if err != nil {
				return err
			}
			cfg, err := o.containerConfig(img, lowers, args[1:])
			if err != nil {
				return err
			}
			e, err := r.engine(cmd)
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := e.Sweep(ctx); err != nil {
				r.report(err)
			}
			c, err := e.Create(cfg)
			if err != nil {
				return err
			}
			if o.detach {
				if err := e.Start(ctx, c.ID()); err != nil {
					return containerError(err)
				}
				_, err := fmt.Fprintln(r.stdout, c.ID())
				return err
			}
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, container.Forwarded()...)
			defer signal.Stop(sigs)
			st, err := e.Run(ctx, c.ID(), container.Stdio{Stdin: os.Stdin, Stdout: r.stdout, Stderr: r.stderr}, sigs)
			if err != nil {
				return containerError(err)
			}
			if st.ExitCode != 0 {
				return &exitError{code: st.ExitCode, err: errReported}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.SetInterspersed(false) // flags after IMAGE belong to the command
	f.StringVar(&o.name, "name", "", "container `NAME` (default: the ID's first 12 digits)")
	f.BoolVar(&o.autoRemove, "rm", false, "remove the container when it exits")
	f.BoolVarP(&o.detach, "detach", "d", false, "run in the background and print the container's ID")
	f.BoolVar(&o.init, "init", false, "run an init as PID 1 that forwards signals and reaps zombies")
	f.StringArrayVarP(&o.env, "env", "e", nil, "set an environment variable `KEY=VALUE`, repeatable")
	f.StringVarP(&o.workdir, "workdir", "w", "", "working `DIR` of the command (absolute)")
	f.StringVarP(&o.user, "user", "u", "", "run as `USER[:GROUP]`, names or numbers")
	f.StringVar(&o.hostname, "hostname", "", "container host `NAME` (default: the ID's first 12 digits)")
	f.StringArrayVarP(&o.volumes, "volume", "v", nil, "mount a volume `NAME:/PATH[:ro]`, repeatable")
	f.StringArrayVar(&o.mounts, "mount", nil, "bind a host directory, `SPEC`: type=bind,source=/DIR,target=/PATH[,readonly][,propagation=rprivate|rshared|rslave], repeatable")
	f.BoolVar(&o.privileged, "privileged", false, "keep every capability, no seccomp filter, the host's /dev")
	f.StringVar(&o.memory, "memory", "", "memory limit `SIZE`, e.g. 64m")
	f.StringVar(&o.cpus, "cpus", "", "CPU limit in `CPUS`, e.g. 0.5")
	f.Int64Var(&o.pidsLimit, "pids-limit", 0, "limit the number of processes to `N` (-1 or 0: none)")
	f.StringVar(&o.network, "net", container.NetNone, "network `MODE`: none or host")
	return cmd
}

// parseSignal parses a signal name (KILL, SIGKILL) or number.
func parseSignal(s string) (syscallSignal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscallSignal(n), nil
	}
	if sig, ok := signalByName(s); ok {
		return sig, nil
	}
	return 0, fmt.Errorf("%w: signal %q: use a name such as TERM or KILL, or a number", volume.ErrInvalid, s)
}
