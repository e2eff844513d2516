package migrate

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/stowage/stowage/plugins/volume"
)

// Phases of a live migration, around the final pass.
const (
	// PhaseFreeze: the containers that hold the source are being frozen.
	PhaseFreeze = "freeze"
	// PhaseRelease: after the switch, they are resumed or stopped.
	PhaseRelease = "release"
)

// releaseTimeout bounds the release of frozen consumers. It is counted
// from a context of its own: an interrupted migration still thaws them.
const releaseTimeout = 2 * time.Minute

// Freezer stops the writers of a volume for the final pass: the
// containers that hold it mounted on this host.
type Freezer interface {
	// Freeze freezes the holders of the volume's mounts, given as mount IDs
	// with their counts (the migration's own mount left out), and returns
	// once all of them are frozen. It is all or nothing: after an error
	// nothing it froze stays frozen. A mount ID that belongs to no
	// container it can freeze fails with ErrInUse naming it; ctx ending
	// fails with its error. record is called before each container is
	// frozen; when it fails, that container is not frozen and Freeze
	// fails.
	Freeze(ctx context.Context, volume string, mounts map[string]int, record func(Consumer) error) (*Frozen, error)
}

// Consumer is a container that a Freezer freezes, as the journal records
// it.
type Consumer struct {
	// Kind is the runtime: "stow" or "docker".
	Kind string `json:"kind"`
	ID   string `json:"id"`
	Name string `json:"name"`
}

func (c Consumer) String() string { return c.Kind + ":" + c.Name }

// Thawer thaws the containers that an interrupted migration left frozen.
type Thawer interface {
	// Thaw thaws those of cs that are still frozen and returns them; the
	// others (gone, stopped, or thawed already) it leaves as they are.
	Thaw(ctx context.Context, cs []Consumer) ([]Consumer, error)
}

// Frozen is what a Freezer froze.
type Frozen struct {
	// Consumers names the frozen containers, such as "stow:db" or
	// "docker:web".
	Consumers []string
	// After is what Release does after a switch: "resume" or "stop".
	After string
	// Release resumes the consumers, or, when switched is true and After
	// is "stop", stops them. It is called once, with a ctx that has not
	// ended.
	Release func(ctx context.Context, switched bool) error
}

// LiveResult reports the consumers a live migration froze.
type LiveResult struct {
	Consumers []string `json:"consumers"`
	After     string   `json:"after"`
	// Frozen is from the start of the freeze to the consumers' release
	// (resumed or stopped): how long they could not run.
	Frozen time.Duration `json:"frozen_ns"`
	// Released says the release succeeded.
	Released bool `json:"released"`
}

// writers are the source's consumers, frozen for the final pass.
type writers struct {
	r      *run
	frozen *Frozen
	start  time.Time
	once   sync.Once
	err    error
}

// stopWriters makes sure nothing but the migration writes the source from
// here on: with no other mount there is nothing to do; otherwise the
// Freezer freezes the containers that hold it, or, without one, the
// migration refuses. The source's file system is then flushed.
func (r *run) stopWriters(ctx context.Context) (*writers, error) {
	o := &r.opts
	w := &writers{r: r, start: time.Now()}
	mounts, err := r.foreignMounts(ctx)
	if err != nil {
		return nil, err
	}
	if len(mounts) == 0 {
		return w, nil
	}
	if o.Freezer == nil {
		n := 0
		for _, c := range mounts {
			n += c
		}
		return nil, fmt.Errorf("%w: volume %q is mounted %d times on this host; stop its containers and rerun to finish, or rerun with --live to freeze them for the final pass (what was copied stays on the target)",
			volume.ErrInUse, o.Volume, n)
	}
	r.emit(Event{Phase: PhaseFreeze, Message: fmt.Sprintf("freezing the holders of %d mounts", len(mounts))})
	fz, err := o.Freezer.Freeze(ctx, o.Volume, mounts, r.recordFrozen)
	if err != nil {
		return nil, fmt.Errorf("freeze the containers of volume %q: %w", o.Volume, err)
	}
	w.frozen = fz
	r.res.Live = &LiveResult{Consumers: fz.Consumers, After: fz.After}
	// A container that mounted the volume while the others were being
	// frozen would write unseen.
	now, err := r.foreignMounts(ctx)
	if err == nil {
		for id := range now {
			if _, ok := mounts[id]; !ok {
				err = fmt.Errorf("%w: volume %q was mounted again (mount ID %s) while its containers were being frozen; rerun to finish", volume.ErrInUse, o.Volume, id)
				break
			}
		}
	}
	if err == nil {
		err = syncFS(r.srcRoot)
	}
	if err != nil {
		w.release(ctx, false)
		return nil, err
	}
	r.emit(Event{Phase: PhaseFreeze, Message: "froze " + strings.Join(fz.Consumers, ", ")})
	return w, nil
}

