package control_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/control"
	"github.com/stowage/stowage/volumed/control/controltest"
)

var testInfo = control.Info{
	Version:      "1.2.3",
	Root:         "/var/lib/stowage",
	PluginSocket: "/run/docker/plugins/stowage.sock",
	APISocket:    "/run/stowage/volumed.sock",
	MetricsAddr:  "127.0.0.1:9163",
	StartedAt:    time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
	PID:          42,
}

func newHandler(t *testing.T, b control.Backend) http.Handler {
	t.Helper()
	return control.New(b, testInfo, slog.New(slog.DiscardHandler))
}

// do sends a request to h and returns the status and body.
func do(t *testing.T, h http.Handler, method, path string, body io.Reader) (int, []byte) {
	t.Helper()
	req := httptest.NewRequest(method, path, body)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > 0 && res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("%s %s: Content-Type %q", method, path, res.Header.Get("Content-Type"))
	}
	return res.StatusCode, b
}

func decodeAs[T any](t *testing.T, b []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("decode %s: %v", b, err)
	}
	return v
}

// list returns the manager's volumes.
func list(t *testing.T, e *controltest.Env) []api.Volume {
	t.Helper()
	vols, err := e.Manager.List(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return vols
}

// create creates a volume through the manager, as an earlier request would
// have.
func create(t *testing.T, e *controltest.Env, name string, opts map[string]string) {
	t.Helper()
	if _, err := e.Manager.Create(t.Context(), name, opts); err != nil {
		t.Fatal(err)
	}
}

// mount mounts a volume once for each mount ID, as dockerd would.
func mount(t *testing.T, e *controltest.Env, name string, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, err := e.Manager.Mount(t.Context(), name, id); err != nil {
			t.Fatal(err)
		}
	}
}

func TestRoutes(t *testing.T) {
	e := controltest.New(t)
	h := newHandler(t, e.Manager)

	st, body := do(t, h, "GET", "/v1/volumes", nil)
	if st != http.StatusOK || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("list empty: %d %s", st, body)
	}

	st, body = do(t, h, "POST", "/v1/volumes", strings.NewReader(`{"name":"data","options":{"size":"64MiB","label":"fs"}}`))
	if st != http.StatusCreated {
		t.Fatalf("create: %d %s", st, body)
	}
	v := decodeAs[api.Volume](t, body)
	if v.Name != "data" || v.Provider != "local" || v.State != api.StateReady || v.CapacityBytes != 64<<20 || v.Options["label"] != "fs" {
		t.Errorf("create: got %+v", v)
	}

	st, body = do(t, h, "GET", "/v1/volumes/data", nil)
	if st != http.StatusOK || decodeAs[api.Volume](t, body).Name != "data" {
		t.Errorf("get: %d %s", st, body)
	}

	create(t, e, "busy", nil)
	mount(t, e, "busy", "M1", "M1", "M2")
	st, body = do(t, h, "GET", "/v1/volumes", nil)
	if vols := decodeAs[[]api.Volume](t, body); st != http.StatusOK || len(vols) != 2 || vols[0].Name != "busy" || vols[0].Mounts != 3 {
		t.Errorf("list: %d %s", st, body)
	}

	st, body = do(t, h, "GET", "/v1/providers", nil)
	ps := decodeAs[[]api.Provider](t, body)
	if st != http.StatusOK || len(ps) != 1 || ps[0].Name != "local" || ps[0].State != api.ProviderUp || ps[0].Volumes != 2 {
		t.Errorf("providers: %d %s", st, body)
	}

	st, body = do(t, h, "GET", "/v1/status", nil)
	want := api.Status{
		Version: "1.2.3", PID: 42, StartedAt: testInfo.StartedAt, Root: testInfo.Root,
		PluginSocket: testInfo.PluginSocket, APISocket: testInfo.APISocket, MetricsAddr: testInfo.MetricsAddr,
		Volumes: 2, MountsActive: 3,
	}
	got := decodeAs[api.Status](t, body)
	if st != http.StatusOK || len(got.Providers) != 1 {
		t.Fatalf("status: %d %s", st, body)
	}
	got.Providers = nil
	if !got.StartedAt.Equal(want.StartedAt) {
		t.Errorf("status StartedAt %v, want %v", got.StartedAt, want.StartedAt)
	}
	got.StartedAt = want.StartedAt
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("status:\n got %+v\nwant %+v", got, want)
	}

	st, body = do(t, h, "DELETE", "/v1/volumes/data", nil)
	if st != http.StatusNoContent || len(body) != 0 {
		t.Errorf("remove: %d %s", st, body)
	}
	st, body = do(t, h, "GET", "/v1/volumes/data", nil)
	if e := decodeAs[api.Error](t, body); st != http.StatusNotFound || e.Class != api.ClassNotFound || !strings.Contains(e.Message, "data") {
		t.Errorf("get removed: %d %s", st, body)
	}
	st, body = do(t, h, "DELETE", "/v1/volumes/busy", nil)
	if e := decodeAs[api.Error](t, body); st != http.StatusConflict || e.Class != api.ClassInUse {
		t.Errorf("remove busy: %d %s", st, body)
	}
}

