package main

import (
	"fmt"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/runtime/container"
)

func (r *runtimeCLI) psCommand() *cobra.Command {
	var all, quiet bool
	cmd := &cobra.Command{
		Use:   "ps [-a] [-q]",
		Short: "List containers",
		Long: `List the running containers, or all of them with -a.

A container whose monitor died is marked exited with code -1 first, and
its volumes are unmounted.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			e, err := r.engine(cmd)
			if err != nil {
				return err
			}
			list, err := e.List(cmd.Context())
			if err != nil {
				return err
			}
			shown := []container.Container{}
			for i := len(list) - 1; i >= 0; i-- { // newest first
				if all || list[i].State.Status == container.Running {
					shown = append(shown, list[i])
				}
			}
			if quiet {
				for _, c := range shown {
					fmt.Fprintln(r.stdout, c.ID()[:12])
				}
				return nil
			}
			if r.json() {
				return r.printJSON(shown)
			}
			now := time.Now()
			rows := make([][]string, 0, len(shown))
			for _, c := range shown {
				status := c.StatusText(now)
				if paused, _ := e.Paused(c); paused {
					status += " (Paused)"
				}
				rows = append(rows, []string{c.ID()[:12], c.Config.Image, quoteCommand(c.Config.Args),
					humanAgo(now.Sub(c.Config.Created)), status, c.Config.Name})
			}
			return r.printTable([]string{"CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"}, rows)
		},
	}
	cmd.Flags().BoolVarP(&all, "all", "a", false, "show all containers, not only running ones")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "print only IDs")
	return cmd
}

// quoteCommand shows a command as `docker ps` does, shortened.
func quoteCommand(args []string) string {
	s := strings.Join(args, " ")
	if len(s) > 20 {
		s = s[:19] + "…"
	}
	return `"` + s + `"`
}

// humanAgo says how long ago something was, as `docker ps` does.
func humanAgo(d time.Duration) string {
	s := int64(d.Seconds())
	switch {
	case s < 60:
		return fmt.Sprintf("%d seconds ago", max(s, 1))
	case s < 3600:
		return fmt.Sprintf("%d minutes ago", s/60)
	case s < 48*3600:
		return fmt.Sprintf("%d hours ago", s/3600)
	}
	return fmt.Sprintf("%d days ago", s/86400)
}

// eachContainer runs f for every container named in args, reports each
// failure and fails at the end if one did.
func (r *runtimeCLI) eachContainer(cmd *cobra.Command, args []string, f func(e *container.Engine, ref string) error) error {
	e, err := r.engine(cmd)
	if err != nil {
		return err
	}
	return r.each(args, func(ref string) error { return f(e, ref) })
}

func (r *runtimeCLI) stopCommand() *cobra.Command {
	var seconds int
	cmd := &cobra.Command{
		Use:   "stop [-t SECONDS] CONTAINER...",
		Short: "Stop running containers",
		Long: `Stop containers: SIGTERM to the command, SIGKILL after the timeout.
A command that handles no SIGTERM (PID 1 gets only the signals it
handles) is killed after the timeout.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if seconds < 0 {
				return fmt.Errorf("invalid -t %d: use seconds >= 0", seconds)
			}
			return r.eachContainer(cmd, args, func(e *container.Engine, ref string) error {
				return e.Stop(cmd.Context(), ref, time.Duration(seconds)*time.Second)
			})
		},
	}
	cmd.Flags().IntVarP(&seconds, "time", "t", 10, "`SECONDS` to wait before killing")
	return cmd
}

func (r *runtimeCLI) killCommand() *cobra.Command {
	var sigName string
	cmd := &cobra.Command{
		Use:   "kill [-s SIGNAL] CONTAINER...",
		Short: "Send a signal to running containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sig, err := parseSignal(sigName)
			if err != nil {
				return err
			}
			return r.eachContainer(cmd, args, func(e *container.Engine, ref string) error {
				return e.Kill(cmd.Context(), ref, sig)
			})
		},
	}
	cmd.Flags().StringVarP(&sigName, "signal", "s", "KILL", "`SIGNAL` to send, a name or a number")
	return cmd
}

func (r *runtimeCLI) rmCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "rm [-f] CONTAINER...",
		Short: "Remove containers",
		Long: `Remove containers with their writable layers and logs. A running
container is refused unless -f, which kills it first.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return r.eachContainer(cmd, args, func(e *container.Engine, ref string) error {
				return e.Remove(cmd.Context(), ref, force)
			})
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill a running container first")
	return cmd
}

func (r *runtimeCLI) execCommand() *cobra.Command {
	var env []string
	cmd := &cobra.Command{
		Use:   "exec [-e KEY=VALUE] CONTAINER COMMAND [ARG...]",
		Short: "Run a command in a running container",
		Long: `Run a command in a running container: in its namespaces and cgroup,
with its environment, working directory, user and privileges. stow exits
with the command's exit code.`,
		Args:                  cobra.MinimumNArgs(2),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			extra, err := container.ParseEnv(nil, env)
			if err != nil {
				return err
			}
			e, err := r.engine(cmd)
			if err != nil {
				return err
			}
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, container.Forwarded()...)
			defer signal.Stop(sigs)
			code, err := e.Exec(cmd.Context(), args[0], args[1:], extra,
				container.Stdio{Stdin: os.Stdin, Stdout: r.stdout, Stderr: r.stderr}, sigs)
			if err != nil {
				return containerError(err)
			}
			if code != 0 {
				return &exitError{code: code, err: errReported}
			}
			return nil
		},
	}
	cmd.Flags().SetInterspersed(false)
	cmd.Flags().StringArrayVarP(&env, "env", "e", nil, "set an environment variable `KEY=VALUE`, repeatable")
	return cmd
}

func (r *runtimeCLI) inspectCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect CONTAINER...",
		Short: "Show containers in detail, as a JSON array",
		Long: `Show containers' configuration and state, as a JSON array whatever
--format says. Containers that cannot be shown are reported on standard
error, and the exit status is then 1.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := r.engine(cmd)
			if err != nil {
				return err
			}
			out := []container.Container{}
			failed := false
			for _, ref := range args {
				c, err := e.Get(cmd.Context(), ref)
				if err != nil {
					r.report(err)
					failed = true
					continue
				}
				out = append(out, c)
			}
			if err := r.printJSON(out); err != nil {
				return err
			}
			if failed {
				return errReported
			}
			return nil
		},
	}
}

func (r *runtimeCLI) logsCommand() *cobra.Command {
	var follow bool
	cmd := &cobra.Command{
		Use:   "logs [-f] CONTAINER",
		Short: "Print the output of a detached container",
		Long: `Print the standard output and error of a detached container, as it
wrote them. With -f, follow the output until the container exits.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := r.engine(cmd)
			if err != nil {
				return err
			}
			return e.Logs(cmd.Context(), args[0], follow, r.stdout)
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "follow the output until the container exits")
	return cmd
}
