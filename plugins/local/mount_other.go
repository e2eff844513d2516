//go:build !linux

package local

import (
	"context"
	"fmt"
	"runtime"

	"github.com/stowage/stowage/plugins/volume"
)

var errNotLinux = fmt.Errorf("%w: mounting local volumes on %s", volume.ErrNotSupported, runtime.GOOS)

// Stage is not supported on this system.
func (p *Provider) Stage(ctx context.Context, req volume.StageRequest) error {
	return errNotLinux
}

// Unstage is not supported on this system.
func (p *Provider) Unstage(ctx context.Context, volumeID, stagingPath string) error {
	return errNotLinux
}

// Publish is not supported on this system.
func (p *Provider) Publish(ctx context.Context, req volume.PublishRequest) error {
	return errNotLinux
}

// Unpublish is not supported on this system.
func (p *Provider) Unpublish(ctx context.Context, volumeID, targetPath string) error {
	return errNotLinux
}

// Stats is not supported on this system.
func (p *Provider) Stats(ctx context.Context, volumeID, path string) (volume.Stats, error) {
	return volume.Stats{}, errNotLinux
}

// inUse cannot tell on this system; nothing can be mounted here anyway.
func inUse(ctx context.Context, dir string) error {
	return nil
}