// TestErrorClasses brings about every error class for real and checks its
// answer and that the failed request changed nothing. Each case starts with
// one volume, v, created with label=a.
func TestErrorClasses(t *testing.T) {
	mounted := func(t *testing.T, e *controltest.Env) { mount(t, e, "v", "M1") }
	failing := func(err error) func(*testing.T, *controltest.Env) {
		return func(_ *testing.T, e *controltest.Env) { e.Provider.Fail(err) }
	}
	tests := []struct {
		name               string
		setup              func(*testing.T, *controltest.Env)
		method, path, body string
		status             int
		class, msg         string
	}{
		{"not found", nil, "GET", "/v1/volumes/ghost", "",
			404, api.ClassNotFound, `volume "ghost": not found`},
		{"not found remove", nil, "DELETE", "/v1/volumes/ghost", "",
			404, api.ClassNotFound, `remove volume "ghost": not found`},
		{"exists", nil, "POST", "/v1/volumes", `{"name":"v","options":{"label":"b"}}`,
			409, api.ClassExists, `create volume "v": already exists with other options (label=a)`},
		{"in use", mounted, "DELETE", "/v1/volumes/v", "",
			409, api.ClassInUse, `remove volume "v": in use by 1 mount`},
		{"invalid name", nil, "POST", "/v1/volumes", `{"name":"../x"}`,
			400, api.ClassInvalid, `invalid argument: volume name "../x" has characters that are not allowed (names match [a-zA-Z0-9][a-zA-Z0-9_.-]*)`},
		{"invalid name get", nil, "GET", "/v1/volumes/.x", "",
			400, api.ClassInvalid, `invalid argument: volume name ".x" has characters that are not allowed (names match [a-zA-Z0-9][a-zA-Z0-9_.-]*)`},
		{"invalid option", nil, "POST", "/v1/volumes", `{"name":"w","options":{"colour":"red"}}`,
			400, api.ClassInvalid, `create volume "w": provider "local": create: invalid argument: unknown option "colour" (valid options: label)`},
		{"unavailable", failing(volume.ErrUnavailable), "POST", "/v1/volumes", `{"name":"w"}`,
			503, api.ClassUnavailable, `create volume "w": provider "local": create: Create: unavailable`},
		{"unavailable remove", failing(volume.ErrUnavailable), "DELETE", "/v1/volumes/v", "",
			503, api.ClassUnavailable, `remove volume "v": provider "local": delete: Delete: unavailable`},
		{"not supported", failing(volume.ErrNotSupported), "POST", "/v1/volumes", `{"name":"w"}`,
			501, api.ClassNotSupported, `create volume "w": provider "local": create: Create: not supported`},
		{"not supported remove", failing(volume.ErrNotSupported), "DELETE", "/v1/volumes/v", "",
			501, api.ClassNotSupported, `remove volume "v": provider "local": delete: Delete: not supported`},
		{"internal", failing(errors.New("boom")), "POST", "/v1/volumes", `{"name":"w"}`,
			500, api.ClassInternal, `create volume "w": provider "local": create: Create: boom`},
		{"internal remove", failing(errors.New("boom")), "DELETE", "/v1/volumes/v", "",
			500, api.ClassInternal, `remove volume "v": provider "local": delete: Delete: boom`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := controltest.New(t)
			create(t, e, "v", map[string]string{"label": "a"})
			if tt.setup != nil {
				tt.setup(t, e)
			}
			before := list(t, e)
			st, body := do(t, newHandler(t, e.Manager), tt.method, tt.path, strings.NewReader(tt.body))
			if got := decodeAs[api.Error](t, body); st != tt.status || got.Class != tt.class || got.Message != tt.msg {
				t.Errorf("%s %s: got %d %+v\nwant %d class %s message %q", tt.method, tt.path, st, got, tt.status, tt.class, tt.msg)
			}
			if after := list(t, e); !reflect.DeepEqual(after, before) {
				t.Errorf("state changed:\n%+v\n->\n%+v", before, after)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		status                   int
		class, msg               string
	}{
		{"malformed JSON", "POST", "/v1/volumes", `{"name":`, 400, api.ClassInvalid, "decode request body"},
		{"not an object", "POST", "/v1/volumes", `["x"]`, 400, api.ClassInvalid, "decode request body"},
		{"wrong type", "POST", "/v1/volumes", `{"name":7}`, 400, api.ClassInvalid, "decode request body"},
		{"unknown field", "POST", "/v1/volumes", `{"name":"x","size":"1G"}`, 400, api.ClassInvalid, `unknown field "size"`},
		{"empty body", "POST", "/v1/volumes", ``, 400, api.ClassInvalid, "empty"},
		{"trailing data", "POST", "/v1/volumes", `{"name":"x"} {"name":"y"}`, 400, api.ClassInvalid, "after the JSON object"},
		{"oversize body", "POST", "/v1/volumes", `{"name":"x","options":{"k":"` + strings.Repeat("a", 1<<20) + `"}}`, 413, api.ClassInvalid, "exceeds 1 MiB"},
		{"oversize trailing", "POST", "/v1/volumes", `{"name":"x"}` + strings.Repeat(" ", 1<<20), 413, api.ClassInvalid, "exceeds 1 MiB"},
		{"bad name", "POST", "/v1/volumes", `{"name":""}`, 400, api.ClassInvalid, "volume name is empty"},
		{"unknown route", "GET", "/v1/nothing", ``, 404, api.ClassNotFound, "no endpoint GET /v1/nothing"},
		{"wrong method", "PUT", "/v1/volumes", ``, 404, api.ClassNotFound, "no endpoint PUT /v1/volumes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := controltest.New(t)
			h := newHandler(t, e.Manager)
			st, body := do(t, h, tt.method, tt.path, strings.NewReader(tt.body))
			got := decodeAs[api.Error](t, body)
			if st != tt.status || got.Class != tt.class || !strings.Contains(got.Message, tt.msg) {
				t.Errorf("got %d %+v, want %d class %s message with %q", st, got, tt.status, tt.class, tt.msg)
			}
			if vols := list(t, e); len(vols) != 0 {
				t.Errorf("state changed: %+v", vols)
			}
		})
	}
}

// FuzzCreate checks that no request body makes the handler panic or answer
// anything but a created volume or an api.Error.
func FuzzCreate(f *testing.F) {
	f.Add(`{"name":"data","options":{"size":"64MiB"}}`)
	f.Add(`{"name":"x","options":{"provider":"nope"}}`)
	f.Add(`{"name":"x","options":{"label":"a","colour":"red"}}`)
	f.Add(`{"name":`)
	f.Add(`{"name":"x","extra":1}`)
	f.Add(`null`)
	// One manager serves every input; what earlier inputs created is part
	// of the state later ones meet.
	h := control.New(controltest.New(f).Manager, testInfo, slog.New(slog.DiscardHandler))
	f.Fuzz(func(t *testing.T, body string) {
		req := httptest.NewRequest("POST", "/v1/volumes", strings.NewReader(body))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code == http.StatusCreated {
			var v api.Volume
			if err := json.Unmarshal(rec.Body.Bytes(), &v); err != nil {
				t.Fatalf("created, body %q: %v", rec.Body, err)
			}
			return
		}
		var e api.Error
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Class == "" || e.Message == "" {
			t.Fatalf("status %d, body %q: %v", rec.Code, rec.Body, err)
		}
		if e.Class == api.ClassInternal {
			t.Fatalf("internal error for %q: %s", body, e.Message)
		}
	})
}

// TestDeadlines checks that a request waits for a provider that never
// answers no longer than dockerd would (2 minutes for create, 1 for the
// others), then answers unavailable and changes nothing. The time is
// synctest's.
func TestDeadlines(t *testing.T) {
	tests := []struct {
		name, method, path, body string
		wait                     time.Duration
		msg                      string
	}{
		{"create", "POST", "/v1/volumes", `{"name":"w"}`, 2 * time.Minute,
			`create volume "w": unavailable: provider "local" did not finish create within 2m0s: context deadline exceeded (no answer within 2m0s)`},
		{"remove", "DELETE", "/v1/volumes/v", "", time.Minute,
			`remove volume "v": unavailable: provider "local" did not finish delete within 1m0s: context deadline exceeded (no answer within 1m0s)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := controltest.New(t)
				create(t, e, "v", nil)
				before := list(t, e)
				e.Provider.Hang(true)
				start := time.Now()
				st, body := do(t, newHandler(t, e.Manager), tt.method, tt.path, strings.NewReader(tt.body))
				if waited := time.Since(start); waited != tt.wait {
					t.Errorf("answered after %v, want %v", waited, tt.wait)
				}
				if got := decodeAs[api.Error](t, body); st != http.StatusServiceUnavailable || got.Class != api.ClassUnavailable || got.Message != tt.msg {
					t.Errorf("got %d %+v\nwant 503 class %s message %q", st, got, api.ClassUnavailable, tt.msg)
				}
				e.Provider.Hang(false)
				if after := list(t, e); !reflect.DeepEqual(after, before) {
					t.Errorf("state changed:\n%+v\n->\n%+v", before, after)
				}
			})
		})
	}
}
