package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	dv "github.com/docker/go-plugins-helpers/volume"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/manager"
	"github.com/stowage/stowage/volumed/store"
)

type observed struct {
	mu   sync.Mutex
	errs map[string][]error
}

func (o *observed) ObserveRequest(method string, err error, d time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.errs[method] = append(o.errs[method], err)
}

type server struct {
	client *http.Client
	fake   *volumetest.Fake
	m      *manager.Manager
	obs    *observed
}

func start(t testing.TB, opts Options) *server {
	t.Helper()
	root := t.TempDir()
	fake := volumetest.NewFake(filepath.Join(root, "fake"), false)
	s, err := store.Open(filepath.Join(root, "state.db"), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	m, err := manager.New(manager.Options{
		Root: root, Store: s, DefaultProvider: "fake",
		Providers: map[string]volume.Provider{"fake": fake},
		IsMounted: func(string) (bool, error) { return false, nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "plug")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "p.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	obs := &observed{errs: map[string][]error{}}
	opts.Observer = obs
	d := New(m, opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	return &server{client: c, fake: fake, m: m, obs: obs}
}

// post sends a request as dockerd does and decodes the JSON reply.
func (s *server) post(t testing.TB, path, body string) (int, map[string]any) {
	t.Helper()
	resp, err := s.client.Post("http://plugin"+path, "application/vnd.docker.plugins.v1.2+json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		out["raw"] = string(b)
	}
	return resp.StatusCode, out
}

func TestDockerSequence(t *testing.T) {
	s := start(t, Options{})
	steps := []struct {
		path, body string
		code       int
		want       string // a fragment of the reply
	}{
		{"/Plugin.Activate", `{}`, 200, "VolumeDriver"},
		{"/VolumeDriver.Capabilities", `{}`, 200, "local"},
		{"/VolumeDriver.Get", `{"Name":"v1"}`, 500, `volume \"v1\": not found`},
		{"/VolumeDriver.Create", `{"Name":"v1","Opts":{"size":"64MiB"}}`, 200, ""},
		{"/VolumeDriver.Get", `{"Name":"v1"}`, 200, `"size":"64MiB"`},
		{"/VolumeDriver.Mount", `{"Name":"v1","ID":"M1"}`, 200, `"Mountpoint":`},
		{"/VolumeDriver.Mount", `{"Name":"v1","ID":"M1"}`, 200, `"Mountpoint":`},
		{"/VolumeDriver.Get", `{"Name":"v1"}`, 200, `"mounts":2`},
		{"/VolumeDriver.Remove", `{"Name":"v1"}`, 500, "in use by 2 mounts"},
		{"/VolumeDriver.Unmount", `{"Name":"v1","ID":"M9"}`, 500, `no mount with ID \"M9\"`},
		{"/VolumeDriver.Unmount", `{"Name":"v1","ID":"M1"}`, 200, ""},
		{"/VolumeDriver.Path", `{"Name":"v1"}`, 200, `"Mountpoint":`},
		{"/VolumeDriver.Unmount", `{"Name":"v1","ID":"M1"}`, 200, ""},
		{"/VolumeDriver.List", `{}`, 200, `"Name":"v1"`},
		{"/VolumeDriver.Create", `{"Name":"../x","Opts":{}}`, 500, "not allowed"},
		{"/VolumeDriver.Create", `{"Name":"v2","Opts":{"colour":"red"}}`, 500, `unknown option \"colour\"`},
		{"/VolumeDriver.Create", `{"Name":"v2",`, 400, ""},
		{"/VolumeDriver.Mount", `{"Name":"ghost","ID":"M1"}`, 500, "not found"},
		{"/VolumeDriver.Remove", `{"Name":"v1"}`, 200, ""},
		{"/VolumeDriver.List", `{}`, 200, `"Volumes":[]`},
	}
	for i, st := range steps {
		code, out := s.post(t, st.path, st.body)
		raw, _ := json.Marshal(out)
		if code != st.code || !strings.Contains(string(raw)+asString(out["raw"]), st.want) {
			t.Fatalf("step %d %s %s: %d %s; want %d containing %q", i, st.path, st.body, code, raw, st.code, st.want)
		}
	}
	s.obs.mu.Lock()
	defer s.obs.mu.Unlock()
	if n := len(s.obs.errs["Mount"]); n != 3 {
		t.Errorf("observed %d Mount requests; want 3", n)
	}
	if errs := s.obs.errs["Remove"]; len(errs) != 2 || !errors.Is(errs[0], volume.ErrInUse) || errs[1] != nil {
		t.Errorf("observed Remove results %v; want in use, then ok", errs)
	}
}

func asString(v any) string {
	s, _ := v.(string)
	return s
}

func TestHungProviderTimesOut(t *testing.T) {
	s := start(t, Options{SlowTimeout: 100 * time.Millisecond, Timeout: 100 * time.Millisecond})
	if code, out := s.post(t, "/VolumeDriver.Create", `{"Name":"v"}`); code != 200 {
		t.Fatalf("Create: %d %v", code, out)
	}
	s.fake.Hang(true)
	defer s.fake.Hang(false)
	code, out := s.post(t, "/VolumeDriver.Mount", `{"Name":"v","ID":"M1"}`)
	if code != 500 || !strings.Contains(asString(out["Err"]), `provider "fake" did not finish`) {
		t.Fatalf("Mount on a hung provider: %d %v", code, out)
	}
	// Get answers from local state while the provider hangs.
	code, out = s.post(t, "/VolumeDriver.Get", `{"Name":"v"}`)
	if code != 200 {
		t.Fatalf("Get while hung: %d %v", code, out)
	}
	if v, _ := s.m.Get(context.Background(), "v"); v.Mounts != 0 {
		t.Fatalf("a timed-out mount was counted: %+v", v)
	}
}

// FuzzRequest sends arbitrary bodies to every endpoint: the daemon answers
// each with a status and JSON, and a request that fails changes nothing.
func FuzzRequest(f *testing.F) {
	for _, seed := range []struct{ method, body string }{
		{"Create", `{"Name":"v","Opts":{"size":"1G"}}`},
		{"Create", `{"Name":"../x"}`},
		{"Create", `{"Name":"v",`},
		{"Mount", `{"Name":"v","ID":""}`},
		{"Unmount", `{"Name":"v","ID":"x"}`},
		{"Remove", `{"Name":""}`},
		{"Get", `null`},
		{"List", `[]`},
	} {
		f.Add(seed.method, seed.body)
	}
	s := start(f, Options{})
	methods := map[string]bool{"Create": true, "Remove": true, "Mount": true, "Unmount": true, "Path": true, "Get": true, "List": true, "Capabilities": true}
	f.Fuzz(func(t *testing.T, method, body string) {
		if !methods[method] {
			method = "Get"
		}
		before, err := s.m.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		code, out := s.post(t, "/VolumeDriver."+method, body)
		if code == 200 {
			return
		}
		if code != 400 && (code != 500 || asString(out["Err"]) == "") {
			t.Fatalf("%s %q: status %d, reply %v; want 200, 400 or 500 with Err", method, body, code, out)
		}
		after, err := s.m.List(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("failed %s %q changed the volumes:\n%+v\n->\n%+v", method, body, before, after)
		}
	})
}

// deadlineBackend records how much time each request had before its
// deadline.
type deadlineBackend struct {
	mu   sync.Mutex
	left map[string]time.Duration // by method; -1 without a deadline
}

func (b *deadlineBackend) note(ctx context.Context, method string) {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.left[method] = left
}

func (b *deadlineBackend) Create(ctx context.Context, name string, opts map[string]string) (api.Volume, error) {
	b.note(ctx, "Create")
	return api.Volume{Name: name}, nil
}
func (b *deadlineBackend) Remove(ctx context.Context, name string) error {
	b.note(ctx, "Remove")
	return nil
}
func (b *deadlineBackend) Get(ctx context.Context, name string) (api.Volume, error) {
	b.note(ctx, "Get")
	return api.Volume{Name: name}, nil
}
func (b *deadlineBackend) List(ctx context.Context) ([]api.Volume, error) {
	b.note(ctx, "List")
	return nil, nil
}
func (b *deadlineBackend) Mount(ctx context.Context, name, id string) (string, error) {
	b.note(ctx, "Mount")
	return "/m", nil
}
func (b *deadlineBackend) Unmount(ctx context.Context, name, id string) error {
	b.note(ctx, "Unmount")
	return nil
}
func (b *deadlineBackend) Path(ctx context.Context, name string) (string, error) {
	b.note(ctx, "Path")
	return "/m", nil
}

// TestDeadlinesBelowDockerd: every request reaches the backend with a
// deadline below the one dockerd gives it, by default and as configured.
func TestDeadlinesBelowDockerd(t *testing.T) {
	for _, tc := range []struct {
		name       string
		opts       Options
		slow, rest time.Duration // at most
	}{
		{"defaults", Options{}, DockerSlowDeadline, DockerDeadline},
		{"configured", Options{SlowTimeout: 5 * time.Second, Timeout: 3 * time.Second}, 5 * time.Second, 3 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &deadlineBackend{left: map[string]time.Duration{}}
			d := New(b, tc.opts)
			defer d.Close()
			calls := []error{
				d.Create(&dv.CreateRequest{Name: "v"}),
				d.Remove(&dv.RemoveRequest{Name: "v"}),
				d.Unmount(&dv.UnmountRequest{Name: "v", ID: "m"}),
			}
			_, err := d.Mount(&dv.MountRequest{Name: "v", ID: "m"})
			calls = append(calls, err)
			_, err = d.Get(&dv.GetRequest{Name: "v"})
			calls = append(calls, err)
			_, err = d.List()
			calls = append(calls, err)
			_, err = d.Path(&dv.PathRequest{Name: "v"})
			calls = append(calls, err)
			if err := errors.Join(calls...); err != nil {
				t.Fatal(err)
			}
			for method, left := range b.left {
				limit := tc.rest
				if method == "Create" || method == "Mount" {
					limit = tc.slow
				}
				docker := DockerDeadline
				if method == "Create" || method == "Mount" {
					docker = DockerSlowDeadline
				}
				if left <= 0 || left > limit || left >= docker {
					t.Errorf("%s had %s before its deadline; want a deadline, at most %s and below dockerd's %s",
						method, left, limit, docker)
				}
			}
			if len(b.left) != 7 {
				t.Errorf("the backend saw %d methods, want 7: %v", len(b.left), b.left)
			}
		})
	}
}
