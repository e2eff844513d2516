package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/stowage/stowage/runtime/container"
	"github.com/stowage/stowage/runtime/image"
	"github.com/stowage/stowage/runtime/layer"
)

func (r *runtimeCLI) diffCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "diff CONTAINER",
		Short: "List the files a container added, changed or deleted",
		Long: `List what a container changed in its image, one line per path, as
'docker diff' does: A (added), C (changed) or D (deleted), then the path.
Volumes are not part of it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := r.container(cmd, args[0])
			if err != nil {
				return err
			}
			changes, err := layer.Changes(upperDir(c), c.Config.Lowers)
			if err != nil {
				return err
			}
			if r.json() {
				type change struct {
					Kind string `json:"kind"`
					Path string `json:"path"`
				}
				out := make([]change, 0, len(changes))
				for _, ch := range changes {
					out = append(out, change{Kind: string(rune(ch.Kind)), Path: ch.Path})
				}
				return r.printJSON(out)
			}
			for _, ch := range changes {
				fmt.Fprintln(r.stdout, ch)
			}
			return nil
		},
	}
}

func (r *runtimeCLI) commitCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "commit CONTAINER IMAGE",
		Short: "Make an image of a container's changes",
		Long: `Make a new image NAME[:TAG] of the container's image with the
container's changes as a new layer on top, and print its ID. The new
image keeps its parent's configuration (command, environment, working
directory, user). Commit a stopped container: the changes of a running
one may be caught half-written.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := r.container(cmd, args[0])
			if err != nil {
				return err
			}
			s, err := r.imageStore()
			if err != nil {
				return err
			}
			parent, err := s.Get(c.Config.Image)
			if err != nil {
				return fmt.Errorf("image of container %s: %w", c.Config.Name, err)
			}
			if c.Config.ImageID != "" && parent.ID != c.Config.ImageID {
				return fmt.Errorf("image of container %s: %s now names another image than the container's", c.Config.Name, c.Config.Image)
			}
			diffID, err := addUpperLayer(cmd.Context(), s, upperDir(c), c.Config.Lowers)
			if err != nil {
				return err
			}
			layers := append(append([]string(nil), parent.Layers...), diffID)
			img, err := s.Create(args[1], layers, parent.Config)
			if err != nil {
				return err
			}
			if r.json() {
				return r.printJSON(img)
			}
			_, err = fmt.Fprintln(r.stdout, img.ID)
			return err
		},
	}
}

// container returns the container ref names.
func (r *runtimeCLI) container(cmd *cobra.Command, ref string) (container.Container, error) {
	e, err := r.engine(cmd)
	if err != nil {
		return container.Container{}, err
	}
	return e.Get(cmd.Context(), ref)
}

// upperDir is the container's writable layer.
func upperDir(c container.Container) string { return c.Dir + "/upper" }

// addUpperLayer writes the upper directory as a layer tar through a pipe
// into the image store and returns the layer's diff ID.
func addUpperLayer(ctx context.Context, s *image.Store, upper string, lowers []string) (string, error) {
	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		_, err := layer.Write(ctx, pw, upper, lowers)
		pw.CloseWithError(err)
		written <- err
	}()
	diffID, err := s.AddLayer(ctx, pr)
	pr.CloseWithError(err) // stops the writer if the store gave up
	if werr := <-written; werr != nil {
		return "", fmt.Errorf("write layer: %w", werr)
	}
	if err != nil {
		return "", err
	}
	return diffID, nil
}
