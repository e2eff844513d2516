package main

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/runtime/container"
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
	var force bool
	cmd := &cobra.Command{
		Use:     "rm [-f] NAME...",
		Aliases: []string{"remove"},
		Short:   "Remove images",
		Long: `Remove images, printing the name of each one removed. Layers no other
image uses are deleted.

An image that a container was made from is refused while the container
exists, running or not, and the error names the containers: remove them
first with 'stow rm'. With -f the image of stopped containers is removed
anyway; the image of a running container never is, since its layers are
that container's root. A name that shares its image with another name only
drops the name and is never refused.

Failures are reported on standard error; the others are still removed, and
the exit status is then 1.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := a.imageStore()
			if err != nil {
				return err
			}
			cs, err := container.OpenStore(a.runtimeRoot())
			if err != nil {
				return err
			}
			return a.each(args, func(name string) error { return removeImage(s, cs, name, force) })
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "remove images that stopped containers were made from")
	return cmd
}

// findImage returns the image name (NAME[:TAG]). A missing image is
// ErrNotFound, with a hint at how to list and import images.
func findImage(s *image.Store, name string) (image.Image, error) {
	img, err := s.Get(name)
	if errors.Is(err, volume.ErrNotFound) {
		return img, fmt.Errorf("%w (list images with 'stow images', import one with 'stow image import PATH NAME')", err)
	}
	return img, err
}

// removeImage removes the image name unless a container keeps it (see
// imageUsers): a running one always, a stopped one unless force. The check
// and the removal are not atomic: a container created in between is not
// seen.
func removeImage(s *image.Store, cs *container.Store, name string, force bool) error {
	img, err := findImage(s, name)
	if err != nil {
		return err
	}
	users, err := imageUsers(s, cs, img)
	if err != nil {
		return err
	}
	var running, stopped []string
	for _, c := range users {
		if c.State.Status == container.Exited {
			stopped = append(stopped, c.Config.Name)
		} else {
			// Created counts as running: its monitor may be starting it.
			// So does a container whose monitor died, until a sweep
			// ('stow ps') marks it exited.
			running = append(running, c.Config.Name)
		}
	}
	if len(running) > 0 {
		who, them := containerNames(running)
		return fmt.Errorf("image %s: %w by running %s (stop and remove %s first; -f never removes the image of a running container)",
			img.Name, volume.ErrInUse, who, them)
	}
	if len(stopped) > 0 && !force {
		who, them := containerNames(stopped)
		return fmt.Errorf("image %s: %w by %s (remove %s first with 'stow rm', or remove the image anyway with -f)",
			img.Name, volume.ErrInUse, who, them)
	}
	return s.Remove(img.Name)
}

// imageUsers returns the containers made from img that are not removed.
// None keeps img when another name refers to the same image: removing the
// name then deletes no layer. A container recorded without an image ID is
// matched by the image's name.
func imageUsers(s *image.Store, cs *container.Store, img image.Image) ([]container.Container, error) {
	imgs, err := s.List()
	if err != nil {
		return nil, err
	}
	for _, o := range imgs {
		if o.Name != img.Name && o.ID == img.ID {
			return nil, nil
		}
	}
	all, err := cs.List()
	if err != nil {
		return nil, err
	}
	var users []container.Container
	for _, c := range all {
		if c.Config.ImageID == img.ID || (c.Config.ImageID == "" && c.Config.Image == img.Name) {
			users = append(users, c)
		}
	}
	return users, nil
}

// containerNames names containers in an error message: "container web"
// or "containers a, b", and the pronoun that refers to them.
func containerNames(names []string) (who, them string) {
	if len(names) == 1 {
		return "container " + names[0], "it"
	}
	return "containers " + strings.Join(names, ", "), "them"
}
