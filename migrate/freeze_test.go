package migrate

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/client"
)

// mountTable is a volumed control API that answers for one volume, "v",
// with the mount IDs set in it.
type mountTable struct {
	mu  sync.Mutex
	ids map[string]int
}

func (m *mountTable) set(ids map[string]int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ids = maps.Clone(ids)
}

func (m *mountTable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if r.Method != http.MethodGet || r.URL.Path != "/v1/volumes/v" {
		http.NotFound(w, r)
		return
	}
	v := api.Volume{Name: "v", MountIDs: m.ids}
	for _, n := range m.ids {
		v.Mounts += n
	}
	json.NewEncoder(w).Encode(v)
}

func startMountTable(t *testing.T, ids map[string]int) (*mountTable, *client.Client) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	m := &mountTable{}
	m.set(ids)
	srv := &http.Server{Handler: m}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	c, err := client.New("unix://" + sock)
	if err != nil {
		t.Fatal(err)
	}
	return m, c
}

// recordingFreezer freezes nothing; it records what it was asked.
type recordingFreezer struct {
	mu       sync.Mutex
	asked    map[string]int
	released []bool
	ctxErrs  []error
	// during runs inside Freeze; releaseErr is what Release returns.
	during     func()
	releaseErr error
}

func (f *recordingFreezer) Freeze(ctx context.Context, vol string, mounts map[string]int, record func(Consumer) error) (*Frozen, error) {
	f.asked = maps.Clone(mounts)
	if err := record(Consumer{Kind: "stow", ID: "id-w", Name: "w"}); err != nil {
		return nil, err
	}
	if f.during != nil {
		f.during()
	}
	return &Frozen{Consumers: []string{"stow:w"}, After: "resume", Release: func(ctx context.Context, switched bool) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		f.released = append(f.released, switched)
		f.ctxErrs = append(f.ctxErrs, ctx.Err())
		return f.releaseErr
	}}, nil
}

func testRun(t *testing.T, src *client.Client, f Freezer) *run {
	opts := Options{Volume: "v", Source: src, Freezer: f, StateDir: t.TempDir(), Log: slog.New(slog.DiscardHandler)}
	opts.defaults()
	return &run{opts: opts, srcRoot: t.TempDir(), j: &journal{Volume: "v"}}
}

// TestStopWriters: the source's other mounts are refused without a
// Freezer, frozen with one, and released exactly once, with a live
// context even when the migration's was cancelled.
func TestStopWriters(t *testing.T) {
	held := map[string]int{MountID: 1, "c1-0": 2, "dockerid": 1}
	t.Run("not mounted", func(t *testing.T) {
		_, src := startMountTable(t, map[string]int{MountID: 1})
		f := &recordingFreezer{}
		w, err := testRun(t, src, f).stopWriters(t.Context())
		if err != nil || f.asked != nil {
			t.Fatalf("stopWriters = %v, asked %v; want nothing frozen", err, f.asked)
		}
		if err := w.release(t.Context(), true); err != nil {
			t.Errorf("release with nothing frozen: %v", err)
		}
	})
	t.Run("no freezer", func(t *testing.T) {
		_, src := startMountTable(t, held)
		_, err := testRun(t, src, nil).stopWriters(t.Context())
		if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "mounted 3 times") || !strings.Contains(err.Error(), "--live") {
			t.Fatalf("stopWriters without a Freezer = %v; want ErrInUse that counts 3 mounts and names --live", err)
		}
	})
	t.Run("released once with a live context", func(t *testing.T) {
		_, src := startMountTable(t, held)
		f := &recordingFreezer{}
		r := testRun(t, src, f)
		w, err := r.stopWriters(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if want := map[string]int{"c1-0": 2, "dockerid": 1}; !maps.Equal(f.asked, want) {
			t.Errorf("asked to freeze %v, want %v (the migration's own mount left out)", f.asked, want)
		}
		ctx, cancel := context.WithCancel(t.Context())
		cancel() // Ctrl-C
		if err := w.release(ctx, false); err != nil {
			t.Fatal(err)
		}
		w.release(t.Context(), true)
		if len(f.released) != 1 || f.released[0] || f.ctxErrs[0] != nil {
			t.Errorf("Release calls (switched) %v with ctx errors %v; want one, not switched, live ctx", f.released, f.ctxErrs)
		}
		if r.res.Live == nil || !r.res.Live.Released || r.res.Live.Consumers[0] != "stow:w" {
			t.Errorf("Live = %+v", r.res.Live)
		}
	})
	t.Run("mounted again while freezing", func(t *testing.T) {
		m, src := startMountTable(t, held)
		f := &recordingFreezer{}
		f.during = func() { m.set(map[string]int{MountID: 1, "c1-0": 2, "dockerid": 1, "late": 1}) }
		_, err := testRun(t, src, f).stopWriters(t.Context())
		if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "late") {
			t.Fatalf("stopWriters = %v; want ErrInUse naming mount ID late", err)
		}
		if len(f.released) != 1 || f.released[0] {
			t.Errorf("Release calls %v; want one, not switched: nothing stays frozen", f.released)
		}
	})
	t.Run("release fails", func(t *testing.T) {
		_, src := startMountTable(t, held)
		f := &recordingFreezer{releaseErr: errors.New("thaw cgroup: boom")}
		r := testRun(t, src, f)
		w, err := r.stopWriters(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		err = w.release(t.Context(), true)
		if err == nil || !strings.Contains(err.Error(), "stow:w") || !strings.Contains(err.Error(), "boom") {
			t.Errorf("release = %v; want the error naming the consumer", err)
		}
		if r.res.Live.Released {
			t.Error("Live.Released after a failed release")
		}
	})
}

