package metrics

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stowage/stowage/internal/testenv"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

// fakeSource is a Source whose answers the test sets.
type fakeSource struct {
	mu        sync.Mutex // guards the fields below
	vols      []api.Volume
	stats     map[string]volume.Stats
	errs      map[string]error
	hang      map[string]chan struct{} // Stats blocks until closed, ignoring ctx like a hung statfs
	calls     map[string]int
	providers []api.Provider
	listErr   error
}

func newFakeSource() *fakeSource {
	return &fakeSource{
		stats: map[string]volume.Stats{},
		errs:  map[string]error{},
		hang:  map[string]chan struct{}{},
		calls: map[string]int{},
		providers: []api.Provider{
			{Name: "local", State: api.ProviderUp},
		},
	}
}

func (f *fakeSource) List(ctx context.Context) ([]api.Volume, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.Volume(nil), f.vols...), f.listErr
}

func (f *fakeSource) Stats(ctx context.Context, name string) (volume.Stats, error) {
	f.mu.Lock()
	f.calls[name]++
	hang, s, err := f.hang[name], f.stats[name], f.errs[name]
	f.mu.Unlock()
	if hang != nil {
		<-hang
	}
	if err != nil {
		return volume.Stats{}, err
	}
	return s, nil
}

func (f *fakeSource) Providers(ctx context.Context) []api.Provider {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.Provider(nil), f.providers...)
}

func (f *fakeSource) set(fn func(f *fakeSource)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeSource) statCalls(name string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[name]
}

func fullStats() volume.Stats {
	return volume.Stats{CapacityBytes: 1000, AvailableBytes: 600, UsedBytes: 400,
		Inodes: 100, InodesFree: 90, InodesUsed: 10}
}

const helpStats = `# HELP stowage_volume_stats_available_bytes Bytes available to unprivileged users on the volume.
# TYPE stowage_volume_stats_available_bytes gauge
# HELP stowage_volume_stats_capacity_bytes Capacity in bytes of the volume's filesystem.
# TYPE stowage_volume_stats_capacity_bytes gauge
# HELP stowage_volume_stats_inodes Total inodes of the volume's filesystem.
# TYPE stowage_volume_stats_inodes gauge
# HELP stowage_volume_stats_inodes_free Free inodes on the volume.
# TYPE stowage_volume_stats_inodes_free gauge
# HELP stowage_volume_stats_inodes_used Used inodes on the volume.
# TYPE stowage_volume_stats_inodes_used gauge
# HELP stowage_volume_stats_used_bytes Bytes used on the volume.
# TYPE stowage_volume_stats_used_bytes gauge
`

var statNames = []string{
	"stowage_volume_stats_capacity_bytes", "stowage_volume_stats_available_bytes",
	"stowage_volume_stats_used_bytes", "stowage_volume_stats_inodes",
	"stowage_volume_stats_inodes_free", "stowage_volume_stats_inodes_used",
}

