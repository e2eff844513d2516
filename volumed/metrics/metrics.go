// Package metrics serves volumed's Prometheus metrics from a registry of its
// own: per-volume usage figures and mount counts built at scrape time (so a
// deleted volume leaves no series), volume and provider counts, plugin
// request counters and latencies, and the Go and process collectors.
//
// Usage figures come from statfs-like calls that can hang on a dead mount.
// They run on a small pool with a timeout per volume and a budget per scrape;
// a volume whose last stat has not returned is not stat'ed again until it
// does, so a hung mount costs at most one goroutine and never blocks a
// scrape.
package metrics

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

// Source is what the metrics read from the daemon at scrape time.
type Source interface {
	// List returns every volume volumed knows.
	List(ctx context.Context) ([]api.Volume, error)
	// Stats returns the usage figures of a mounted volume, ErrNotFound when
	// it is not mounted. It should return when ctx is done, but metrics
	// copes with one that does not.
	Stats(ctx context.Context, name string) (volume.Stats, error)
	// Providers returns the configured providers and their state.
	Providers(ctx context.Context) []api.Provider
}

// Options tune a Metrics. Zero values take the defaults.
type Options struct {
	// StatTimeout bounds one volume's Stats call; default 2s.
	StatTimeout time.Duration
	// ScrapeTimeout bounds the work of one scrape; default 5s. Volumes
	// not stat'ed within it are left out of that scrape.
	ScrapeTimeout time.Duration
	// Workers is how many Stats calls run at once; default 4.
	Workers int
	// Version is the value of stowage_build_info's version label.
	Version string
	// Logger receives stat failures and exposition errors; default discards.
	Logger *slog.Logger
}

// Methods are the plugin methods ObserveRequest records by name; any other
// is recorded as "other" to keep the label set bounded.
var methods = map[string]bool{
	"Create": true, "Remove": true, "Mount": true, "Unmount": true,
	"Path": true, "Get": true, "List": true, "Capabilities": true,
}

// Metrics holds volumed's registry and the metrics it updates itself.
type Metrics struct {
	reg     *prometheus.Registry
	handler http.Handler
	stats   *statsCollector

	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// New returns metrics reading from src, registered in a fresh registry.
func New(src Source, opts Options) *Metrics {
	if opts.StatTimeout <= 0 {
		opts.StatTimeout = 2 * time.Second
	}
	if opts.ScrapeTimeout <= 0 {
		opts.ScrapeTimeout = 5 * time.Second
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Version == "" {
		opts.Version = "unknown"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}

	m := &Metrics{
		reg:   prometheus.NewRegistry(),
		stats: newStatsCollector(src, opts),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "stowage_plugin_requests_total",
			Help: "Docker volume plugin requests by method and result (ok or error class).",
		}, []string{"method", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "stowage_plugin_request_duration_seconds",
			Help: "Duration of Docker volume plugin requests by method.",
			// Docker allows Create and Mount two minutes.
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120},
		}, []string{"method"}),
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "stowage_build_info",
		Help:        "Always 1; the version label says which volumed runs.",
		ConstLabels: prometheus.Labels{"version": opts.Version},
	})
	build.Set(1)

	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build, m.requests, m.duration, m.stats,
	)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:      slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		ErrorHandling: promhttp.ContinueOnError,
		// A backstop: the collectors bound their own work by ScrapeTimeout.
		Timeout: 2 * opts.ScrapeTimeout,
	})
	return m
}

// Handler returns the HTTP handler that serves the metrics.
func (m *Metrics) Handler() http.Handler { return m.handler }

// Registry returns the registry the metrics are in.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// ObserveRequest records one plugin request: its method, its outcome and how
// long it took.
func (m *Metrics) ObserveRequest(method string, err error, d time.Duration) {
	if !methods[method] {
		method = "other"
	}
	m.requests.WithLabelValues(method, result(err)).Inc()
	m.duration.WithLabelValues(method).Observe(d.Seconds())
}

// result names the outcome of a request: "ok", "timeout" for a passed
// deadline (even when a class wraps it), its error class, or "error".
func result(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	if c := api.ClassOf(err); c != api.ClassInternal {
		return c
	}
	return "error"
}