// foreignMounts returns the source's mount IDs other than the
// migration's own, with their counts.
func (r *run) foreignMounts(ctx context.Context) (map[string]int, error) {
	v, err := r.opts.Source.Volume(ctx, r.opts.Volume)
	if err != nil {
		return nil, fmt.Errorf("look up the source volume: %w", err)
	}
	m := maps.Clone(v.MountIDs)
	delete(m, MountID)
	maps.DeleteFunc(m, func(_ string, n int) bool { return n <= 0 })
	return m, nil
}

// release releases the frozen consumers once; later calls return the
// first call's error. The release has a context of its own, so that an
// interrupted migration (ctx cancelled) still thaws them, and a failure
// is logged as well as returned: a deferred call has no one else to tell.
func (w *writers) release(ctx context.Context, switched bool) error {
	w.once.Do(func() {
		if w.frozen == nil {
			return
		}
		r := w.r
		if switched {
			r.emit(Event{Phase: PhaseRelease, Message: w.frozen.After + " " + strings.Join(w.frozen.Consumers, ", ")})
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
		defer cancel()
		w.err = w.frozen.Release(rctx, switched)
		r.res.Live.Frozen = time.Since(w.start)
		r.res.Live.Released = w.err == nil
		if w.err == nil {
			r.clearFrozen()
		}
		if w.err != nil {
			w.err = fmt.Errorf("release the containers of volume %q (%s): %w", r.opts.Volume, strings.Join(w.frozen.Consumers, ", "), w.err)
			r.opts.Log.Error("containers may still be frozen", "volume", r.opts.Volume, "error", w.err)
		}
	})
	return w.err
}

// unmountWait bounds the wait for stopped consumers' mounts to go.
const unmountWait = time.Minute

// markSource releases the frozen consumers, as the switch asks, then marks
// the source migrated to to. Consumers that were resumed keep the source
// mounted and writable, so it stays unmarked: what they write from now on
// is not on the target. Stopped ones unmount it as they end.
func (r *run) markSource(ctx context.Context, w *writers, to string) error {
	o := &r.opts
	if err := w.release(ctx, true); err != nil {
		return err
	}
	if w.frozen != nil && w.frozen.After != "stop" {
		r.emit(Event{Phase: PhaseRelease, Message: fmt.Sprintf("volume %q stays writable here, in use by %s; what they write from now on is not on the target",
			o.Volume, strings.Join(w.frozen.Consumers, ", "))})
		return nil
	}
	deadline := time.Now().Add(unmountWait)
	for {
		_, err := o.Source.MarkMigrated(ctx, o.Volume, to)
		if err == nil {
			return nil
		}
		// A stopped consumer unmounts the volume once it has ended.
		if w.frozen == nil || !errors.Is(err, volume.ErrInUse) || time.Now().After(deadline) {
			return fmt.Errorf("mark the source volume migrated (the target is complete): %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// recordFrozen writes c to the journal, durably, before it is frozen.
func (r *run) recordFrozen(c Consumer) error {
	if r.j == nil {
		return nil
	}
	r.j.Frozen = append(r.j.Frozen, c)
	if err := r.j.save(r.opts.StateDir); err != nil {
		return fmt.Errorf("record the container %s in the journal before freezing it: %w", c, err)
	}
	return nil
}

// clearFrozen drops the released containers from the journal. A failure
// is logged only: a rerun then checks them again and finds them thawed.
func (r *run) clearFrozen() {
	if r.j == nil || len(r.j.Frozen) == 0 {
		return
	}
	r.j.Frozen = nil
	if err := r.j.save(r.opts.StateDir); err != nil {
		r.opts.Log.Warn("clear the frozen containers from the journal", "volume", r.opts.Volume, "error", err)
	}
}

// thawLeftover thaws the containers that the journal j records as frozen
// by an interrupted run of this migration (killed while they were
// frozen), if they are still frozen, and clears the record. It returns
// the names of those it thawed.
func thawLeftover(ctx context.Context, o *Options, j *journal) ([]string, error) {
	if j == nil || len(j.Frozen) == 0 {
		return nil, nil
	}
	names := make([]string, 0, len(j.Frozen))
	for _, c := range j.Frozen {
		names = append(names, c.String())
	}
	slices.Sort(names)
	if o.Thawer == nil {
		return nil, fmt.Errorf("%w: an interrupted migration of volume %q may have left %s frozen, and nothing here can thaw them; rerun with stow migrate",
			volume.ErrInUse, o.Volume, strings.Join(names, ", "))
	}
	thawed, err := o.Thawer.Thaw(ctx, j.Frozen)
	if err != nil {
		return nil, fmt.Errorf("thaw %s, left frozen by an interrupted migration of volume %q: %w", strings.Join(names, ", "), o.Volume, err)
	}
	j.Frozen = nil
	if err := j.save(o.StateDir); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(thawed))
	for _, c := range thawed {
		out = append(out, c.String())
	}
	slices.Sort(out) // the order they were frozen in is the map order of mount IDs
	return out, nil
}

// thawedLine reports the containers thawLeftover thawed.
func thawedLine(names []string) string {
	return "thawed " + strings.Join(names, ", ") + " left frozen by an interrupted migration"
}
