package migrate

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/stowage/stowage/migrate/remote"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/client"
)

// AbortResult says what Abort did.
type AbortResult struct {
	Volume       string `json:"volume"`
	Target       string `json:"target"`
	TargetVolume string `json:"target_volume"`
	// ReleasedSource and ReleasedTarget say that the migration's mount of
	// the source (on this host) or of the target was released.
	ReleasedSource bool `json:"released_source"`
	ReleasedTarget bool `json:"released_target"`
	// RemovedTarget says that the target volume, which this migration had
	// created, was removed (only with Force); KeptTarget that it is left.
	RemovedTarget bool `json:"removed_target"`
	KeptTarget    bool `json:"kept_target"`
	// CreatedTarget says that this migration had created the target volume.
	CreatedTarget bool `json:"created_target"`
	// TargetError says why the target could not be reached or cleaned
	// up; the local part of the abort is done all the same.
	TargetError string `json:"target_error,omitempty"`
	// Thawed names the containers that the interrupted migration had
	// left frozen and the abort thawed.
	Thawed []string `json:"thawed,omitempty"`
}

// Abort gives up the interrupted migration of opts.Volume to opts.Target:
// it releases the migration's mounts (the source's on this host, the
// target's when the target is reachable), removes the target volume when
// this migration created it and opts.Force is set, and drops the journal,
// so that the source is as before the migration. A migration that is not
// interrupted (no journal) is an ErrNotFound; one to another target an
// ErrInvalid.
func Abort(ctx context.Context, opts Options) (AbortResult, error) {
	opts.defaults()
	r := &run{opts: opts}
	res := AbortResult{Volume: opts.Volume, Target: opts.Target.String(), TargetVolume: r.targetName()}
	j, err := loadJournal(opts.StateDir, opts.Volume)
	if err != nil {
		return res, err
	}
	if j == nil {
		return res, fmt.Errorf("%w: no migration of volume %q to abort (journal %s not found)", volume.ErrNotFound, opts.Volume, journalPath(opts.StateDir, opts.Volume))
	}
	if j.Target != res.Target || j.TargetVolume != res.TargetVolume {
		return res, fmt.Errorf("%w: volume %q is being migrated to %s (volume %q), not to %s (volume %q); abort with that URL",
			volume.ErrInvalid, opts.Volume, j.Target, j.TargetVolume, res.Target, res.TargetVolume)
	}
	if res.Thawed, err = thawLeftover(ctx, &opts, j); err != nil {
		return res, err
	}
	v, err := opts.Source.Volume(ctx, opts.Volume)
	if err != nil && !errors.Is(err, volume.ErrNotFound) {
		return res, fmt.Errorf("look up the source volume: %w", err)
	}
	if err == nil && v.MountIDs[MountID] > 0 {
		if err := opts.SourcePlugin.Unmount(ctx, opts.Volume, MountID); err != nil {
			return res, fmt.Errorf("release the migration's mount of the source volume: %w", err)
		}
		res.ReleasedSource = true
	}

	res.CreatedTarget = j.CreatedTarget
	if err := abortTarget(ctx, opts, j, &res); err != nil {
		res.TargetError = err.Error()
		if opts.Force && j.CreatedTarget {
			// The user asked for the target's removal: keep the journal,
			// so that the abort can be repeated when the target is back.
			return res, fmt.Errorf("remove the target volume %q on %s: %w (the source is released; run the abort again to remove it)",
				res.TargetVolume, opts.Target.Host, err)
		}
	}
	if err := removeJournal(opts.StateDir, opts.Volume); err != nil {
		return res, err
	}
	return res, nil
}

// abortTarget releases the migration's mount of the target volume and
// removes the volume when the migration created it and opts.Force is set.
func abortTarget(ctx context.Context, opts Options, j *journal, res *AbortResult) error {
	conn, err := remote.Dial(ctx, opts.Target, opts.SSH)
	if err != nil {
		return err
	}
	defer conn.Close()
	dial := func(path string) client.DialFunc {
		return func(ctx context.Context) (net.Conn, error) { return conn.DialUnix(ctx, path) }
	}
	tc := client.NewDial(fmt.Sprintf("volumed on %s (%s)", opts.Target.Host, opts.RemoteAPI), dial(opts.RemoteAPI))
	st, err := tc.Status(ctx)
	if err != nil {
		return fmt.Errorf("reach the target's volumed: %w", err)
	}
	v, err := tc.Volume(ctx, res.TargetVolume)
	if errors.Is(err, volume.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up the target volume: %w", err)
	}
	if v.MountIDs[MountID] > 0 {
		tp := client.NewPluginDial(fmt.Sprintf("volumed's plugin socket on %s", opts.Target.Host), dial(st.PluginSocket))
		if err := tp.Unmount(ctx, res.TargetVolume, MountID); err != nil {
			return fmt.Errorf("release the migration's mount of the target volume: %w", err)
		}
		res.ReleasedTarget = true
	}
	if !j.CreatedTarget || !opts.Force {
		res.KeptTarget = true
		return nil
	}
	if v.Mounts-v.MountIDs[MountID] > 0 {
		return fmt.Errorf("%w: the target volume is mounted %d times on %s", volume.ErrInUse, v.Mounts-v.MountIDs[MountID], opts.Target.Host)
	}
	if err := tc.RemoveVolume(ctx, res.TargetVolume); err != nil {
		return err
	}
	res.RemovedTarget = true
	return nil
}
