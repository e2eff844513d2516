// Package control serves volumed's control API: HTTP/1.1 with JSON bodies on
// a unix socket, read by the client package and the stow command.
//
//	GET    /v1/volumes          []api.Volume
//	GET    /v1/volumes/{name}   api.Volume
//	POST   /v1/volumes          api.CreateRequest -> 201 api.Volume
//	DELETE /v1/volumes/{name}   204; with ?snapshots=true after the
//	                            volume's snapshots (refused otherwise)
//	POST   /v1/volumes/{name}/resize      api.ResizeRequest -> api.Volume
//	POST   /v1/volumes/{name}/unlock      api.UnlockRequest -> api.UnlockResult
//	POST   /v1/volumes/{name}/migrated    api.MigratedRequest -> api.Volume
//	GET    /v1/volumes/{name}/snapshots   []api.Snapshot
//	POST   /v1/volumes/{name}/snapshots   api.SnapshotRequest -> 201 api.Snapshot
//	DELETE /v1/volumes/{name}/snapshots/{snapshot}   204
//	GET    /v1/snapshots        []api.Snapshot of every volume
//	GET    /v1/providers        []api.Provider
//	GET    /v1/status           api.Status
//
// A failed request answers an api.Error whose class names the error class of
// plugins/volume; the HTTP status follows the class (not_found 404, exists
// 409, in_use 409, invalid 400, unavailable 503, not_supported 501, internal
// 500), except that a body over 1 MiB is refused with 413 and class invalid.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

// Request limits. The deadlines stay under dockerd's (2 min for Create, 1 min
// otherwise) so that the CLI and Docker see the same behaviour.
const (
	maxBody       = 1 << 20
	createTimeout = 2 * time.Minute
	opTimeout     = time.Minute
)

// Backend is what the control API needs of volumed's volume manager. Every
// method returns early with the context's error when ctx is done; errors carry
// the classes of plugins/volume.
type Backend interface {
	// Create creates a volume with Docker-style options (provider, size and
	// the provider's parameters), or returns the existing one.
	Create(ctx context.Context, name string, opts map[string]string) (api.Volume, error)
	// Remove removes a volume; ErrInUse while mounted, ErrNotFound if absent.
	Remove(ctx context.Context, name string) error
	// Get returns a volume or ErrNotFound.
	Get(ctx context.Context, name string) (api.Volume, error)
	// List returns every volume.
	List(ctx context.Context) ([]api.Volume, error)
	// Providers returns the supervised providers and their state.
	Providers(ctx context.Context) []api.Provider

	// RemoveWithSnapshots removes a volume after its snapshots.
	RemoveWithSnapshots(ctx context.Context, name string) error
	// Snapshot takes a snapshot of a volume, or returns the existing one.
	Snapshot(ctx context.Context, name, snap string) (api.Snapshot, error)
	// Snapshots lists the snapshots of a volume, or of all when name is "".
	Snapshots(ctx context.Context, name string) ([]api.Snapshot, error)
	// RemoveSnapshot removes a snapshot; ErrNotFound if absent.
	RemoveSnapshot(ctx context.Context, name, snap string) error
	// Resize grows a volume to size bytes; ErrInvalid for less.
	Resize(ctx context.Context, name string, size int64) (api.Volume, error)
	// Unlock breaks the write lock another host holds on a volume; it
	// refuses with ErrInvalid without force.
	Unlock(ctx context.Context, name string, force bool) (string, error)
}

// Info holds the daemon's static facts reported by GET /v1/status.
type Info struct {
	Version      string
	Root         string
	PluginSocket string
	APISocket    string
	MetricsAddr  string
	StartedAt    time.Time
	PID          int
}

type handler struct {
	b    Backend
	info Info
	log  *slog.Logger
}

// New returns the control API handler serving b.
func New(b Backend, info Info, log *slog.Logger) http.Handler {
	h := &handler{b: b, info: info, log: log}
	mux := http.NewServeMux()
	mux.Handle("GET /v1/volumes", h.op("list", opTimeout, h.list))
	mux.Handle("GET /v1/volumes/{name}", h.op("get", opTimeout, h.get))
	mux.Handle("POST /v1/volumes", h.op("create", createTimeout, h.create))
	mux.Handle("DELETE /v1/volumes/{name}", h.op("remove", opTimeout, h.remove))
	mux.Handle("POST /v1/volumes/{name}/resize", h.op("resize", createTimeout, h.resize))
	mux.Handle("POST /v1/volumes/{name}/unlock", h.op("unlock", opTimeout, h.unlock))
	mux.Handle("GET /v1/volumes/{name}/snapshots", h.op("snapshots", opTimeout, h.snapshots))
	mux.Handle("POST /v1/volumes/{name}/snapshots", h.op("snapshot", createTimeout, h.snapshot))
	mux.Handle("DELETE /v1/volumes/{name}/snapshots/{snapshot}", h.op("remove-snapshot", opTimeout, h.removeSnapshot))
	mux.Handle("GET /v1/snapshots", h.op("snapshots", opTimeout, h.snapshots))
	mux.Handle("POST /v1/volumes/{name}/migrated", h.op("migrated", opTimeout, h.migrated))
	mux.Handle("GET /v1/providers", h.op("providers", opTimeout, h.providers))
	mux.Handle("GET /v1/status", h.op("status", opTimeout, h.status))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, api.Error{
			Message: fmt.Sprintf("no endpoint %s %s", r.Method, r.URL.Path),
			Class:   api.ClassNotFound,
		})
	})
	return mux
}

