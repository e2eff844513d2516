package main

import (
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/image"
)

// defaultRuntimeRoot holds the runtime's images, layers and containers.
const defaultRuntimeRoot = "/var/lib/stowage/runtime"

// runtimeRoot returns the runtime root: --root, else STOW_ROOT, else
// /var/lib/stowage/runtime.
func (a *app) runtimeRoot() string {
	if a.runtimeDir != "" {
		return a.runtimeDir
	}
	if r := a.getenv("STOW_ROOT"); r != "" {
		return r
	}
	return defaultRuntimeRoot
}

// imageStore opens the image store; its warnings go to standard error.
func (a *app) imageStore() (*image.Store, error) {
	log := slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return image.Open(a.runtimeRoot(), log)
}

func (a *app) imageCommand() *cobra.Command {
	ls := a.imagesCommand()
	ls.Use = "ls"
	ls.Aliases = []string{"list"}
	return group("image", "Manage the runtime's images",
		a.imageImportCommand(), ls, a.imageRemoveCommand())
}

func (a *app) imageImportCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "import PATH NAME",
		Short: "Import an image from a tarball or an OCI layout",
		Long: `Import an image and print its ID.

PATH is a rootfs tarball (uncompressed or gzip), an archive written by
'docker save', or an OCI image layout (a directory or a tar of one); the
format is found from the content. NAME is NAME[:TAG], TAG defaulting to
latest. An image from a rootfs tarball runs /bin/sh by default.`,
		Example: "  stow image import busybox.tar busybox:1.36",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.imageStore()
			if err != nil {
				return err
			}
			img, err := s.Import(cmd.Context(), args[0], args[1])
			if err != nil {
				return err
			}
			if a.json() {
				return a.printJSON(img)
			}
			_, err = fmt.Fprintln(a.stdout, img.ID)
			return err
		},
	}
}

// imageView is an image as `stow images --format json` shows it.
type imageView struct {
	image.Image
	SizeBytes int64 `json:"size_bytes"`
}

func (a *app) imagesCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "images",
		Short: "List images",
		Long: `List images: name, ID (12 digits), number of layers, size of the
uncompressed layers and when the image was created.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := a.imageStore()
			if err != nil {
				return err
			}
			imgs, err := s.List()
			if err != nil {
				return err
			}
			views := make([]imageView, 0, len(imgs))
			for _, img := range imgs {
				size, err := s.Size(img)
				if err != nil {
					return err
				}
				views = append(views, imageView{img, size})
			}
			if a.json() {
				return a.printJSON(views)
			}
			rows := make([][]string, 0, len(views))
			for _, v := range views {
				rows = append(rows, []string{v.Name, shortImageID(v.ID), strconv.Itoa(len(v.Layers)),
					volume.FormatSize(v.SizeBytes), v.Created.UTC().Format(time.RFC3339)})
			}
			return a.printTable([]string{"NAME", "ID", "LAYERS", "SIZE", "CREATED"}, rows)
		},
	}
}

// shortImageID returns the first 12 hex digits of "sha256:<hex>".
func shortImageID(id string) string {
	h := strings.TrimPrefix(id, "sha256:")
	if len(h) > 12 {
		h = h[:12]
	}
	return h
}

func (a *app) imageRemoveCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove images",
		Long: `Remove images, printing the name of each one removed. Layers no other
image uses are deleted.

Failures are reported on standard error; the others are still removed, and
the exit status is then 1.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.imageStore()
			if err != nil {
				return err
			}
			failed := false
			for _, name := range args {
				if err := s.Remove(name); err != nil {
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
		},
	}
}
