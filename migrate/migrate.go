// Package migrate moves a volume's data and metadata to another host that
// runs volumed: it creates the target volume through the target's volumed,
// copies in rounds while the volume is still in use, makes a final pass
// while nothing writes, verifies that both sides' manifests match and then
// switches to the target: the target volume is left ready, and the source
// is marked migrated in this host's volumed, which mounts it read-only from
// then on until it is removed. Everything goes over one SSH connection: the
// target's volumed sockets (direct-streamlocal), file content (SFTP) and
// the migrate agent (an exec session) that applies what SFTP cannot carry.
//
// An interrupted migration is resumed by running it again: every round
// compares manifests, so what arrived intact is not sent again, and a file
// in flight only becomes visible on the target when it is complete (written
// to a temporary name, then renamed).
package migrate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/pkg/sftp"

	"github.com/stowage/stowage/migrate/agent"
	"github.com/stowage/stowage/migrate/manifest"
	"github.com/stowage/stowage/migrate/plan"
	"github.com/stowage/stowage/migrate/remote"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/client"
)

// MountID is the mount ID under which a migration mounts the source and the
// target volume through volumed.
const MountID = "stowage-migrate"

// Defaults.
const (
	DefaultRemoteStow   = "stow"
	DefaultRemoteAPI    = "/run/stowage/volumed.sock"
	DefaultMaxRounds    = 5
	DefaultSmallChange  = 64 << 20
	defaultWorkers      = 8
	commitBatch         = 256
	maxListedDifference = 10
)

// Options describe one migration.
type Options struct {
	// Volume is the source volume on this host.
	Volume string
	Target remote.Target
	SSH    remote.Config
	// Provider and VolumeOptions replace the source's provider and options
	// for the target volume when Provider is set; VolumeOptions alone
	// override single options.
	Provider      string
	VolumeOptions map[string]string
	// RemoteStow is the stow command on the target; RemoteAPI is the
	// target volumed's control API socket.
	RemoteStow string
	RemoteAPI  string
	// Force copies into a target volume that exists already (its content
	// is replaced).
	Force bool
	// DryRun connects and reports what would be done, changing nothing on
	// the target.
	DryRun bool
	// Resume requires an interrupted migration to continue.
	Resume bool
	// BWLimit caps file content in bytes per second; 0 for no limit.
	BWLimit int64
	// StateDir holds the journals of migrations on this host.
	StateDir string
	// MaxRounds bounds pre-copy rounds; SmallChange is the size of a round
	// below which the next one is the final pass.
	MaxRounds   int
	SmallChange int64
	// Workers is the number of files in flight.
	Workers int
	// ProgressInterval is how often progress is reported during a round.
	ProgressInterval time.Duration

	// Source is this host's volumed (control API and plugin socket).
	Source       *client.Client
	SourcePlugin *client.Plugin
	// Freezer, when set, freezes the containers that hold the source for
	// the final pass (--live); without one a mounted source is refused.
	Freezer Freezer
	// Thawer thaws the containers that an interrupted live migration of
	// the volume left frozen, at the start of a rerun or an abort.
	Thawer   Thawer
	Progress func(Event)
	Log      *slog.Logger
}

