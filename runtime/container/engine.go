package container

import (
	"context"
	"io"
)

// Volumes mounts named volumes for containers; *client.Plugin, which
// speaks volumed's plugin protocol, is one. Mount IDs are the container's
// ID, "-" and the volume's index.
type Volumes interface {
	Mount(ctx context.Context, name, id string) (string, error)
	Unmount(ctx context.Context, name, id string) error
}

// Stdio are a container's standard streams; nil ones are /dev/null.
type Stdio struct {
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
}

// CommandError is a container command that did not run: Code is the exit
// code to report, as Docker's: 127 for a command not found, 126 for one
// that cannot be executed, 125 for a container that could not be set up.
type CommandError struct {
	Code int
	Msg  string
}

func (e *CommandError) Error() string { return e.Msg }
