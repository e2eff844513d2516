package control_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/control/controltest"
)

// TestSnapshotEndpoints checks the statuses and bodies of the snapshot,
// resize and unlock endpoints, and that bad requests change nothing.
func TestSnapshotEndpoints(t *testing.T) {
	e := controltest.New(t, "rbd", "local"+controltest.BasicSuffix)
	h := newHandler(t, e.Manager)
	if _, err := e.Manager.Create(t.Context(), "pg", map[string]string{"size": "1MiB"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Manager.Create(t.Context(), "plain", map[string]string{"provider": "local"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		method, path, body string
		status             int
		class              string // of an error; "" for success
	}{
		{"POST", "/v1/volumes/pg/snapshots", `{"name":"s1"}`, http.StatusCreated, ""},
		{"POST", "/v1/volumes/pg/snapshots", `{"name":"s1"}`, http.StatusCreated, ""},
		{"POST", "/v1/volumes/pg/snapshots", `{"name":"a/b"}`, http.StatusBadRequest, api.ClassInvalid},
		{"POST", "/v1/volumes/pg/snapshots", `{"nom":"x"}`, http.StatusBadRequest, api.ClassInvalid},
		{"POST", "/v1/volumes/ghost/snapshots", `{"name":"s1"}`, http.StatusNotFound, api.ClassNotFound},
		{"POST", "/v1/volumes/plain/snapshots", `{"name":"s1"}`, http.StatusNotImplemented, api.ClassNotSupported},
		{"GET", "/v1/volumes/pg/snapshots", "", http.StatusOK, ""},
		{"GET", "/v1/volumes/ghost/snapshots", "", http.StatusNotFound, api.ClassNotFound},
		{"GET", "/v1/snapshots", "", http.StatusOK, ""},
		{"DELETE", "/v1/volumes/pg", "", http.StatusConflict, api.ClassInUse},
		{"DELETE", "/v1/volumes/pg?snapshots=maybe", "", http.StatusBadRequest, api.ClassInvalid},
		{"POST", "/v1/volumes/pg/resize", `{"size":"2MiB"}`, http.StatusOK, ""},
		{"POST", "/v1/volumes/pg/resize", `{"size":"1MiB"}`, http.StatusBadRequest, api.ClassInvalid},
		{"POST", "/v1/volumes/pg/resize", `{"size":""}`, http.StatusBadRequest, api.ClassInvalid},
		{"POST", "/v1/volumes/pg/unlock", `{}`, http.StatusBadRequest, api.ClassInvalid},
		{"POST", "/v1/volumes/pg/unlock", `{"force":true}`, http.StatusOK, ""},
		{"POST", "/v1/volumes/plain/unlock", `{"force":true}`, http.StatusNotImplemented, api.ClassNotSupported},
		{"DELETE", "/v1/volumes/pg/snapshots/nope", "", http.StatusNotFound, api.ClassNotFound},
		{"DELETE", "/v1/volumes/pg/snapshots/s1", "", http.StatusNoContent, ""},
		{"POST", "/v1/volumes/pg/snapshots", `{"name":"s2"}`, http.StatusCreated, ""},
		{"DELETE", "/v1/volumes/pg?snapshots=true", "", http.StatusNoContent, ""},
	}
	for _, tt := range tests {
		status, b := do(t, h, tt.method, tt.path, strings.NewReader(tt.body))
		if status != tt.status {
			t.Errorf("%s %s %s: status %d, want %d: %s", tt.method, tt.path, tt.body, status, tt.status, b)
			continue
		}
		if tt.class != "" {
			if e := decodeAs[api.Error](t, b); e.Class != tt.class || e.Message == "" {
				t.Errorf("%s %s: error %+v, want class %s", tt.method, tt.path, e, tt.class)
			}
		}
	}
	if ss, err := e.Manager.Snapshots(t.Context(), ""); err != nil || len(ss) != 0 {
		t.Errorf("snapshots left: %+v, %v", ss, err)
	}
}