// opFunc does the work of one endpoint and returns the body and status of a
// successful answer; a nil body answers no content.
type opFunc func(ctx context.Context, r *http.Request) (any, int, error)

// op wraps fn with its deadline, logging and error answer.
func (h *handler) op(name string, timeout time.Duration, fn opFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		body, status, err := fn(ctx, r)
		attrs := []any{"op", name, "duration", time.Since(start)}
		if v := r.PathValue("name"); v != "" {
			attrs = append(attrs, "volume", v)
		}
		if err != nil {
			class, status := classify(err)
			msg := err.Error()
			if errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil {
				msg = fmt.Sprintf("%s (no answer within %s)", msg, timeout)
			}
			if class == api.ClassInternal {
				h.log.Error("control request", append(attrs, "error", err)...)
			} else {
				h.log.Debug("control request", append(attrs, "error", err)...)
			}
			writeJSON(w, status, api.Error{Message: msg, Class: class})
			return
		}
		h.log.Debug("control request", attrs...)
		if body == nil {
			w.WriteHeader(status)
			return
		}
		writeJSON(w, status, body)
	})
}

func (h *handler) list(ctx context.Context, _ *http.Request) (any, int, error) {
	vols, err := h.b.List(ctx)
	if err != nil {
		return nil, 0, err
	}
	if vols == nil {
		vols = []api.Volume{}
	}
	return vols, http.StatusOK, nil
}

func (h *handler) get(ctx context.Context, r *http.Request) (any, int, error) {
	v, err := h.b.Get(ctx, r.PathValue("name"))
	if err != nil {
		return nil, 0, err
	}
	return v, http.StatusOK, nil
}

func (h *handler) create(ctx context.Context, r *http.Request) (any, int, error) {
	var req api.CreateRequest
	if err := decode(r, &req); err != nil {
		return nil, 0, err
	}
	v, err := h.b.Create(ctx, req.Name, req.Options)
	if err != nil {
		return nil, 0, err
	}
	return v, http.StatusCreated, nil
}

func (h *handler) remove(ctx context.Context, r *http.Request) (any, int, error) {
	withSnapshots, err := boolQuery(r, "snapshots")
	if err != nil {
		return nil, 0, err
	}
	remove := h.b.Remove
	if withSnapshots {
		remove = h.b.RemoveWithSnapshots
	}
	if err := remove(ctx, r.PathValue("name")); err != nil {
		return nil, 0, err
	}
	return nil, http.StatusNoContent, nil
}

func (h *handler) providers(ctx context.Context, _ *http.Request) (any, int, error) {
	ps := h.b.Providers(ctx)
	if ps == nil {
		ps = []api.Provider{}
	}
	return ps, http.StatusOK, nil
}

func (h *handler) status(ctx context.Context, _ *http.Request) (any, int, error) {
	vols, err := h.b.List(ctx)
	if err != nil {
		return nil, 0, err
	}
	st := api.Status{
		Version:      h.info.Version,
		PID:          h.info.PID,
		StartedAt:    h.info.StartedAt,
		Root:         h.info.Root,
		PluginSocket: h.info.PluginSocket,
		APISocket:    h.info.APISocket,
		MetricsAddr:  h.info.MetricsAddr,
		Volumes:      len(vols),
		Providers:    h.b.Providers(ctx),
	}
	for _, v := range vols {
		st.MountsActive += v.Mounts
	}
	if st.Providers == nil {
		st.Providers = []api.Provider{}
	}
	return st, http.StatusOK, nil
}

// decode reads one JSON object of known fields into v. The body is limited to
// maxBody bytes by op.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		switch {
		case errors.As(err, &tooBig):
			return errTooLarge
		case errors.Is(err, io.EOF):
			return fmt.Errorf("%w: request body is empty", volume.ErrInvalid)
		}
		return fmt.Errorf("%w: decode request body: %v", volume.ErrInvalid, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return errTooLarge
		}
		return fmt.Errorf("%w: request body has data after the JSON object", volume.ErrInvalid)
	}
	return nil
}

// errTooLarge is the ErrInvalid that is answered with 413.
var errTooLarge = fmt.Errorf("%w: request body exceeds 1 MiB", volume.ErrInvalid)

// statuses are the HTTP statuses of the wire classes.
var statuses = map[string]int{
	api.ClassNotFound:     http.StatusNotFound,
	api.ClassExists:       http.StatusConflict,
	api.ClassInUse:        http.StatusConflict,
	api.ClassInvalid:      http.StatusBadRequest,
	api.ClassUnavailable:  http.StatusServiceUnavailable,
	api.ClassNotSupported: http.StatusNotImplemented,
	api.ClassInternal:     http.StatusInternalServerError,
}

// classify returns the wire class and HTTP status of err. A missed deadline
// or a cancelled request is unavailable.
func classify(err error) (string, int) {
	if errors.Is(err, errTooLarge) {
		return api.ClassInvalid, http.StatusRequestEntityTooLarge
	}
	class := api.ClassOf(err)
	if class == api.ClassInternal && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)) {
		class = api.ClassUnavailable
	}
	return class, statuses[class]
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The status is sent; a client that went away cannot be told more.
	_ = json.NewEncoder(w).Encode(v)
}
