package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

func (a *app) volumeSnapshotCommand() *cobra.Command {
	take := func(cmd *cobra.Command, args []string) error {
		c, err := a.client()
		if err != nil {
			return err
		}
		s, err := c.Snapshot(cmd.Context(), args[0], args[1])
		if err != nil {
			return err
		}
		if a.json() {
			return a.printJSON(s)
		}
		_, err = fmt.Fprintf(a.stdout, "%s@%s\n", s.Volume, s.Name)
		return err
	}
	cmd := &cobra.Command{
		Use:   "snapshot VOLUME SNAPSHOT | snapshot ls|rm ...",
		Short: "Take, list and remove snapshots of volumes",
		Long: `Take the snapshot SNAPSHOT of VOLUME and print VOLUME@SNAPSHOT; with a
subcommand, list or remove snapshots.

A snapshot keeps the volume's data as it was: 'stow volume create --from
VOLUME@SNAPSHOT NAME' makes a new volume of it. The provider must be able to
take snapshots (rbd can, local cannot). A snapshot of a mounted volume is
crash-consistent, like pulling the plug. Taking a snapshot that exists
prints it again. Snapshot names follow the rule of volume names.

'stow volume snapshot create VOLUME SNAPSHOT' does the same, for a volume
whose name is that of a subcommand.`,
		Example: `  stow volume snapshot pg before-upgrade
  stow volume snapshot ls pg
  stow volume snapshot rm pg@before-upgrade`,
		Args: cobra.ExactArgs(2),
		RunE: take,
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "create VOLUME SNAPSHOT",
		Short: "Take a snapshot of a volume",
		Args:  cobra.ExactArgs(2),
		RunE:  take,
	}, a.snapshotListCommand("ls", "list"), a.snapshotRemoveCommand())
	return cmd
}

// volumeSnapshotsCommand is 'stow volume snapshots', short for 'stow volume
// snapshot ls'.
func (a *app) volumeSnapshotsCommand() *cobra.Command {
	cmd := a.snapshotListCommand("snapshots")
	cmd.Short = "List snapshots (stow volume snapshot ls)"
	return cmd
}

func (a *app) snapshotListCommand(use string, aliases ...string) *cobra.Command {
	return &cobra.Command{
		Use:     use + " [VOLUME]",
		Aliases: aliases,
		Short:   "List the snapshots of a volume, or of every volume",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			snaps, err := c.Snapshots(cmd.Context(), name)
			if err != nil {
				return err
			}
			if a.json() {
				if snaps == nil {
					snaps = []api.Snapshot{}
				}
				return a.printJSON(snaps)
			}
			rows := make([][]string, 0, len(snaps))
			for _, s := range snaps {
				size := "-"
				if s.SizeBytes > 0 {
					size = volume.FormatSize(s.SizeBytes)
				}
				rows = append(rows, []string{s.Volume + "@" + s.Name, s.Provider, size, s.State, s.CreatedAt.UTC().Format(time.RFC3339)})
			}
			return a.printTable([]string{"SNAPSHOT", "PROVIDER", "SIZE", "STATE", "CREATED"}, rows)
		},
	}
}

// splitSnapshot splits VOLUME@SNAPSHOT.
func splitSnapshot(s string) (string, string, error) {
	vol, snap, ok := strings.Cut(s, "@")
	if !ok || vol == "" || snap == "" {
		return "", "", fmt.Errorf("invalid snapshot %q: use VOLUME@SNAPSHOT", s)
	}
	return vol, snap, nil
}

func (a *app) snapshotRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm VOLUME@SNAPSHOT...",
		Aliases: []string{"remove"},
		Short:   "Remove snapshots",
		Long: `Remove snapshots, printing each one removed.

A snapshot that volumes made from it still depend on cannot be removed
(the provider says so). Failures are reported on standard error; the
others are still removed, and the exit status is then 1.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, arg := range args {
				if _, _, err := splitSnapshot(arg); err != nil {
					return err
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			return a.each(args, func(arg string) error {
				vol, snap, _ := splitSnapshot(arg)
				return c.RemoveSnapshot(cmd.Context(), vol, snap)
			})
		},
	}
}

func (a *app) volumeResizeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "resize VOLUME SIZE",
		Short: "Grow a volume",
		Long: `Grow VOLUME to SIZE (e.g. 2GiB) and print its name and new size.

The file system of a mounted volume grows online where the provider can,
otherwise when the volume is next mounted (rbd grows ext4 online only with
CAP_SYS_RESOURCE); volumed's log says which. Volumes never shrink: a size
below the current one is refused. The provider must be able to resize (rbd
can, local cannot).`,
		Example: "  stow volume resize pg 2GiB",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.ResizeVolume(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(v)
			}
			_, err = fmt.Fprintf(a.stdout, "%s %s\n", v.Name, volume.FormatSize(v.CapacityBytes))
			return err
		},
	}
}

func (a *app) volumeUnlockCommand() *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "unlock --force VOLUME",
		Short: "Break the write lock a dead host holds on a volume",
		Long: `Break the write lock another host holds on VOLUME, so that this host can
mount it read-write.

A volume of a provider such as rbd is written by one host at a time. When
that host dies without unmounting, the lock stays. Unlocking breaks it and
fences the host that held it, so that it can no longer write (its
containers get I/O errors): do it only when that host is dead or cut off.
volumed never does it on its own, and refuses without --force. Prints
which host's lock was broken, or that the volume was not locked.`,
		Example:               "  stow volume unlock --force pg",
		Args:                  cobra.ExactArgs(1),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			res, err := c.UnlockVolume(cmd.Context(), args[0], force)
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(res)
			}
			if res.Holder == "" {
				_, err = fmt.Fprintf(a.stdout, "%s: not locked\n", res.Volume)
			} else {
				_, err = fmt.Fprintf(a.stdout, "%s: broke the write lock of %s\n", res.Volume, res.Holder)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "break the lock and fence its holder")
	return cmd
}
