package metrics

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

// Reasons for leaving a volume's usage figures out of a scrape.
const (
	reasonTimeout = "timeout"
	reasonError   = "error"
)

// statField is one usage figure and the gauge it is exported as.
type statField struct {
	desc *prometheus.Desc
	get  func(volume.Stats) int64
}

func newStatField(name, help string, get func(volume.Stats) int64) statField {
	return statField{
		desc: prometheus.NewDesc("stowage_volume_stats_"+name, help, []string{"volume", "provider"}, nil),
		get:  get,
	}
}

// statsCollector builds the per-volume, volume count and provider series at
// scrape time from a Source.
type statsCollector struct {
	src  Source
	opts Options
	log  *slog.Logger

	fields   []statField
	mounts   *prometheus.Desc
	volumes  *prometheus.Desc
	provider *prometheus.Desc
	errors   *prometheus.CounterVec

	mu       sync.Mutex      // guards inflight
	inflight map[string]bool // volumes whose Stats call has not returned
}

func newStatsCollector(src Source, opts Options) *statsCollector {
	c := &statsCollector{
		src:  src,
		opts: opts,
		log:  opts.Logger,
		fields: []statField{
			newStatField("capacity_bytes", "Capacity in bytes of the volume's filesystem.",
				func(s volume.Stats) int64 { return s.CapacityBytes }),
			newStatField("available_bytes", "Bytes available to unprivileged users on the volume.",
				func(s volume.Stats) int64 { return s.AvailableBytes }),
			newStatField("used_bytes", "Bytes used on the volume.",
				func(s volume.Stats) int64 { return s.UsedBytes }),
			newStatField("inodes", "Total inodes of the volume's filesystem.",
				func(s volume.Stats) int64 { return s.Inodes }),
			newStatField("inodes_free", "Free inodes on the volume.",
				func(s volume.Stats) int64 { return s.InodesFree }),
			newStatField("inodes_used", "Used inodes on the volume.",
				func(s volume.Stats) int64 { return s.InodesUsed }),
		},
		mounts: prometheus.NewDesc("stowage_volume_mounts_active",
			"Active mounts of the volume on this host.", []string{"volume", "provider"}, nil),
		volumes: prometheus.NewDesc("stowage_volumes",
			"Volumes by provider and state.", []string{"provider", "state"}, nil),
		provider: prometheus.NewDesc("stowage_provider_up",
			"Whether the provider's last probe succeeded (1) or not (0).", []string{"provider"}, nil),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_volume_stats_errors_total",
			Help: "Volume usage figures left out of a scrape, by reason: timeout (the stat " +
				"did not return in time, is still running from an earlier scrape, or the " +
				"scrape ran out of time) or error.",
		}, []string{"reason"}),
		inflight: map[string]bool{},
	}
	c.errors.WithLabelValues(reasonTimeout)
	c.errors.WithLabelValues(reasonError)
	return c
}

// Describe implements prometheus.Collector.
func (c *statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, f := range c.fields {
		ch <- f.desc
	}
	ch <- c.mounts
	ch <- c.volumes
	ch <- c.provider
	c.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (c *statsCollector) Collect(ch chan<- prometheus.Metric) {
	// Collect gets no context from the registry; the scrape budget bounds it.
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.ScrapeTimeout)
	defer cancel()
	// Collected last, so that a scrape counts its own failures.
	defer c.errors.Collect(ch)

	counts := map[[2]string]int{}
	for _, p := range c.src.Providers(ctx) {
		up := 0.0
		if p.State == api.ProviderUp {
			up = 1
		}
		ch <- prometheus.MustNewConstMetric(c.provider, prometheus.GaugeValue, up, p.Name)
		for _, s := range []string{api.StateCreating, api.StateReady, api.StateRemoving} {
			counts[[2]string{p.Name, s}] = 0
		}
	}

	vols, err := c.src.List(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.volumes, fmt.Errorf("list volumes: %w", err))
		return
	}
	var mounted []api.Volume
	for _, v := range vols {
		counts[[2]string{v.Provider, v.State}]++
		if v.Mounts > 0 {
			mounted = append(mounted, v)
			ch <- prometheus.MustNewConstMetric(c.mounts, prometheus.GaugeValue,
				float64(v.Mounts), v.Name, v.Provider)
		}
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.volumes, prometheus.GaugeValue, float64(n), k[0], k[1])
	}

	slices.SortFunc(mounted, func(a, b api.Volume) int { return cmp.Compare(a.Name, b.Name) })
	stats := c.statAll(ctx, mounted)
	for i, v := range mounted {
		s, ok := stats[i]
		if !ok {
			continue
		}
		for _, f := range c.fields {
			// The contract reports figures it cannot tell as -1.
			if x := f.get(s); x >= 0 {
				ch <- prometheus.MustNewConstMetric(f.desc, prometheus.GaugeValue, float64(x), v.Name, v.Provider)
			}
		}
	}
}

// statAll stats vols on the worker pool until ctx is done and returns the
// figures by index into vols; volumes without figures are missing.
func (c *statsCollector) statAll(ctx context.Context, vols []api.Volume) map[int]volume.Stats {
	jobs := make(chan int)
	var (
		mu  sync.Mutex // guards out
		out = map[int]volume.Stats{}
		wg  sync.WaitGroup
	)
	for range min(c.opts.Workers, len(vols)) {
		wg.Go(func() {
			for i := range jobs {
				if s, ok := c.stat(ctx, vols[i]); ok {
					mu.Lock()
					out[i] = s
					mu.Unlock()
				}
			}
		})
	}
	for i := range vols {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	return out
}

// stat returns the figures of v, or false when it has none in time. The
// Stats call runs in a goroutine of its own so that a call that ignores its
// context only keeps that goroutine, and v stays in the in-flight set until
// the call returns.
func (c *statsCollector) stat(ctx context.Context, v api.Volume) (volume.Stats, bool) {
	log := c.log.With("volume", v.Name, "provider", v.Provider)
	if ctx.Err() != nil {
		c.errors.WithLabelValues(reasonTimeout).Inc()
		return volume.Stats{}, false
	}
	if !c.begin(v.Name) {
		c.errors.WithLabelValues(reasonTimeout).Inc()
		log.Debug("skip volume stats, earlier stat still running")
		return volume.Stats{}, false
	}

	type result struct {
		stats volume.Stats
		err   error
	}
	sctx, cancel := context.WithTimeout(ctx, c.opts.StatTimeout)
	defer cancel()
	done := make(chan result, 1)
	go func() {
		defer c.end(v.Name)
		s, err := c.src.Stats(sctx, v.Name)
		done <- result{s, err}
	}()

	var r result
	select {
	case r = <-done:
	case <-sctx.Done():
		select {
		case r = <-done:
		default:
			r.err = sctx.Err()
		}
	}
	switch {
	case r.err == nil:
		return r.stats, true
	case errors.Is(r.err, volume.ErrNotFound):
		// Unmounted since List: nothing to report, nothing wrong.
	case errors.Is(r.err, context.DeadlineExceeded):
		c.errors.WithLabelValues(reasonTimeout).Inc()
		log.Warn("stat volume timed out", "timeout", c.opts.StatTimeout)
	default:
		c.errors.WithLabelValues(reasonError).Inc()
		log.Warn("stat volume", "error", r.err)
	}
	return volume.Stats{}, false
}

// begin marks name in flight; false when it already is.
func (c *statsCollector) begin(name string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inflight[name] {
		return false
	}
	c.inflight[name] = true
	return true
}

func (c *statsCollector) end(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, name)
}
