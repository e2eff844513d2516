package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/migrate"
	"github.com/stowage/stowage/migrate/agent"
	"github.com/stowage/stowage/migrate/remote"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/client"
)

// defaultMigrateState is where stow keeps the journals of migrations.
const defaultMigrateState = "/var/lib/stowage/migrate"

// migrateFlags are the flags of `stow migrate`.
type migrateFlags struct {
	provider   string
	opts       []string
	bwlimit    string
	dryRun     bool
	resume     bool
	force      bool
	abort      bool
	live       bool
	after      string
	acceptNew  bool
	identity   string
	knownHosts string
	remoteStow string
	remoteHost string
	stateDir   string
	keepAlive  time.Duration
	interval   time.Duration
}

func (a *app) migrateCommand() *cobra.Command {
	f := &migrateFlags{}
	cmd := &cobra.Command{
		Use:   "migrate [flags] VOLUME ssh://[user@]host[:port][/?volume=NAME]",
		Short: "Move a volume to another host",
		Long: `Move a volume, with its data and metadata, to another host that runs volumed
and has stow installed.

One SSH connection carries everything: the target's volumed API (to create
the target volume, with the source's provider and options unless --provider
or -o say otherwise), file content over SFTP, and 'stow migrate agent' on
the target, which applies owners, modes, nanosecond mtimes, xattrs, POSIX
ACLs, hard links, holes, device nodes and fifos. The host key must be in
~/.ssh/known_hosts (or --known-hosts); --accept-new-host-key adds an unknown
one. Keys come from ~/.ssh (id_ed25519, id_ecdsa, id_rsa), --identity, or the
agent at SSH_AUTH_SOCK.

Copying runs in rounds while the volume may still be in use, each sending
only what changed; the final pass refuses while the volume is mounted,
unless --live: then the containers that hold it, stow's and Docker's, are
frozen (cgroup freezer, docker pause) for the final pass, verification and
switch only, then resumed (--after resume; the source then stays writable
and unmarked, and what they write from then on is not on the target) or
killed while still frozen (--after stop: every process of them gets SIGKILL
before the thaw, so none runs again, not even a SIGTERM handler, and they
write nothing the target misses). A mount that belongs to no such container
is refused.
Then both sides' manifests (content hashes and metadata) must match, the
target volume becomes ready, and the source volume is marked migrated: it
mounts read-only from then on, until 'stow volume rm'. An interrupted
migration continues when run again (--resume insists that one exists);
what arrived intact is not sent again. --abort gives up an interrupted
migration instead: it releases the migration's mounts and drops its journal;
a target volume that the migration created is kept unless --force is given
too, which removes it.

Progress goes to standard output as lines, or JSON lines with --format json.`,
		Example:               "  stow migrate db ssh://root@hostb\n  stow migrate db 'ssh://hostb:2222/?volume=db2' --bwlimit 50MiB",
		Args:                  cobra.ExactArgs(2),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.migrate(cmd, f, args[0], args[1])
		},
	}
	fl := cmd.PersistentFlags()
	fl.StringVarP(&f.provider, "provider", "p", "", "provider `NAME` of the target volume (default the source's)")
	fl.StringArrayVarP(&f.opts, "opt", "o", nil, "target volume option `KEY=VALUE`, repeatable")
	fl.StringVar(&f.bwlimit, "bwlimit", "", "limit file content to `RATE` bytes per second, e.g. 50MiB")
	fl.BoolVar(&f.dryRun, "dry-run", false, "connect and report what would be done; change nothing")
	fl.BoolVar(&f.resume, "resume", false, "continue an interrupted migration; fail if there is none")
	fl.BoolVar(&f.force, "force", false, "copy into a target volume that exists already, replacing its content; with --abort, remove the target volume this migration created")
	fl.BoolVar(&f.abort, "abort", false, "give up an interrupted migration: release its mounts and drop its journal")
	fl.BoolVar(&f.live, "live", false, "freeze the volume's containers (stow and Docker) for the final pass")
	fl.StringVar(&f.after, "after", afterResume, "with --live, what becomes of the frozen containers after the switch: `resume` or stop")
	fl.BoolVar(&f.acceptNew, "accept-new-host-key", false, "add the host key of an unknown host to known_hosts")
	fl.StringVar(&f.identity, "identity", "", "private key `FILE` (default ~/.ssh/id_ed25519, id_ecdsa, id_rsa)")
	fl.StringVar(&f.knownHosts, "known-hosts", "", "known hosts `FILE` (default ~/.ssh/known_hosts)")
	fl.StringVar(&f.remoteStow, "remote-stow", migrate.DefaultRemoteStow, "the stow `COMMAND` on the target")
	fl.StringVar(&f.remoteHost, "remote-host", "unix://"+migrate.DefaultRemoteAPI, "the target volumed's API socket as `unix:///PATH`")
	fl.StringVar(&f.stateDir, "state-dir", defaultMigrateState, "`DIR` for the journals of interrupted migrations")
	fl.DurationVar(&f.interval, "progress-interval", time.Second, "`INTERVAL` between progress reports during a round")
	fl.DurationVar(&f.keepAlive, "keepalive", 15*time.Second, "SSH keepalive `INTERVAL`; three unanswered ones end the migration")
	cmd.AddCommand(a.migrateAgentCommand(cmd, f))
	return cmd
}

