package main

import (
	"os"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/internal/companion"
)

// providerProgram serves providers over CSI. It is a program of its own so
// that stow links no gRPC: stow starts with every container it runs.
const providerProgram = "stow-provider"

func (a *app) providerServeCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "serve TYPE --endpoint unix:///PATH --root DIR [--name NAME] [--node-id ID] [--log-level LEVEL]",
		Short: "Serve a built-in provider as a CSI driver",
		Long: `Serve a built-in provider (type local) as a CSI driver (Identity,
Controller and Node services) on a unix socket, until SIGTERM or SIGINT,
which stop it gracefully. Point volumed at the socket with a provider of
type "csi", or use any CSI client. The local provider keeps its volumes
under --root; mounting needs root. Logs go to standard error.

stow runs ` + providerProgram + `, installed beside it, in its place; the flags are
` + providerProgram + `'s ('stow provider serve --help' prints them).`,
		Example:            "  stow provider serve local --endpoint unix:///run/stowage/csi/local.sock --root /var/lib/stowage-csi",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			path, err := companion.Find(providerProgram)
			if err != nil {
				return err
			}
			return syscall.Exec(path, append([]string{providerProgram}, args...), os.Environ())
		},
	}
}
