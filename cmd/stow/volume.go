package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

func (a *app) volumeCommand() *cobra.Command {
	return group("volume", "Manage volumes",
		a.volumeCreateCommand(), a.volumeListCommand(), a.volumeInspectCommand(), a.volumeRemoveCommand(),
		a.volumeSnapshotCommand(), a.volumeSnapshotsCommand(), a.volumeResizeCommand(), a.volumeUnlockCommand())
}

func (a *app) volumeCreateCommand() *cobra.Command {
	var provider, from string
	var opts []string
	cmd := &cobra.Command{
		Use:   "create [-p PROVIDER] [--from VOLUME[@SNAPSHOT]] [-o KEY=VALUE]... NAME",
		Short: "Create a volume",
		Long: `Create a volume and print its name.

Options are those of 'docker volume create -d stowage': size=SIZE (e.g.
64MiB, 1G) and the provider's own parameters, for the local provider
type=dir|fs and fs=ext4|xfs.

--from VOLUME@SNAPSHOT fills the new volume from a snapshot, --from VOLUME
copies a volume (the option from=... of docker volume create). The copy is
made by the source's provider and gets its size and parameters unless
others are given; the provider must be able to take snapshots.`,
		Example: `  stow volume create -o size=64MiB data
  stow volume create --from pg@before-upgrade pg-copy`,
		Args:                  cobra.ExactArgs(1),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := parseOptions(opts)
			if err != nil {
				return err
			}
			if provider != "" {
				if p, ok := o["provider"]; ok && p != provider {
					return fmt.Errorf("provider given twice: -p %s and -o provider=%s", provider, p)
				}
				o["provider"] = provider
			}
			if from != "" {
				if f, ok := o["from"]; ok && f != from {
					return fmt.Errorf("source given twice: --from %s and -o from=%s", from, f)
				}
				o["from"] = from
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			v, err := c.CreateVolume(cmd.Context(), api.CreateRequest{Name: args[0], Options: o})
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(v)
			}
			_, err = fmt.Fprintln(a.stdout, v.Name)
			return err
		},
	}
	cmd.Flags().StringVarP(&provider, "provider", "p", "", "`NAME` of the volume's provider (default local)")
	cmd.Flags().StringArrayVarP(&opts, "opt", "o", nil, "volume option `KEY=VALUE`, repeatable")
	cmd.Flags().StringVar(&from, "from", "", "make the volume from the snapshot `VOLUME@SNAPSHOT`, or copy VOLUME")
	return cmd
}

// parseOptions parses KEY=VALUE entries. A key may appear once.
func parseOptions(entries []string) (map[string]string, error) {
	opts := make(map[string]string, len(entries))
	for _, e := range entries {
		k, v, ok := strings.Cut(e, "=")
		switch {
		case !ok:
			return nil, fmt.Errorf("invalid option %q: use KEY=VALUE", e)
		case k == "":
			return nil, fmt.Errorf("invalid option %q: the key is empty", e)
		}
		if _, dup := opts[k]; dup {
			return nil, fmt.Errorf("option %q given twice", k)
		}
		opts[k] = v
	}
	return opts, nil
}

func (a *app) volumeListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List volumes",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			vols, err := c.Volumes(cmd.Context())
			if err != nil {
				return err
			}
			slices.SortFunc(vols, func(x, y api.Volume) int { return strings.Compare(x.Name, y.Name) })
			if a.json() {
				return a.printJSON(vols)
			}
			rows := make([][]string, 0, len(vols))
			for _, v := range vols {
				size := "-"
				if v.CapacityBytes > 0 {
					size = volume.FormatSize(v.CapacityBytes)
				}
				rows = append(rows, []string{v.Name, v.Provider, size, v.State, strconv.Itoa(v.Mounts), orDash(v.Mountpoint)})
			}
			return a.printTable([]string{"NAME", "PROVIDER", "SIZE", "STATE", "MOUNTS", "MOUNTPOINT"}, rows)
		},
	}
}

func (a *app) volumeInspectCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "inspect NAME...",
		Short: "Show volumes in detail, as a JSON array",
		Long: `Show volumes in detail, as a JSON array whatever --format says.

Volumes that cannot be shown are reported on standard error, and the exit
status is then 1.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			vols := []api.Volume{}
			failed := false
			for _, name := range args {
				v, err := c.Volume(cmd.Context(), name)
				if err != nil {
					a.report(err)
					failed = true
					continue
				}
				vols = append(vols, v)
			}
			if err := a.printJSON(vols); err != nil {
				return err
			}
			if failed {
				return errReported
			}
			return nil
		},
	}
}

func (a *app) volumeRemoveCommand() *cobra.Command {
	var snapshots bool
	cmd := &cobra.Command{
		Use:     "rm [--snapshots] NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove volumes and their data",
		Long: `Remove volumes and their data, printing the name of each one removed.

A volume in use cannot be removed, nor one that has snapshots unless
--snapshots is given, which removes its snapshots first. Failures are
reported on standard error; the others are still removed, and the exit
status is then 1.`,
		Args:                  cobra.MinimumNArgs(1),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			remove := c.RemoveVolume
			if snapshots {
				remove = c.RemoveVolumeWithSnapshots
			}
			return a.each(args, func(name string) error { return remove(cmd.Context(), name) })
		},
	}
	cmd.Flags().BoolVar(&snapshots, "snapshots", false, "remove the volumes' snapshots too")
	return cmd
}
