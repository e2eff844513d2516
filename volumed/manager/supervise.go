package manager

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

// Run probes every provider until ctx is done, so Providers reports their
// health. It returns when ctx is done.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.probeInterval)
	defer t.Stop()
	for {
		m.ProbeAll(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ProbeAll probes every provider once and records the result. A provider
// that volumed runs and that does not answer has its supervisor check it
// at once (see checker).
func (m *Manager) ProbeAll(ctx context.Context) {
	for _, name := range m.providerNames() {
		p := m.providers[name]
		pctx, cancel := context.WithTimeout(ctx, m.probeTimeout)
		var info volume.Info
		err := call(pctx, p, "probe", func(ctx context.Context) error {
			var err error
			if info, err = p.p.Info(ctx); err != nil {
				return err
			}
			return p.p.Probe(ctx)
		})
		if err == nil {
			_, err = p.capabilities(pctx)
		}
		cancel()
		p.mu.Lock()
		was, wasKnown := p.up, !p.checked.IsZero()
		p.up, p.checked = err == nil, time.Now()
		if err == nil {
			p.info, p.lastErr = info, ""
		} else {
			p.lastErr = err.Error()
		}
		p.mu.Unlock()
		if err != nil {
			p.checkNow() // once more if call asked already: still one check
		}
		switch {
		case err != nil && (was || !wasKnown):
			m.log.Warn("provider down", "provider", name, "err", err)
		case err == nil && !was && wasKnown:
			m.log.Info("provider up again", "provider", name)
		}
	}
}

// Providers describes every provider as last probed.
func (m *Manager) Providers(ctx context.Context) []api.Provider {
	counts := map[string]int{}
	m.mu.Lock()
	for _, r := range m.vols {
		counts[r.Provider]++
	}
	m.mu.Unlock()
	var out []api.Provider
	for _, name := range m.providerNames() {
		p := m.providers[name]
		p.mu.Lock()
		ap := api.Provider{
			Name:      name,
			Kind:      p.kind,
			Driver:    p.info.Name,
			Version:   p.info.Version,
			State:     api.ProviderDown,
			LastError: p.lastErr,
			CheckedAt: p.checked,
			Volumes:   counts[name],
		}
		if p.up {
			ap.State = api.ProviderUp
		}
		p.mu.Unlock()
		if p.status != nil {
			mergeStatus(&ap, p.status)
		}
		out = append(out, ap)
	}
	return out
}

// mergeStatus merges the view of the provider's supervisor into ap, which
// holds the last probe: while the supervisor brings the provider up, its
// state and error win; once it is up, the probe says up or down.
func mergeStatus(ap *api.Provider, s ProviderStatus) {
	state, lastErr, restarts := s.Status()
	ap.Restarts = restarts
	if state == api.ProviderUp {
		return
	}
	ap.State = state
	if lastErr != "" {
		ap.LastError = lastErr
	}
}

// Reconcile compares the records with the host's mounts and with each
// provider, logs every difference and repairs only volumed's own
// bookkeeping: a volume recorded as mounted whose mount point is gone (the
// host restarted) has its stale mount counts dropped. It never deletes data
// and never unmounts anything.
func (m *Manager) Reconcile(ctx context.Context) error {
	m.mu.Lock()
	names := make([]string, 0, len(m.vols))
	for n := range m.vols {
		names = append(names, n)
	}
	m.mu.Unlock()

	known := map[string]bool{}
	var errs []error
	for _, name := range names {
		known[name] = true
		if err := m.reconcileVolume(ctx, name); err != nil {
			errs = append(errs, err)
		}
	}

	// Mount points nobody recorded are left alone, but said.
	entries, err := os.ReadDir(m.mountsDir())
	if err != nil {
		errs = append(errs, fmt.Errorf("read %s: %w", m.mountsDir(), err))
	}
	for _, e := range entries {
		if known[e.Name()] {
			continue
		}
		path := filepath.Join(m.mountsDir(), e.Name())
		if mounted, _ := m.isMounted(path); mounted {
			m.log.Warn("reconcile: mount point of an unknown volume, left in place", "path", path)
		}
	}

	for _, pname := range m.providerNames() {
		p := m.providers[pname]
		l, ok := p.p.(volume.Lister)
		if !ok {
			continue
		}
		lctx, cancel := context.WithTimeout(ctx, m.probeTimeout)
		vols, err := l.List(lctx)
		cancel()
		if err != nil {
			m.log.Warn("reconcile: list provider volumes", "provider", pname, "err", err)
			continue
		}
		ids := map[string]bool{}
		for _, v := range vols {
			ids[v.ID] = true
		}
		recorded := map[string]bool{}
		m.mu.Lock()
		for _, r := range m.vols {
			if r.Provider != pname || r.ID == "" {
				continue
			}
			recorded[r.ID] = true
			if !ids[r.ID] && r.State == api.StateReady {
				m.log.Warn("reconcile: volume missing at its provider", "volume", r.Name, "provider", pname, "id", r.ID)
			}
		}
		m.mu.Unlock()
		for _, v := range vols {
			if !recorded[v.ID] {
				m.log.Warn("reconcile: provider has a volume volumed does not know, left in place", "provider", pname, "id", v.ID)
			}
		}
	}
	return errors.Join(errs...)
}

func (m *Manager) reconcileVolume(ctx context.Context, name string) error {
	rec, unlock, err := m.lockRecord(ctx, "reconcile volume", name)
	if errors.Is(err, volume.ErrNotFound) {
		return nil // removed meanwhile
	}
	if err != nil {
		return err
	}
	defer unlock()
	switch rec.State {
	case api.StateCreating:
		m.log.Warn("reconcile: volume was being created when volumed stopped; create it again to finish or remove it", "volume", name)
	case api.StateRemoving:
		m.log.Warn("reconcile: volume was being removed when volumed stopped; remove it again to finish", "volume", name)
	}
	target := m.Mountpoint(name)
	mounted, err := m.isMounted(target)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("reconcile volume %q: %w", name, err)
	}
	switch {
	case rec.Published && !mounted:
		m.log.Warn("reconcile: volume recorded as mounted is not mounted; dropping its stale mount counts",
			"volume", name, "mounts", rec.MountCount())
		rec.Mounts = nil
		// Let the provider release what it holds for the gone mount; the
		// target is not mounted, so this unmounts nothing.
		if p, ok := m.providers[rec.Provider]; ok {
			if err := m.unpublish(ctx, p, &rec); err != nil {
				m.log.Warn("reconcile: release stale mount at the provider", "volume", name, "err", err)
			}
		}
		rec.Published = false
		if err := m.save(rec); err != nil {
			return err
		}
	case !rec.Published && mounted:
		m.log.Warn("reconcile: volume is mounted but not recorded as mounted; the next mount uses it", "volume", name, "path", target)
		rec.Published = true
		if err := m.save(rec); err != nil {
			return err
		}
	case rec.Published && rec.MountCount() == 0:
		m.log.Warn("reconcile: volume is mounted with no mount counted; removing it releases the mount", "volume", name)
	default:
		if rec.Published {
			m.log.Info("reconcile: volume mounted", "volume", name, "mounts", rec.MountCount())
		}
	}
	return nil
}

// ProviderStatus reports on a provider that volumed runs and restarts
// itself, a sidecar (volumed/sidecar's Supervisor is one).
type ProviderStatus interface {
	// Status returns the state (api.ProviderStarting, ProviderUp,
	// ProviderRestarting or ProviderFailed), what last took the provider
	// down or kept it from starting, and how often it was restarted.
	Status() (state, lastErr string, restarts int)
	// Changed returns a channel that is closed at the next change of
	// Status.
	Changed() <-chan struct{}
}

// checker is a ProviderStatus that can check its provider at once rather
// than at its next poll, as volumed/sidecar's Supervisor can. The manager
// asks when it finds the provider not answering, so that a crash shows as
// restarting without delay, and Create and Mount wait for the verdict.
type checker interface {
	// CheckNow does not block; the channel it returns is closed when a
	// check begun after the call has ended or the status has changed.
	CheckNow() <-chan struct{}
}

// checkNow asks the supervisor of a provider that it finds up to check it
// now, and returns the channel that says when it has; nil when there is
// no such supervisor or it is busy bringing the provider up anyway.
func (p *provider) checkNow() <-chan struct{} {
	c, ok := p.status.(checker)
	if !ok {
		return nil
	}
	if st, _, _ := p.status.Status(); st != api.ProviderUp {
		return nil
	}
	return c.CheckNow()
}

// probedDown reports whether the last probe of p failed.
func (p *provider) probedDown() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.up && !p.checked.IsZero()
}