func TestCollect(t *testing.T) {
	tests := []struct {
		name  string
		setup func(f *fakeSource)
		names []string
		want  string
	}{
		{
			name: "mounted volume has stats, unmounted has none",
			setup: func(f *fakeSource) {
				f.vols = []api.Volume{
					{Name: "a", Provider: "local", State: api.StateReady, Mounts: 1},
					{Name: "b", Provider: "local", State: api.StateReady},
				}
				f.stats["a"] = fullStats()
				f.stats["b"] = fullStats()
			},
			names: statNames,
			want: helpStats + `stowage_volume_stats_available_bytes{provider="local",volume="a"} 600
stowage_volume_stats_capacity_bytes{provider="local",volume="a"} 1000
stowage_volume_stats_inodes{provider="local",volume="a"} 100
stowage_volume_stats_inodes_free{provider="local",volume="a"} 90
stowage_volume_stats_inodes_used{provider="local",volume="a"} 10
stowage_volume_stats_used_bytes{provider="local",volume="a"} 400
`,
		},
		{
			name: "unknown figures left out",
			setup: func(f *fakeSource) {
				f.vols = []api.Volume{{Name: "a", Provider: "local", State: api.StateReady, Mounts: 1}}
				f.stats["a"] = volume.Stats{CapacityBytes: 1000, AvailableBytes: 600, UsedBytes: 400,
					Inodes: -1, InodesFree: -1, InodesUsed: -1}
			},
			names: statNames,
			want: helpStats + `stowage_volume_stats_available_bytes{provider="local",volume="a"} 600
stowage_volume_stats_capacity_bytes{provider="local",volume="a"} 1000
stowage_volume_stats_used_bytes{provider="local",volume="a"} 400
`,
		},
		{
			name: "stat error counted, series left out",
			setup: func(f *fakeSource) {
				f.vols = []api.Volume{
					{Name: "a", Provider: "local", State: api.StateReady, Mounts: 1},
					{Name: "gone", Provider: "local", State: api.StateReady, Mounts: 1},
				}
				f.errs["a"] = fmt.Errorf("statfs: %w", volume.ErrUnavailable)
				f.errs["gone"] = fmt.Errorf("stat volume: %w", volume.ErrNotFound)
			},
			names: append([]string{"stowage_volume_stats_errors_total"}, statNames...),
			want: `# HELP stowage_volume_stats_errors_total Volume usage figures left out of a scrape, by reason: timeout (the stat did not return in time, is still running from an earlier scrape, or the scrape ran out of time) or error.
# TYPE stowage_volume_stats_errors_total counter
stowage_volume_stats_errors_total{reason="error"} 1
stowage_volume_stats_errors_total{reason="timeout"} 0
`,
		},
		{
			name: "mounts, volume counts and providers",
			setup: func(f *fakeSource) {
				f.providers = []api.Provider{
					{Name: "local", State: api.ProviderUp},
					{Name: "nfs", State: api.ProviderDown},
				}
				f.vols = []api.Volume{
					{Name: "a", Provider: "local", State: api.StateReady, Mounts: 3},
					{Name: "b", Provider: "local", State: api.StateCreating},
					{Name: "c", Provider: "local", State: api.StateReady},
				}
			},
			names: []string{"stowage_volume_mounts_active", "stowage_volumes", "stowage_provider_up"},
			want: `# HELP stowage_provider_up Whether the provider's last probe succeeded (1) or not (0).
# TYPE stowage_provider_up gauge
stowage_provider_up{provider="local"} 1
stowage_provider_up{provider="nfs"} 0
# HELP stowage_volume_mounts_active Active mounts of the volume on this host.
# TYPE stowage_volume_mounts_active gauge
stowage_volume_mounts_active{provider="local",volume="a"} 3
# HELP stowage_volumes Volumes by provider and state.
# TYPE stowage_volumes gauge
stowage_volumes{provider="local",state="creating"} 1
stowage_volumes{provider="local",state="ready"} 2
stowage_volumes{provider="local",state="removing"} 0
stowage_volumes{provider="nfs",state="creating"} 0
stowage_volumes{provider="nfs",state="ready"} 0
stowage_volumes{provider="nfs",state="removing"} 0
`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newFakeSource()
			src.set(tt.setup)
			m := New(src, Options{})
			if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(tt.want), tt.names...); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestSeriesGoneWithVolume(t *testing.T) {
	src := newFakeSource()
	src.set(func(f *fakeSource) {
		f.vols = []api.Volume{{Name: "a", Provider: "local", State: api.StateReady, Mounts: 1}}
		f.stats["a"] = fullStats()
	})
	m := New(src, Options{})
	names := append([]string{"stowage_volume_mounts_active"}, statNames...)

	n, err := testutil.GatherAndCount(m.Registry(), names...)
	if err != nil {
		t.Fatal(err)
	}
	if n != len(names) {
		t.Fatalf("series while mounted = %d, want %d", n, len(names))
	}

	src.set(func(f *fakeSource) { f.vols = nil })
	n, err = testutil.GatherAndCount(m.Registry(), names...)
	if err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("series after removal = %d, want 0", n)
	}
}

func TestListError(t *testing.T) {
	src := newFakeSource()
	src.set(func(f *fakeSource) { f.listErr = fmt.Errorf("read store: %w", volume.ErrUnavailable) })
	m := New(src, Options{})
	if _, err := m.Registry().Gather(); err == nil || !strings.Contains(err.Error(), "list volumes") {
		t.Fatalf("Gather error = %v, want one naming list volumes", err)
	}
	// The handler still serves everything else.
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), "stowage_provider_up") {
		t.Fatalf("handler: status %d, body without stowage_provider_up:\n%s", rec.Code, rec.Body)
	}
}

