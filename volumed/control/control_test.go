package control_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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

func TestRoutes(t *testing.T) {
	b := controltest.NewBackend()
	h := newHandler(t, b)

	st, body := do(t, h, "GET", "/v1/volumes", nil)
	if st != http.StatusOK || strings.TrimSpace(string(body)) != "[]" {
		t.Fatalf("list empty: %d %s", st, body)
	}

	st, body = do(t, h, "POST", "/v1/volumes", strings.NewReader(`{"name":"data","options":{"size":"64MiB","type":"fs"}}`))
	if st != http.StatusCreated {
		t.Fatalf("create: %d %s", st, body)
	}
	v := decodeAs[api.Volume](t, body)
	if v.Name != "data" || v.Provider != "local" || v.CapacityBytes != 64<<20 || v.Options["type"] != "fs" {
		t.Errorf("create: got %+v", v)
	}

	st, body = do(t, h, "GET", "/v1/volumes/data", nil)
	if st != http.StatusOK || decodeAs[api.Volume](t, body).Name != "data" {
		t.Errorf("get: %d %s", st, body)
	}

	b.Add(api.Volume{Name: "busy", Provider: "local", State: api.StateReady, Mounts: 3})
	st, body = do(t, h, "GET", "/v1/volumes", nil)
	if vols := decodeAs[[]api.Volume](t, body); st != http.StatusOK || len(vols) != 2 || vols[0].Name != "busy" {
		t.Errorf("list: %d %s", st, body)
	}

	st, body = do(t, h, "GET", "/v1/providers", nil)
	ps := decodeAs[[]api.Provider](t, body)
	if st != http.StatusOK || len(ps) != 1 || ps[0].Name != "local" || ps[0].Volumes != 2 {
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

func TestErrorClasses(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		status int
		class  string
	}{
		{"not found", volume.ErrNotFound, 404, api.ClassNotFound},
		{"exists", volume.ErrExists, 409, api.ClassExists},
		{"in use", volume.ErrInUse, 409, api.ClassInUse},
		{"invalid", volume.ErrInvalid, 400, api.ClassInvalid},
		{"unavailable", volume.ErrUnavailable, 503, api.ClassUnavailable},
		{"not supported", volume.ErrNotSupported, 501, api.ClassNotSupported},
		{"deadline", fmt.Errorf("provider local: %w", context.DeadlineExceeded), 503, api.ClassUnavailable},
		{"unknown", errors.New("disk on fire"), 500, api.ClassInternal},
	}
	routes := []struct{ method, path, body string }{
		{"GET", "/v1/volumes/v", ""},
		{"DELETE", "/v1/volumes/v", ""},
		{"POST", "/v1/volumes", `{"name":"v"}`},
		{"GET", "/v1/volumes", ""},
		{"GET", "/v1/status", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := controltest.NewBackend()
			b.Add(api.Volume{Name: "v"})
			b.Fail("v", fmt.Errorf("op volume v: %w", tt.err))
			h := newHandler(t, b)
			for _, r := range routes {
				st, body := do(t, h, r.method, r.path, strings.NewReader(r.body))
				e := decodeAs[api.Error](t, body)
				if st != tt.status || e.Class != tt.class || !strings.HasPrefix(e.Message, "op volume v: ") {
					t.Errorf("%s %s: got %d %+v, want %d class %s", r.method, r.path, st, e, tt.status, tt.class)
				}
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
		{"bad name", "POST", "/v1/volumes", `{"name":""}`, 400, api.ClassInvalid, "bad name"},
		{"unknown route", "GET", "/v1/nothing", ``, 404, api.ClassNotFound, "no endpoint GET /v1/nothing"},
		{"wrong method", "PUT", "/v1/volumes", ``, 404, api.ClassNotFound, "no endpoint PUT /v1/volumes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := controltest.NewBackend()
			h := newHandler(t, b)
			st, body := do(t, h, tt.method, tt.path, strings.NewReader(tt.body))
			e := decodeAs[api.Error](t, body)
			if st != tt.status || e.Class != tt.class || !strings.Contains(e.Message, tt.msg) {
				t.Errorf("got %d %+v, want %d class %s message with %q", st, e, tt.status, tt.class, tt.msg)
			}
			if vols, _ := b.List(t.Context()); len(vols) != 0 {
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
	f.Add(`{"name":`)
	f.Add(`{"name":"x","extra":1}`)
	f.Add(`null`)
	f.Fuzz(func(t *testing.T, body string) {
		h := control.New(controltest.NewBackend(), testInfo, slog.New(slog.DiscardHandler))
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

// deadlines records the time left to each call of the backend.
type deadlines struct {
	*controltest.Backend
	left map[string]time.Duration
}

func (d *deadlines) record(ctx context.Context, op string) {
	if dl, ok := ctx.Deadline(); ok {
		d.left[op] = time.Until(dl)
	}
}

func (d *deadlines) Create(ctx context.Context, name string, opts map[string]string) (api.Volume, error) {
	d.record(ctx, "create")
	return d.Backend.Create(ctx, name, opts)
}

func (d *deadlines) Get(ctx context.Context, name string) (api.Volume, error) {
	d.record(ctx, "get")
	return d.Backend.Get(ctx, name)
}

func TestDeadlines(t *testing.T) {
	d := &deadlines{Backend: controltest.NewBackend(), left: map[string]time.Duration{}}
	h := newHandler(t, d)
	do(t, h, "POST", "/v1/volumes", strings.NewReader(`{"name":"v"}`))
	do(t, h, "GET", "/v1/volumes/v", nil)
	for op, want := range map[string]time.Duration{"create": 2 * time.Minute, "get": time.Minute} {
		if got := d.left[op]; got <= want-10*time.Second || got > want {
			t.Errorf("%s: deadline in %v, want %v", op, got, want)
		}
	}
}