// migrateAgentCommand is the target's side, started over SSH. A volume
// named "agent" still migrates: with arguments, it runs the migration.
func (a *app) migrateAgentCommand(parent *cobra.Command, f *migrateFlags) *cobra.Command {
	return &cobra.Command{
		Use:    "agent",
		Short:  "Serve a migration on the target host (started by stow migrate over SSH)",
		Hidden: true,
		Args:   cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				if len(args) != 1 {
					return fmt.Errorf("accepts 2 arg(s), received %d", len(args)+1)
				}
				return a.migrate(cmd, f, "agent", args[0])
			}
			log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
			clearUmask()
			return agent.Serve(cmd.Context(), os.Stdin, os.Stdout, agent.Config{Log: log})
		},
	}
}

func (a *app) migrate(cmd *cobra.Command, f *migrateFlags, vol, target string) error {
	t, err := remote.ParseTarget(target)
	if err != nil {
		return err
	}
	if f.abort && (f.live || f.dryRun || f.resume) {
		return fmt.Errorf("--abort does not go with --live, --dry-run or --resume")
	}
	if err := checkLiveFlags(cmd, f); err != nil {
		return err
	}
	vopts, err := parseOptions(f.opts)
	if err != nil {
		return err
	}
	if p, ok := vopts["provider"]; ok {
		if f.provider != "" && p != f.provider {
			return fmt.Errorf("provider given twice: -p %s and -o provider=%s", f.provider, p)
		}
		f.provider = p
		delete(vopts, "provider")
	}
	if f.interval <= 0 {
		return fmt.Errorf("invalid --progress-interval %s: must be more than 0", f.interval)
	}
	if f.keepAlive <= 0 {
		return fmt.Errorf("invalid --keepalive %s: must be more than 0", f.keepAlive)
	}
	var bw int64
	if f.bwlimit != "" {
		if bw, err = volume.ParseSize(f.bwlimit); err != nil {
			return fmt.Errorf("invalid --bwlimit: %w", err)
		}
	}
	remoteAPI, ok := strings.CutPrefix(f.remoteHost, "unix://")
	if !ok || !strings.HasPrefix(remoteAPI, "/") {
		return fmt.Errorf("invalid --remote-host %q: use unix:///PATH", f.remoteHost)
	}
	src, err := a.client()
	if err != nil {
		return err
	}
	st, err := src.Status(cmd.Context())
	if err != nil {
		return err
	}
	enc := json.NewEncoder(a.stdout)
	term := !a.json() && isTerminal(a.stdout)
	// inPlace is the round whose progress line is shown last, unfinished,
	// to be redrawn; 0 for none.
	inPlace := 0
	opts := migrate.Options{
		Volume: vol,
		Target: t,
		SSH: remote.Config{
			KnownHosts:       f.knownHosts,
			AcceptNewHostKey: f.acceptNew,
			Identity:         f.identity,
			AgentSocket:      a.getenv("SSH_AUTH_SOCK"),
			KeepAlive:        f.keepAlive,
		},
		Provider:         f.provider,
		VolumeOptions:    vopts,
		RemoteStow:       f.remoteStow,
		RemoteAPI:        remoteAPI,
		Force:            f.force,
		DryRun:           f.dryRun,
		Resume:           f.resume,
		BWLimit:          bw,
		StateDir:         f.stateDir,
		ProgressInterval: f.interval,
		Source:           src,
		SourcePlugin:     client.NewPlugin(st.PluginSocket),
		Progress: func(e migrate.Event) {
			if a.json() {
				_ = enc.Encode(e)
				return
			}
			if !term {
				fmt.Fprintln(a.stdout, progressLine(e))
				return
			}
			// On a terminal a round's progress redraws one line, with an ETA.
			round := e.Phase == migrate.PhasePrecopy || e.Phase == migrate.PhaseFinal
			switch {
			case inPlace != 0 && round && e.Round == inPlace:
				fmt.Fprint(a.stdout, "\r\033[K")
			case inPlace != 0:
				fmt.Fprintln(a.stdout)
			}
			line := progressLine(e)
			// What delta transfer found on the target counts as done.
			if done := e.Bytes + e.Matched; round && e.Rate > 0 && e.BytesTotal > done {
				line += ", ETA " + time.Duration(float64(e.BytesTotal-done)/e.Rate*float64(time.Second)).Round(time.Second).String()
			}
			if round {
				fmt.Fprint(a.stdout, line)
			} else {
				fmt.Fprintln(a.stdout, line)
			}
			inPlace = 0
			if round {
				inPlace = e.Round
			}
		},
		Log: slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	if f.live && !f.abort && !f.dryRun {
		lf, err := a.newLiveFreezer(st.PluginSocket, f.after)
		if err != nil {
			return err
		}
		opts.Freezer, opts.Thawer = lf, lf
	} else {
		// An interrupted --live run may have left containers frozen.
		opts.Thawer = lazyThawer{open: func() (*liveFreezer, error) { return a.newLiveFreezer(st.PluginSocket, f.after) }}
	}
	if f.abort {
		return a.migrateAbort(cmd, opts)
	}
	res, err := migrate.Run(cmd.Context(), opts)
	if inPlace != 0 {
		fmt.Fprintln(a.stdout)
	}
	if err != nil {
		return err
	}
	if a.json() {
		return enc.Encode(map[string]any{"result": res})
	}
	if res.DryRun {
		_, err = fmt.Fprintf(a.stdout, "dry run: nothing changed\n")
		return err
	}
	_, err = fmt.Fprintf(a.stdout, "migrated %s to %s (volume %s): %d entries, %s, %s sent (%s unchanged by delta, %s on the wire) in %d rounds, %s, final pass to switch %s\n",
		res.Volume, res.Target, res.TargetVolume, res.Files, volume.FormatSize(res.Bytes), volume.FormatSize(res.SentBytes), volume.FormatSize(res.MatchedBytes),
		volume.FormatSize(res.WireBytes), res.Rounds, res.Duration.Round(1e6), res.Downtime.Round(1e6))
	if err == nil && res.Live != nil {
		_, err = fmt.Fprintln(a.stdout, liveLine(res.Live))
	}
	return err
}

// migrateAbort gives up an interrupted migration.
func (a *app) migrateAbort(cmd *cobra.Command, opts migrate.Options) error {
	res, err := migrate.Abort(cmd.Context(), opts)
	if err != nil {
		return err
	}
	if a.json() {
		return json.NewEncoder(a.stdout).Encode(map[string]any{"abort": res})
	}
	if len(res.Thawed) > 0 {
		fmt.Fprintf(a.stdout, "thawed %s left frozen by an interrupted migration\n", strings.Join(res.Thawed, ", "))
	}
	fmt.Fprintf(a.stdout, "aborted the migration of %s to %s: journal removed", res.Volume, res.Target)
	if res.ReleasedSource {
		fmt.Fprint(a.stdout, ", source mount released")
	}
	if res.ReleasedTarget {
		fmt.Fprint(a.stdout, ", target mount released")
	}
	fmt.Fprintln(a.stdout)
	switch {
	case res.RemovedTarget:
		fmt.Fprintf(a.stdout, "removed the target volume %q\n", res.TargetVolume)
	case res.KeptTarget && res.CreatedTarget:
		fmt.Fprintf(a.stdout, "kept the target volume %q, which this migration created, with what was copied (--abort --force removes it; now 'stow volume rm %s' on the target does)\n", res.TargetVolume, res.TargetVolume)
	case res.KeptTarget:
		fmt.Fprintf(a.stdout, "kept the target volume %q, which existed before: part of its content was replaced\n", res.TargetVolume)
	}
	if res.TargetError != "" {
		fmt.Fprintf(a.stdout, "could not clean up on the target (%s): its volume %q may still hold a mount of the migration\n", res.TargetError, res.TargetVolume)
	}
	return nil
}

// progressLine is one plain line of progress.
func progressLine(e migrate.Event) string {
	var b strings.Builder
	b.WriteString(e.Phase)
	if e.Round > 0 {
		fmt.Fprintf(&b, " round %d", e.Round)
	}
	switch e.Phase {
	case migrate.PhasePrecopy, migrate.PhaseFinal, migrate.PhaseDone:
		fmt.Fprintf(&b, ": %d/%d files, %s/%s", e.Files, e.FilesTotal, volume.FormatSize(e.Bytes), volume.FormatSize(e.BytesTotal))
		if e.Rate > 0 {
			fmt.Fprintf(&b, ", %s/s", volume.FormatSize(int64(e.Rate)))
		}
		if e.Changes > 0 {
			fmt.Fprintf(&b, ", %d changes", e.Changes)
		}
		if e.Matched > 0 {
			fmt.Fprintf(&b, ", %s unchanged by delta", volume.FormatSize(e.Matched))
		}
	}
	if e.Message != "" {
		b.WriteString(": " + e.Message)
	}
	return b.String()
}
