package control

import (
	"context"
	"fmt"
	"net/http"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

// migrationBackend is the optional ability of a Backend to mark a volume as
// migrated to another host.
type migrationBackend interface {
	// MarkMigrated records that the volume moved to `to`; it then mounts
	// read-only. ErrInUse while mounted.
	MarkMigrated(ctx context.Context, name, to string) (api.Volume, error)
}

// migrated serves POST /v1/volumes/{name}/migrated.
func (h *handler) migrated(ctx context.Context, r *http.Request) (any, int, error) {
	var req api.MigratedRequest
	if err := decode(r, &req); err != nil {
		return nil, 0, err
	}
	mb, ok := h.b.(migrationBackend)
	if !ok {
		return nil, 0, fmt.Errorf("mark volume %q migrated: %w", r.PathValue("name"), volume.ErrNotSupported)
	}
	v, err := mb.MarkMigrated(ctx, r.PathValue("name"), req.To)
	if err != nil {
		return nil, 0, err
	}
	return v, http.StatusOK, nil
}