// recordedFrozen reads the frozen containers from the journal on disk.
func recordedFrozen(t *testing.T, r *run) []Consumer {
	t.Helper()
	j, err := loadJournal(r.opts.StateDir, r.opts.Volume)
	if err != nil || j == nil {
		t.Fatalf("load journal = %v, %v", j, err)
	}
	return j.Frozen
}

// TestFrozenRecord: each container is in the journal on disk before it is
// frozen, and out of it once released; a failed release keeps it there.
func TestFrozenRecord(t *testing.T) {
	held := map[string]int{MountID: 1, "c1-0": 1}
	want := []Consumer{{Kind: "stow", ID: "id-w", Name: "w"}}
	for _, fail := range []bool{false, true} {
		_, src := startMountTable(t, held)
		f := &recordingFreezer{}
		if fail {
			f.releaseErr = errors.New("thaw cgroup: boom")
		}
		r := testRun(t, src, f)
		var during []Consumer
		f.during = func() { during = recordedFrozen(t, r) }
		w, err := r.stopWriters(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(during, want) {
			t.Errorf("journal while freezing records %v, want %v", during, want)
		}
		w.release(t.Context(), false)
		got := recordedFrozen(t, r)
		if fail && !slices.Equal(got, want) {
			t.Errorf("journal after a failed release records %v, want %v kept", got, want)
		}
		if !fail && len(got) != 0 {
			t.Errorf("journal after the release records %v, want none", got)
		}
	}
}

// thawRecorder thaws, of what it is asked, those in paused.
type thawRecorder struct {
	paused map[string]bool
	asked  []Consumer
	err    error
}

func (f *thawRecorder) Thaw(ctx context.Context, cs []Consumer) ([]Consumer, error) {
	f.asked = append(f.asked, cs...)
	var out []Consumer
	for _, c := range cs {
		if f.paused[c.String()] {
			out = append(out, c)
		}
	}
	return out, f.err
}

// TestThawLeftover: what the journal records as frozen is handed to the
// Thawer, the record cleared and the thawed ones named; a Thawer that
// fails, or none, keeps the record.
func TestThawLeftover(t *testing.T) {
	rec := []Consumer{{Kind: "stow", ID: "1", Name: "s"}, {Kind: "docker", ID: "2", Name: "d"}, {Kind: "docker", ID: "3", Name: "gone"}}
	setup := func(t *testing.T, th Thawer) (*Options, *journal) {
		o := &Options{Volume: "v", StateDir: t.TempDir(), Thawer: th}
		j := &journal{Volume: "v", Frozen: slices.Clone(rec)}
		if err := j.save(o.StateDir); err != nil {
			t.Fatal(err)
		}
		return o, j
	}
	onDisk := func(t *testing.T, o *Options) []Consumer {
		j, err := loadJournal(o.StateDir, o.Volume)
		if err != nil {
			t.Fatal(err)
		}
		return j.Frozen
	}
	t.Run("thawed", func(t *testing.T) {
		th := &thawRecorder{paused: map[string]bool{"stow:s": true, "docker:d": true}}
		o, j := setup(t, th)
		got, err := thawLeftover(t.Context(), o, j)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(th.asked, rec) || !slices.Equal(got, []string{"docker:d", "stow:s"}) {
			t.Errorf("asked %v, thawed %v; want all asked, the paused two thawed", th.asked, got)
		}
		if line := thawedLine(got); line != "thawed docker:d, stow:s left frozen by an interrupted migration" {
			t.Errorf("line = %q", line)
		}
		if f := onDisk(t, o); len(f) != 0 {
			t.Errorf("journal still records %v", f)
		}
	})
	t.Run("nothing recorded", func(t *testing.T) {
		th := &thawRecorder{}
		o := &Options{Volume: "v", StateDir: t.TempDir(), Thawer: th}
		if got, err := thawLeftover(t.Context(), o, &journal{Volume: "v"}); err != nil || got != nil || th.asked != nil {
			t.Errorf("thawLeftover = %v, %v, asked %v; want nothing", got, err, th.asked)
		}
	})
	t.Run("thaw fails", func(t *testing.T) {
		o, j := setup(t, &thawRecorder{err: errors.New("docker unpause: boom")})
		_, err := thawLeftover(t.Context(), o, j)
		if err == nil || !strings.Contains(err.Error(), "boom") || !strings.Contains(err.Error(), "docker:d") {
			t.Errorf("thawLeftover = %v; want the error naming the containers", err)
		}
		if f := onDisk(t, o); !slices.Equal(f, rec) {
			t.Errorf("journal records %v after a failed thaw, want %v kept", f, rec)
		}
	})
	t.Run("no thawer", func(t *testing.T) {
		o, j := setup(t, nil)
		_, err := thawLeftover(t.Context(), o, j)
		if !errors.Is(err, volume.ErrInUse) || !strings.Contains(err.Error(), "stow:s") {
			t.Errorf("thawLeftover without a Thawer = %v; want ErrInUse naming the containers", err)
		}
		if f := onDisk(t, o); !slices.Equal(f, rec) {
			t.Errorf("journal records %v, want %v kept", f, rec)
		}
	})
}
