package main

import (
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func (a *app) providerCommand() *cobra.Command {
	return group("provider", "Show and serve storage providers", a.providerServeCommand(), &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the providers volumed supervises",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ps, err := c.Providers(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(ps)
			}
			rows := make([][]string, 0, len(ps))
			for _, p := range ps {
				restarts := "-"
				if p.Kind == "sidecar" {
					restarts = strconv.Itoa(p.Restarts)
				}
				rows = append(rows, []string{p.Name, p.Kind, p.Driver, p.State, restarts, strconv.Itoa(p.Volumes), orDash(p.LastError)})
			}
			return a.printTable([]string{"NAME", "KIND", "DRIVER", "STATE", "RESTARTS", "VOLUMES", "LAST ERROR"}, rows)
		},
	})
}

func (a *app) statusCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show volumed's status",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			st, err := c.Status(cmd.Context())
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(st)
			}
			provs := make([]string, 0, len(st.Providers))
			for _, p := range st.Providers {
				provs = append(provs, fmt.Sprintf("%s (%s)", p.Name, p.State))
			}
			tw := tabwriter.NewWriter(a.stdout, 0, 8, 1, ' ', 0)
			for _, kv := range [][2]string{
				{"version", st.Version},
				{"pid", strconv.Itoa(st.PID)},
				{"started", st.StartedAt.Format(time.RFC3339)},
				{"root", st.Root},
				{"plugin socket", st.PluginSocket},
				{"api socket", st.APISocket},
				{"metrics address", st.MetricsAddr},
				{"volumes", strconv.Itoa(st.Volumes)},
				{"active mounts", strconv.Itoa(st.MountsActive)},
				{"providers", orDash(strings.Join(provs, ", "))},
			} {
				fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
			}
			return tw.Flush()
		},
	}
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print stow's version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			if a.json() {
				return a.printJSON(map[string]string{"version": version})
			}
			_, err := fmt.Fprintf(a.stdout, "stow %s\n", version)
			return err
		},
	}
}