func TestHungStat(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		release := make(chan struct{})
		src.set(func(f *fakeSource) {
			f.vols = []api.Volume{
				{Name: "ok", Provider: "local", State: api.StateReady, Mounts: 1},
				{Name: "stuck", Provider: "local", State: api.StateReady, Mounts: 1},
			}
			f.stats["ok"] = fullStats()
			f.stats["stuck"] = fullStats()
			f.hang["stuck"] = release
		})
		m := New(src, Options{StatTimeout: 2 * time.Second, ScrapeTimeout: 5 * time.Second})
		timeouts := m.stats.errors.WithLabelValues(reasonTimeout)

		// countFor returns how many stats series volume name has after a scrape.
		countFor := func(name string) int {
			t.Helper()
			mfs, err := m.Registry().Gather()
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, mf := range mfs {
				if !strings.HasPrefix(mf.GetName(), "stowage_volume_stats_") {
					continue
				}
				for _, mt := range mf.GetMetric() {
					for _, l := range mt.GetLabel() {
						if l.GetName() == "volume" && l.GetValue() == name {
							n++
						}
					}
				}
			}
			return n
		}

		for scrape := 1; scrape <= 2; scrape++ {
			if got := countFor("stuck"); got != 0 {
				t.Errorf("scrape %d: stuck volume has %d series, want 0", scrape, got)
			}
			if got := countFor("ok"); got != 6 {
				t.Errorf("scrape %d: ok volume has %d series, want 6", scrape, got)
			}
		}
		// Each of the four scrapes above counted one timeout; only the first
		// called Stats, the others found it still running.
		if got := testutil.ToFloat64(timeouts); got != 4 {
			t.Errorf("timeouts = %v, want 4", got)
		}
		if got := src.statCalls("stuck"); got != 1 {
			t.Errorf("Stats calls for stuck volume = %d, want 1", got)
		}

		// Once the hung call returns, the volume is stat'ed again.
		src.set(func(f *fakeSource) { delete(f.hang, "stuck") })
		close(release)
		synctest.Wait()
		if got := countFor("stuck"); got != 6 {
			t.Errorf("after release: stuck volume has %d series, want 6", got)
		}
		if got := src.statCalls("stuck"); got != 2 {
			t.Errorf("after release: Stats calls = %d, want 2", got)
		}
	})
}

func TestScrapeBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		src := newFakeSource()
		release := make(chan struct{})
		defer close(release)
		src.set(func(f *fakeSource) {
			for _, name := range []string{"a", "b", "c"} {
				f.vols = append(f.vols, api.Volume{Name: name, Provider: "local", State: api.StateReady, Mounts: 1})
				f.hang[name] = release
			}
		})
		// One worker, each stat times out at 2s, the scrape at 3s: "c" is
		// never started.
		m := New(src, Options{Workers: 1, StatTimeout: 2 * time.Second, ScrapeTimeout: 3 * time.Second})
		if _, err := m.Registry().Gather(); err != nil {
			t.Fatal(err)
		}
		if got := testutil.ToFloat64(m.stats.errors.WithLabelValues(reasonTimeout)); got != 3 {
			t.Errorf("timeouts = %v, want 3", got)
		}
		if got := src.statCalls("c"); got != 0 {
			t.Errorf("Stats calls for c = %d, want 0", got)
		}
	})
}

