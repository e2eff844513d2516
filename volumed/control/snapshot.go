package control

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

// boolQuery returns the boolean query parameter key, false when absent.
func boolQuery(r *http.Request, key string) (bool, error) {
	v := r.URL.Query().Get(key)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%w: query parameter %s=%q: want true or false", volume.ErrInvalid, key, v)
	}
	return b, nil
}

func (h *handler) snapshots(ctx context.Context, r *http.Request) (any, int, error) {
	snaps, err := h.b.Snapshots(ctx, r.PathValue("name"))
	if err != nil {
		return nil, 0, err
	}
	if snaps == nil {
		snaps = []api.Snapshot{}
	}
	return snaps, http.StatusOK, nil
}

func (h *handler) snapshot(ctx context.Context, r *http.Request) (any, int, error) {
	var req api.SnapshotRequest
	if err := decode(r, &req); err != nil {
		return nil, 0, err
	}
	s, err := h.b.Snapshot(ctx, r.PathValue("name"), req.Name)
	if err != nil {
		return nil, 0, err
	}
	return s, http.StatusCreated, nil
}

func (h *handler) removeSnapshot(ctx context.Context, r *http.Request) (any, int, error) {
	if err := h.b.RemoveSnapshot(ctx, r.PathValue("name"), r.PathValue("snapshot")); err != nil {
		return nil, 0, err
	}
	return nil, http.StatusNoContent, nil
}

func (h *handler) resize(ctx context.Context, r *http.Request) (any, int, error) {
	var req api.ResizeRequest
	if err := decode(r, &req); err != nil {
		return nil, 0, err
	}
	size, err := volume.ParseSize(req.Size)
	if err != nil {
		return nil, 0, fmt.Errorf("resize volume %q: %w", r.PathValue("name"), err)
	}
	v, err := h.b.Resize(ctx, r.PathValue("name"), size)
	if err != nil {
		return nil, 0, err
	}
	return v, http.StatusOK, nil
}

func (h *handler) unlock(ctx context.Context, r *http.Request) (any, int, error) {
	var req api.UnlockRequest
	if err := decode(r, &req); err != nil {
		return nil, 0, err
	}
	name := r.PathValue("name")
	holder, err := h.b.Unlock(ctx, name, req.Force)
	if err != nil {
		return nil, 0, err
	}
	return api.UnlockResult{Volume: name, Holder: holder}, http.StatusOK, nil
}