// waitReserve is the part of a request's remaining time that waiting for a
// restarting provider leaves for the call itself, up to maxWaitReserve.
const (
	waitReserve    = 4 // a quarter
	maxWaitReserve = 15 * time.Second
)

// waitRunning returns nil at once for a provider volumed does not run, and
// when the one it runs is up. While it starts or restarts, it waits for it
// to come up, bounded by ctx less a reserve for the call that follows. One
// that its supervisor says is up but that the last probe found down (the
// supervisor may not have noticed a crash yet) is checked at once if the
// supervisor can (see checker), and waited for in the same way: up again,
// or found running, goes on. A provider that failed to start, or that does
// not come back in time, is ErrUnavailable saying so.
func waitRunning(ctx context.Context, p *provider) error {
	if p.status == nil {
		return nil
	}
	wctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		reserve := min(time.Until(dl)/waitReserve, maxWaitReserve)
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, dl.Add(-reserve))
		defer cancel()
	}
	start := time.Now()
	waited := false // for the supervisor, whose up is then its verdict
	for {
		changed := p.status.Changed() // before Status, so no change is missed
		state, lastErr, restarts := p.status.Status()
		var checked <-chan struct{} // nil, never ready, unless a check is asked for
		switch state {
		case api.ProviderUp:
			c, ok := p.status.(checker)
			if waited || !ok || !p.probedDown() {
				return nil
			}
			checked = c.CheckNow()
		case api.ProviderFailed:
			return fmt.Errorf("%w: provider %q failed to start (%d %s; last error: %s)",
				volume.ErrUnavailable, p.name, restarts, plural(restarts, "restart", "restarts"), orNone(lastErr))
		}
		waited = true
		select {
		case <-changed:
		case <-checked:
		case <-wctx.Done():
			if state == api.ProviderUp {
				p.mu.Lock()
				lastErr = p.lastErr
				p.mu.Unlock()
				state = "not answering"
			}
			return fmt.Errorf("%w: provider %q is %s (%d %s; last error: %s); waited %s: %w",
				volume.ErrUnavailable, p.name, state, restarts, plural(restarts, "restart", "restarts"), orNone(lastErr),
				time.Since(start).Round(time.Millisecond), wctx.Err())
		}
	}
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