func TestObserveRequest(t *testing.T) {
	tests := []struct {
		method     string
		err        error
		wantMethod string
		wantResult string
	}{
		{"Create", nil, "Create", "ok"},
		{"Get", fmt.Errorf("get volume: %w", volume.ErrNotFound), "Get", "not_found"},
		{"Create", fmt.Errorf("create volume: %w", volume.ErrExists), "Create", "exists"},
		{"Remove", fmt.Errorf("remove volume: %w", volume.ErrInUse), "Remove", "in_use"},
		{"Create", volume.ErrInvalid, "Create", "invalid"},
		{"Mount", volume.ErrUnavailable, "Mount", "unavailable"},
		{"Capabilities", volume.ErrNotSupported, "Capabilities", "not_supported"},
		{"Mount", fmt.Errorf("mount volume: %w", context.DeadlineExceeded), "Mount", "timeout"},
		{"Mount", fmt.Errorf("%w: %w", volume.ErrUnavailable, context.DeadlineExceeded), "Mount", "timeout"},
		{"Unmount", errors.New("boom"), "Unmount", "error"},
		{"Path", nil, "Path", "ok"},
		{"List", nil, "List", "ok"},
		{"Bogus", nil, "other", "ok"},
		{"", volume.ErrInvalid, "other", "invalid"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%v", tt.method, tt.err), func(t *testing.T) {
			m := New(newFakeSource(), Options{})
			m.ObserveRequest(tt.method, tt.err, 250*time.Millisecond)
			if got := testutil.ToFloat64(m.requests.WithLabelValues(tt.wantMethod, tt.wantResult)); got != 1 {
				t.Errorf("requests{method=%q,result=%q} = %v, want 1", tt.wantMethod, tt.wantResult, got)
			}
			if n := testutil.CollectAndCount(m.requests); n != 1 {
				t.Errorf("request series = %d, want 1", n)
			}
			if n := testutil.CollectAndCount(m.duration); n != 1 {
				t.Errorf("duration series = %d, want 1", n)
			}
		})
	}
}

// populated returns metrics with every series present.
func populated(t *testing.T) *Metrics {
	t.Helper()
	src := newFakeSource()
	src.set(func(f *fakeSource) {
		f.vols = []api.Volume{{Name: "a", Provider: "local", State: api.StateReady, Mounts: 1}}
		f.stats["a"] = fullStats()
	})
	m := New(src, Options{Version: "1.2.3"})
	m.ObserveRequest("Mount", nil, time.Second)
	m.ObserveRequest("Mount", volume.ErrInUse, time.Millisecond)
	return m
}

func TestLint(t *testing.T) {
	problems, err := testutil.GatherAndLint(populated(t).Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

func TestHandler(t *testing.T) {
	rec := httptest.NewRecorder()
	populated(t).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d, body:\n%s", rec.Code, rec.Body)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`stowage_build_info{version="1.2.3"} 1`,
		`stowage_volume_stats_used_bytes{provider="local",volume="a"} 400`,
		`stowage_plugin_requests_total{method="Mount",result="in_use"} 1`,
		`stowage_plugin_request_duration_seconds_count{method="Mount"} 2`,
		"go_goroutines ",
		"process_start_time_seconds ",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("body lacks %q", want)
		}
	}
}

func TestPromtool(t *testing.T) {
	testenv.Require(t, "promtool") // Debian package prometheus
	promtool, err := testenv.LookPath("promtool")
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	populated(t).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("status = %d", rec.Code)
	}
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = bytes.NewReader(rec.Body.Bytes())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}
