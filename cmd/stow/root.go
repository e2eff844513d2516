package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/volumed/client"
)

const defaultHost = "unix:///run/stowage/volumed.sock"

// app holds what every command shares: global flags and output streams.
type app struct {
	host   string
	format string
	// runtimeDir is --root, the runtime root; see runtimeRoot.
	runtimeDir string
	stdout     io.Writer
	stderr     io.Writer
	getenv     func(string) string
}

// errReported is returned by a command that has printed its errors itself.
var errReported = errors.New("errors reported")

// run executes the stow command line args and returns the exit status: 0 on
// success, 1 on any error, usage errors included, and a container's exit
// code for run and exec.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdout: stdout, stderr: stderr, getenv: getenv}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	// Flags and arguments are checked before PersistentPreRunE runs; an
	// error before it is a usage error.
	parsed := false
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := a.setup(cmd); err != nil {
			return err
		}
		parsed = true
		return nil
	}
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return 0
	}
	if !errors.Is(err, errReported) {
		fmt.Fprintf(stderr, "stow: %s\n", err)
	}
	if !parsed {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	}
	return exitStatus(err)
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "stow",
		Short: "Manage stowage volumes and containers",
		Long: `stow manages stowage's volumes, through volumed's control API, and runs
containers with the bundled runtime, whose volumes come from volumed.

Errors are printed as "stow: <message>" on standard error; the exit status
is 1 on any error, usage errors included; run and exec exit with the
container command's exit code.`,
		SilenceErrors:     true,
		SilenceUsage:      true,
		CompletionOptions: cobra.CompletionOptions{DisableDefaultCmd: true},
	}
	f := root.PersistentFlags()
	f.StringVar(&a.host, "host", defaultHost, "volumed's API socket as `unix:///PATH` (env STOW_HOST)")
	f.StringVar(&a.format, "format", "table", "output `FORMAT`: table or json")
	f.StringVar(&a.runtimeDir, "root", "", "runtime root `DIR` (env STOW_ROOT, default "+defaultRuntimeRoot+")")
	root.AddCommand(a.imageCommand(), a.imagesCommand())
	root.AddCommand(a.volumeCommand(), a.providerCommand(), a.statusCommand(), a.versionCommand(), a.migrateCommand())
	a.addContainerCommands(root)
	return root
}

// group returns a command that only holds subcommands: without arguments it
// prints its help, and it rejects an unknown subcommand as a usage error.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	cmd := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	cmd.AddCommand(subs...)
	return cmd
}

// setup checks the global flags and applies STOW_HOST.
func (a *app) setup(cmd *cobra.Command) error {
	if a.format != "table" && a.format != "json" {
		return fmt.Errorf("invalid --format %q: use table or json", a.format)
	}
	if !cmd.Flags().Changed("host") {
		if h := a.getenv("STOW_HOST"); h != "" {
			a.host = h
		}
	}
	return nil
}

func (a *app) client() (*client.Client, error) {
	return client.New(a.host)
}

func (a *app) json() bool { return a.format == "json" }

// printJSON writes v as indented JSON.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "    ")
	return enc.Encode(v)
}

// printTable writes a header and rows in aligned columns.
func (a *app) printTable(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	return tw.Flush()
}

// report prints one error of a command that goes on after it.
func (a *app) report(err error) {
	fmt.Fprintf(a.stderr, "stow: %s\n", err)
}

// each runs f for every name, printing the name when f succeeds and the
// error when it fails, and goes on past failures; it fails at the end if
// one did, as `docker rm a b` does.
func (a *app) each(names []string, f func(name string) error) error {
	failed := false
	for _, name := range names {
		if err := f(name); err != nil {
			a.report(err)
			failed = true
			continue
		}
		fmt.Fprintln(a.stdout, name)
	}
	if failed {
		return errReported
	}
	return nil
}

// orDash returns s, or "-" when it is empty, to keep table columns aligned.
func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