// Result summarises a finished migration.
type Result struct {
	Volume       string `json:"volume"`
	Target       string `json:"target"`
	TargetVolume string `json:"target_volume"`
	Rounds       int    `json:"rounds"`
	Files        int    `json:"files"`
	Bytes        int64  `json:"bytes"`
	SentBytes    int64  `json:"sent_bytes"`
	// MatchedBytes is file content that delta transfer found on the target
	// already; ChecksumBytes the block checksums it cost.
	MatchedBytes  int64 `json:"matched_bytes"`
	ChecksumBytes int64 `json:"checksum_bytes"`
	// WireBytes is what the SSH connection carried in both directions.
	WireBytes int64 `json:"wire_bytes"`
	// HashedBytes counts the file content read to hash, on this host and
	// on the target, verification included.
	HashedBytes int64 `json:"hashed_bytes"`
	// Phases holds when each phase started; Downtime is from the start of
	// the final pass (the freeze point) to the target being ready.
	Phases   []PhaseTime   `json:"phases,omitempty"`
	Downtime time.Duration `json:"downtime_ns,omitempty"`
	// Live reports the containers frozen for the final pass.
	Live *LiveResult `json:"live,omitempty"`
	// Thawed names the containers that an interrupted run had left
	// frozen and this one thawed first.
	Thawed   []string      `json:"thawed,omitempty"`
	DryRun   bool          `json:"dry_run,omitempty"`
	Duration time.Duration `json:"duration_ns"`
}

