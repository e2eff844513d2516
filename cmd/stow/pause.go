package main

import (
	"github.com/spf13/cobra"

	"github.com/stowage/stowage/runtime/container"
)

func (r *runtimeCLI) pauseCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "pause CONTAINER...",
		Short: "Freeze every process of running containers",
		Long: `Freeze every process of running containers with the cgroup freezer, as
docker pause does: they stay in memory and get no CPU time until unpause.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return r.eachContainer(cmd, args, func(e *container.Engine, ref string) error {
				return e.Pause(cmd.Context(), ref)
			})
		},
	}
}

func (r *runtimeCLI) unpauseCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "unpause CONTAINER...",
		Short: "Thaw paused containers",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return r.eachContainer(cmd, args, func(e *container.Engine, ref string) error {
				return e.Unpause(cmd.Context(), ref)
			})
		},
	}
}
