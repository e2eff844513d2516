package migrate

import (
	"errors"
	"fmt"

	"github.com/stowage/stowage/migrate/manifest"
	"github.com/stowage/stowage/migrate/plan"
	"github.com/stowage/stowage/plugins/volume"
)

// ErrNoSpace means that the target volume cannot hold what the migration
// sends.
var ErrNoSpace = errors.New("not enough space on the target volume")

// allocated is the space the content of e takes (holes left out).
func allocated(e *manifest.Entry) int64 {
	if e == nil || e.Type != manifest.Regular || e.LinkTo != "" {
		return 0
	}
	return min(e.Size, e.Blocks*512)
}

// roundNeeds returns the space the new content of p takes on the target
// and what the files it replaces or removes give back.
func roundNeeds(p *plan.Plan, dst map[string]*manifest.Entry) (need, reclaim int64) {
	for i := range p.Send {
		need += allocated(&p.Send[i])
		reclaim += allocated(dst[p.Send[i].Path])
	}
	for _, path := range p.Remove {
		reclaim += allocated(dst[path])
	}
	return need, reclaim
}

// checkSpace refuses a round whose content cannot fit the target volume,
// before anything is sent.
func (r *run) checkSpace(p *plan.Plan, dst map[string]*manifest.Entry) error {
	need, reclaim := roundNeeds(p, dst)
	if need == 0 {
		return nil
	}
	free, size, err := r.agent.Space()
	if err != nil {
		r.opts.Log.Debug("target space unknown", "error", err)
		return nil
	}
	if need <= free+reclaim {
		return nil
	}
	return r.noSpace(free, size, need-reclaim)
}

// spaceError turns err, a failed round, into ErrNoSpace when the target
// volume is (nearly) full.
func (r *run) spaceError(err error, p *plan.Plan, dst map[string]*manifest.Entry) error {
	free, size, serr := r.agent.Space()
	if serr != nil || free > max(size/100, 1<<20) {
		return err
	}
	need, reclaim := roundNeeds(p, dst)
	return fmt.Errorf("%w (%v)", r.noSpace(free, size, max(need-reclaim, 0)), err)
}

func (r *run) noSpace(free, size, need int64) error {
	return fmt.Errorf("%w: volume %q on %s has %s free of %s and this round needs %s more; nothing was switched and the source is untouched: give the target more space and rerun, or give up with --abort and migrate into a bigger volume (-o size=SIZE)",
		ErrNoSpace, r.res.TargetVolume, r.opts.Target.Host, volume.FormatSize(free), volume.FormatSize(size), volume.FormatSize(need))
}
