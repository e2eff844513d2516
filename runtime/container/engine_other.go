//go:build !linux

package container

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/stowage/stowage/plugins/volume"
)

var errUnsupported = fmt.Errorf("containers: %w on this system", volume.ErrNotSupported)

// Init does nothing: containers need Linux.
func Init() {}

// Options configure an Engine.
type Options struct {
	Root         string
	PluginSocket string
	Volumes      Volumes
	Init         string
	Logger       *slog.Logger
}

// Engine starts and manages containers; on this system it cannot.
type Engine struct{}

// New returns ErrNotSupported: containers need Linux.
func New(Options) (*Engine, error) { return nil, errUnsupported }

// Forwarded returns the signals that Run forwards.
func Forwarded() []os.Signal { return nil }

// Store returns nil.
func (e *Engine) Store() *Store { return nil }

// Create is not supported.
func (e *Engine) Create(Config) (Container, error) { return Container{}, errUnsupported }

// Run is not supported.
func (e *Engine) Run(context.Context, string, Stdio, <-chan os.Signal) (State, error) {
	return State{}, errUnsupported
}

// Start is not supported.
func (e *Engine) Start(context.Context, string) error { return errUnsupported }

// Exec is not supported.
func (e *Engine) Exec(context.Context, string, []string, []string, Stdio, <-chan os.Signal) (int, error) {
	return 0, errUnsupported
}

// Sweep is not supported.
func (e *Engine) Sweep(context.Context) error { return errUnsupported }

// Get is not supported.
func (e *Engine) Get(context.Context, string) (Container, error) { return Container{}, errUnsupported }

// List is not supported.
func (e *Engine) List(context.Context) ([]Container, error) { return nil, errUnsupported }

// Kill is not supported.
func (e *Engine) Kill(context.Context, string, syscall.Signal) error { return errUnsupported }

// Stop is not supported.
func (e *Engine) Stop(context.Context, string, time.Duration) error { return errUnsupported }

// Remove is not supported.
func (e *Engine) Remove(context.Context, string, bool) error { return errUnsupported }

// Logs is not supported.
func (e *Engine) Logs(context.Context, string, bool, io.Writer) error { return errUnsupported }

// Pause is not supported.
func (e *Engine) Pause(context.Context, string) error { return errUnsupported }

// Unpause is not supported.
func (e *Engine) Unpause(context.Context, string) error { return errUnsupported }

// Paused is not supported.
func (e *Engine) Paused(Container) (bool, error) { return false, errUnsupported }