func (o *Options) defaults() {
	if o.RemoteStow == "" {
		o.RemoteStow = DefaultRemoteStow
	}
	if o.RemoteAPI == "" {
		o.RemoteAPI = DefaultRemoteAPI
	}
	if o.MaxRounds <= 0 {
		o.MaxRounds = DefaultMaxRounds
	}
	if o.SmallChange <= 0 {
		o.SmallChange = DefaultSmallChange
	}
	if o.Workers <= 0 {
		o.Workers = defaultWorkers
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = time.Second
	}
	if o.Progress == nil {
		o.Progress = func(Event) {}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
}

// run is one migration in progress.
type run struct {
	opts    Options
	start   time.Time
	conn    *remote.Conn
	target  *client.Client
	tplugin *client.Plugin
	ragent  *remote.Agent
	agent   *agent.Client
	sftp    *sftp.Client
	lim     *limiter
	srcRoot string
	dstRoot string
	res     Result
	// j is the migration's journal once it is loaded or started.
	j *journal
	// walkAt is when the source walk of the current pre-copy round began
	// (ns since the epoch), the walk time of the hashes that the round
	// takes of what it reads; 0 in the final pass.
	walkAt int64
	// finalDst is the target's manifest of the final pass, taken under
	// the verification's rules.
	finalDst *manifest.Manifest
}

// Run migrates opts.Volume to opts.Target. An error leaves a state that a
// rerun continues; errors carry the classes of plugins/volume where one
// applies (ErrInUse for a mounted source, ErrExists for an existing target,
// ErrNotFound, ErrUnavailable for a lost connection).
func Run(ctx context.Context, opts Options) (Result, error) {
	opts.defaults()
	r := &run{opts: opts, start: time.Now(), lim: &limiter{rate: opts.BWLimit}}
	r.res = Result{Volume: opts.Volume, Target: opts.Target.String(), TargetVolume: r.targetName(), DryRun: opts.DryRun}
	err := r.run(ctx)
	if err != nil && r.conn != nil {
		if why := r.conn.Lost(); why != "" {
			err = fmt.Errorf("%w: lost the connection to %s (%s); run the same command again to resume: %v",
				volume.ErrUnavailable, opts.Target.Addr(), why, err)
		}
	}
	r.res.WireBytes = r.wire()
	r.close(context.WithoutCancel(ctx))
	r.res.Duration = time.Since(r.start)
	return r.res, err
}

func (r *run) targetName() string {
	if r.opts.Target.Volume != "" {
		return r.opts.Target.Volume
	}
	return r.opts.Volume
}

// PhaseTime is when a phase started.
type PhaseTime struct {
	Phase string    `json:"phase"`
	At    time.Time `json:"at"`
}

func (r *run) emit(e Event) {
	if e.Elapsed == 0 {
		e.Elapsed = time.Since(r.start)
	}
	if n := len(r.res.Phases); n == 0 || r.res.Phases[n-1].Phase != e.Phase {
		r.res.Phases = append(r.res.Phases, PhaseTime{Phase: e.Phase, At: time.Now().UTC()})
	}
	if e.Wire == 0 {
		e.Wire = r.wire()
	}
	r.opts.Progress(e)
}

// wire returns the bytes the SSH connection carried so far.
func (r *run) wire() int64 {
	if r.conn == nil {
		return 0
	}
	return r.conn.WireBytes()
}

func (r *run) run(ctx context.Context) error {
	o := &r.opts
	src, err := o.Source.Volume(ctx, o.Volume)
	if err != nil {
		return fmt.Errorf("find source volume: %w", err)
	}
	j, err := loadJournal(o.StateDir, o.Volume)
	if err != nil {
		return err
	}
	interrupted := j != nil
	if !o.DryRun {
		// Thawed first, whatever becomes of this run.
		thawed, err := thawLeftover(ctx, o, j)
		if err != nil {
			return err
		}
		if len(thawed) > 0 {
			r.res.Thawed = thawed
			r.emit(Event{Phase: PhaseRelease, Message: thawedLine(thawed)})
		}
	}
	switch {
	case j == nil && o.Resume:
		return fmt.Errorf("%w: no interrupted migration of volume %q to resume (journal %s not found)", volume.ErrNotFound, o.Volume, journalPath(o.StateDir, o.Volume))
	case j != nil && (j.Target != r.res.Target || j.TargetVolume != r.res.TargetVolume):
		return fmt.Errorf("%w: volume %q has an interrupted migration to %s (volume %q); finish it, or remove %s to start another",
			volume.ErrExists, o.Volume, j.Target, j.TargetVolume, journalPath(o.StateDir, o.Volume))
	case j == nil:
		j = &journal{Volume: o.Volume, Target: r.res.Target, TargetVolume: r.res.TargetVolume, StartedAt: time.Now().UTC()}
	}
	r.j = j
	createOpts := r.targetOptions(src)

	r.emit(Event{Phase: PhaseConnect, Message: "connecting to " + o.Target.String()})
	r.conn, err = remote.Dial(ctx, o.Target, o.SSH)
	if err != nil {
		return err
	}
	where := fmt.Sprintf("volumed on %s (%s)", o.Target.Host, o.RemoteAPI)
	dial := func(path string) client.DialFunc {
		return func(ctx context.Context) (net.Conn, error) { return r.conn.DialUnix(ctx, path) }
	}
	r.target = client.NewDial(where, dial(o.RemoteAPI))
	st, err := r.target.Status(ctx)
	if err != nil {
		return fmt.Errorf("reach the target's volumed: %w", err)
	}
	r.tplugin = client.NewPluginDial(fmt.Sprintf("volumed's plugin socket on %s (%s)", o.Target.Host, st.PluginSocket), dial(st.PluginSocket))

	existing, err := r.target.Volume(ctx, r.res.TargetVolume)
	exists := err == nil
	if err != nil && !errors.Is(err, volume.ErrNotFound) {
		return fmt.Errorf("look up the target volume: %w", err)
	}
	to := o.Target
	to.Volume = r.res.TargetVolume
	if exists && !interrupted && src.MigratedTo == to.String() {
		// A run that was stopped after its switch finished the job.
		r.emit(Event{Phase: PhaseDone, Message: fmt.Sprintf("volume %q was migrated to %s already", o.Volume, to.String())})
		return nil
	}
	if exists && !j.CreatedTarget && !j.Forced && !o.Force {
		return fmt.Errorf("%w: volume %q exists on %s (provider %s); refusing to replace its content: use --force to copy into it, or ?volume=NAME for another name",
			volume.ErrExists, r.res.TargetVolume, o.Target.Host, existing.Provider)
	}
	if o.DryRun {
		return r.dryRun(ctx, exists, createOpts)
	}

	r.emit(Event{Phase: PhasePrepare, Message: fmt.Sprintf("target volume %q on %s", r.res.TargetVolume, o.Target.Host)})
	// The agent and SFTP sessions start while the volumes are created and
	// mounted.
	sessions := r.startSessions()
	err = r.prepareVolumes(ctx, j, exists, createOpts)
	if serr := sessions(); err == nil {
		err = serr
	}
	if err != nil {
		return err
	}
	if err := r.ragent.Hello(r.dstRoot); err != nil {
		return err
	}
	r.agent = r.ragent.Client

	// Pre-copy rounds while the volume may still be in use.
	j.Phase = PhasePrecopy
	if err := j.save(o.StateDir); err != nil {
		return err
	}
	// Hashes of an interrupted run of this migration, checked against each
	// file's inode, size, mtime and ctime before use.
	var prev *manifest.Manifest
	if interrupted {
		prev = manifest.LoadHashes(hashesPath(o.StateDir, o.Volume))
	}
	for round := 1; round <= o.MaxRounds; round++ {
		p, srcM, err := r.round(ctx, PhasePrecopy, round, prev)
		if err != nil {
			return err
		}
		prev = srcM
		if err := manifest.SaveHashes(hashesPath(o.StateDir, o.Volume), srcM); err != nil {
			o.Log.Debug("keep hashes", "error", err)
		}
		if p.Empty() || p.SendBytes < o.SmallChange {
			break
		}
		// Nothing else has the source mounted: nothing changed it since
		// the walk, and another pre-copy round would find what the final
		// pass finds.
		if m, err := r.foreignMounts(ctx); err == nil && len(m) == 0 {
			break
		}
	}

	// Both sides hash everything afresh before the freeze (the source
	// reuses what the last round hashed of settled files), so that the
	// verification while frozen reads only what changed since (see
	// verify), and the final pass re-sends what differs already.
	r.emit(Event{Phase: PhasePrecopy, Round: r.res.Rounds, Message: "hashing both sides afresh before the final pass"})
	if prev, err = r.freshHashes(ctx, prev); err != nil {
		return err
	}

	// The journal's fsync comes before the freeze point: it may wait for
	// the file system to write out much else.
	j.Phase = PhaseFinal
	if err := j.save(o.StateDir); err != nil {
		return err
	}
	// Final pass: nothing may write. The freeze point: from here until
	// the switch, nothing may write; with a Freezer the consumers are
	// frozen here and released on every way out.
	freeze := time.Now()
	writers, err := r.stopWriters(ctx)
	if err != nil {
		return err
	}
	defer writers.release(ctx, false)
	fp, final, err := r.round(ctx, PhaseFinal, r.res.Rounds+1, prev)
	if err != nil {
		return err
	}

	r.emit(Event{Phase: PhaseVerify, Message: "comparing manifests with content hashes"})
	if fp.Empty() && allHashed(final) {
		// The final pass changed nothing, and its walks follow the
		// verification's rules (see round): they are the verification.
		err = compare(final, r.finalDst)
	} else {
		err = r.verify(ctx, final)
	}
	if err != nil {
		return err
	}

	r.emit(Event{Phase: PhaseSwitch, Message: fmt.Sprintf("volume %q is active on %s", r.res.TargetVolume, o.Target.Host)})
	if err := r.releaseMounts(ctx); err != nil {
		return err
	}
	if err := r.markSource(ctx, writers, to.String()); err != nil {
		return err
	}
	if err := removeJournal(o.StateDir, o.Volume); err != nil {
		return err
	}
	r.res.Downtime = time.Since(freeze)
	r.emit(Event{Phase: PhaseDone, Files: r.res.Files, Bytes: r.res.SentBytes, BytesTotal: r.res.Bytes})
	return nil
}

// startSessions starts the migrate agent and SFTP on the target in the
// background; the function it returns waits for them and keeps what
// started in r (for close), with the first error.
func (r *run) startSessions() func() error {
	type started struct {
		agent *remote.Agent
		sftp  *sftp.Client
		err   error
	}
	ch := make(chan started, 1)
	go func() {
		var s started
		if s.agent, s.err = r.conn.StartAgent(r.opts.RemoteStow); s.err == nil {
			s.sftp, s.err = r.conn.SFTP()
		}
		ch <- s
	}()
	return func() error {
		s := <-ch
		r.ragent, r.sftp = s.agent, s.sftp
		return s.err
	}
}

// prepareVolumes creates the target volume unless it exists, recording
// that in the journal first, and mounts both volumes.
func (r *run) prepareVolumes(ctx context.Context, j *journal, exists bool, createOpts map[string]string) error {
	o := &r.opts
	if !exists {
		j.CreatedTarget = true
		j.Phase = PhasePrepare
		if err := j.save(o.StateDir); err != nil {
			return err
		}
		if _, err := r.target.CreateVolume(ctx, api.CreateRequest{Name: r.res.TargetVolume, Options: createOpts}); err != nil {
			return fmt.Errorf("create the target volume: %w", err)
		}
	} else {
		j.Forced = j.Forced || (o.Force && !j.CreatedTarget)
		if err := j.save(o.StateDir); err != nil {
			return err
		}
	}
	var err error
	if r.dstRoot, err = mountOnce(ctx, r.target, r.tplugin, r.res.TargetVolume); err != nil {
		return fmt.Errorf("mount the target volume on %s: %w", o.Target.Host, err)
	}
	if r.srcRoot, err = mountOnce(ctx, o.Source, o.SourcePlugin, o.Volume); err != nil {
		return fmt.Errorf("mount the source volume: %w", err)
	}
	return nil
}

// targetOptions returns the create options of the target volume.
func (r *run) targetOptions(src api.Volume) map[string]string {
	opts := maps.Clone(src.Options)
	if opts == nil {
		opts = map[string]string{}
	}
	if _, ok := opts["provider"]; !ok && src.Provider != "" {
		opts["provider"] = src.Provider
	}
	if r.opts.Provider != "" && r.opts.Provider != opts["provider"] {
		// Another provider's options do not apply.
		opts = map[string]string{"provider": r.opts.Provider}
	}
	maps.Copy(opts, r.opts.VolumeOptions)
	return opts
}

func (r *run) dryRun(ctx context.Context, exists bool, opts map[string]string) error {
	what := "create"
	if exists {
		what = "copy into the existing"
	}
	keys := make([]string, 0, len(opts))
	for k, v := range opts {
		keys = append(keys, k+"="+v)
	}
	r.emit(Event{Phase: PhasePrepare, Message: fmt.Sprintf("dry run: would %s volume %q on %s with %s",
		what, r.res.TargetVolume, r.opts.Target.Host, strings.Join(slices.Sorted(slices.Values(keys)), ","))})
	return nil
}

// round walks both sides, plans and carries out the plan.
func (r *run) round(ctx context.Context, phase string, n int, prev *manifest.Manifest) (*plan.Plan, *manifest.Manifest, error) {
	r.res.Rounds = n
	// A hash that this round takes of a file it reads after the walk's
	// stat carries the walk's start as its walk time, as a walk's own
	// hashes do; the final pass keeps none (verify hashes afresh).
	r.walkAt = 0
	if phase == PhasePrecopy {
		r.walkAt = time.Now().UnixNano()
	}
	// Both sides walk (and hash what changed) at the same time.
	var dstM *manifest.Manifest
	var dstErr error
	got := make(chan struct{})
	go func() {
		defer close(got)
		if phase == PhaseFinal {
			// As the verification's: a hash is reused only under its
			// rules, so that the verification can do with these
			// manifests when the final pass changes nothing.
			dstM, dstErr = r.agent.VerifyManifest()
			r.finalDst = dstM
			return
		}
		dstM, dstErr = r.agent.Manifest(true)
	}()
	// The source's files are hashed lazily: those the target has with the
	// same size now, to compare content; those sent, as they are read. The
	// large ones that would go by delta are hashed while the target still
	// walks (hashAhead), and those the target turns out not to have are
	// abandoned then.
	opts := manifest.WalkOptions{Hash: true, Lazy: true, Previous: prev, Exclude: []string{agent.TempDir}}
	if phase == PhaseFinal {
		opts.Settled = manifest.SettledHash
	}
	srcM, err := manifest.Walk(ctx, r.srcRoot, opts)
	var unhashed []int
	var ahead *aheadHasher
	if err == nil {
		for i := range srcM.Entries {
			if e := &srcM.Entries[i]; e.Type == manifest.Regular && e.SHA256 == "" {
				unhashed = append(unhashed, i)
			}
		}
		ahead = r.hashAhead(ctx, srcM)
	}
	<-got
	var dst map[string]*manifest.Entry
	if dstErr == nil {
		dst = dstM.Index()
	}
	need := func(e *manifest.Entry) bool {
		d := dst[e.Path]
		return d != nil && d.Type == manifest.Regular && d.Size == e.Size
	}
	if ahead != nil {
		ahead.stop(need)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("walk the source volume: %w", err)
	}
	if dstErr != nil {
		return nil, nil, dstErr
	}
	if err := srcM.HashWhere(ctx, r.srcRoot, need); err != nil {
		return nil, nil, fmt.Errorf("hash the source volume: %w", err)
	}
	for _, i := range unhashed {
		if e := &srcM.Entries[i]; e.SHA256 != "" {
			e.HashedAt = r.walkAt
		}
	}
	r.res.Files, r.res.Bytes = srcM.Totals()
	r.res.HashedBytes += srcM.Hashed + dstM.Hashed
	p := plan.Make(srcM, dstM)
	base := Event{Phase: phase, Round: n, FilesTotal: len(p.Send), BytesTotal: p.SendBytes, Changes: p.Changes()}
	r.emit(base)
	if p.Empty() {
		return p, srcM, nil
	}
	if err := r.checkSpace(p, dst); err != nil {
		return nil, nil, err
	}
	m := startMeter(base, r.opts.ProgressInterval, r.emit, r.wire)
	err = r.execute(ctx, p, dst, srcM.Index(), m)
	last := m.done()
	r.res.SentBytes += last.Bytes
	r.res.MatchedBytes += last.Matched
	r.res.ChecksumBytes += last.Checksums
	if err != nil {
		if ctx.Err() == nil {
			err = r.spaceError(err, p, dst)
		}
		return nil, nil, err
	}
	r.emit(last)
	return p, srcM, nil
}

// freshHashes hashes every file of both sides afresh, at the same time,
// and returns the source's manifest. The target's agent keeps its own as
// the hashes that its verification may reuse. Both walks wait for files
// changed just before them to settle (at most manifest.SettledHash), so
// that the verification may reuse every hash of a file unchanged since.
// The source reuses the hashes of prev (the last pre-copy round's) under
// the same rule as the verification: taken by this host in this run, of a
// file unchanged since whose ctime was manifest.SettledHash old when that
// round's walk began.
func (r *run) freshHashes(ctx context.Context, prev *manifest.Manifest) (*manifest.Manifest, error) {
	srcM, _, err := r.walkBoth(ctx, manifest.WalkOptions{Hash: true, Settle: true, Previous: prev,
		Settled: manifest.SettledHash}, r.agent.FreshManifest)
	return srcM, err
}

// walkBoth walks the source with opts (the migration's temporary directory
// left out) while the target's agent answers target, its manifest, and
// counts what both sides hashed.
func (r *run) walkBoth(ctx context.Context, opts manifest.WalkOptions, target func() (*manifest.Manifest, error)) (src, dst *manifest.Manifest, err error) {
	var dstErr error
	got := make(chan struct{})
	go func() {
		defer close(got)
		dst, dstErr = target()
	}()
	opts.Exclude = append(opts.Exclude, agent.TempDir)
	src, err = manifest.Walk(ctx, r.srcRoot, opts)
	<-got
	if err != nil {
		return nil, nil, fmt.Errorf("walk the source volume: %w", err)
	}
	if dstErr != nil {
		return nil, nil, dstErr
	}
	r.res.HashedBytes += src.Hashed + dst.Hashed
	return src, dst, nil
}

// verify compares manifests of both sides with content hashes. Each side
// hashes afresh every file but those it hashed itself earlier in this
// migration (freshHashes before the freeze, or a later walk) and whose
// inode, size, mtime and ctime are unchanged since, the ctime having been
// at least manifest.SettledHash old when that walk began. Such a file
// cannot have changed through the file system: every change of content or
// metadata sets the ctime to the current time, which no user can set back,
// and the age rules out a change within the same clock tick as the one
// before it (timestamps come from a coarse clock). Hashes that the other
// side sent along (the target takes the source's hash for content it
// received) carry no walk time and are never reused. So the comparison
// still covers every byte of both sides, each hashed by its own side, while
// only the files that the final pass changed are read during the downtime.
func (r *run) verify(ctx context.Context, final *manifest.Manifest) error {
	// Both sides hash at the same time.
	srcM, dstM, err := r.walkBoth(ctx, manifest.WalkOptions{Hash: true, Previous: final,
		Settled: manifest.SettledHash}, r.agent.VerifyManifest)
	if err != nil {
		return err
	}
	return compare(srcM, dstM)
}

// allHashed says whether every regular file of m has a hash.
func allHashed(m *manifest.Manifest) bool {
	for i := range m.Entries {
		if e := &m.Entries[i]; e.Type == manifest.Regular && e.SHA256 == "" {
			return false
		}
	}
	return true
}

// compare returns an error that lists the differences of dstM from srcM,
// nil when there are none.
func compare(srcM, dstM *manifest.Manifest) error {
	diffs := manifest.Diff(srcM, dstM)
	if len(diffs) == 0 {
		return nil
	}
	lines := make([]string, 0, maxListedDifference)
	for i, d := range diffs {
		if i == maxListedDifference {
			lines = append(lines, fmt.Sprintf("... and %d more", len(diffs)-i))
			break
		}
		lines = append(lines, d.String())
	}
	return fmt.Errorf("verify: the target differs from the source in %d paths (rerun to copy again):\n  %s", len(diffs), strings.Join(lines, "\n  "))
}

// mountOnce mounts name under MountID unless that mount is counted already
// (a run that was interrupted left it), and returns the mount point.
func mountOnce(ctx context.Context, c *client.Client, p *client.Plugin, name string) (string, error) {
	v, err := c.Volume(ctx, name)
	if err != nil {
		return "", err
	}
	if v.MountIDs[MountID] > 0 && v.Mountpoint != "" {
		return v.Mountpoint, nil
	}
	return p.Mount(ctx, name, MountID)
}

// releaseMounts drops the migration's mounts of both volumes.
func (r *run) releaseMounts(ctx context.Context) error {
	if r.dstRoot != "" {
		if err := r.tplugin.Unmount(ctx, r.res.TargetVolume, MountID); err != nil {
			return fmt.Errorf("unmount the target volume: %w", err)
		}
		r.dstRoot = ""
	}
	if r.srcRoot != "" {
		if err := r.opts.SourcePlugin.Unmount(ctx, r.opts.Volume, MountID); err != nil {
			return fmt.Errorf("unmount the source volume: %w", err)
		}
		r.srcRoot = ""
	}
	return nil
}

// close releases the mounts (best effort: a rerun finds a mount left by a
// run that could not release it) and ends the sessions and the connection.
func (r *run) close(ctx context.Context) {
	if r.conn != nil {
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_ = r.releaseMounts(ctx)
		cancel()
	}
	if r.sftp != nil {
		r.sftp.Close()
	}
	if r.ragent != nil {
		r.ragent.Close()
	}
	if r.conn != nil {
		r.conn.Close()
	}
}
