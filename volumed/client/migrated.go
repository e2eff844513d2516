package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/stowage/stowage/volumed/api"
)

// MarkMigrated records that the named volume was migrated to `to` (a URL
// without secrets); volumed then mounts it read-only until it is removed.
// ErrInUse while it is mounted.
func (c *Client) MarkMigrated(ctx context.Context, name, to string) (api.Volume, error) {
	var v api.Volume
	err := c.do(ctx, http.MethodPost, "/v1/volumes/"+url.PathEscape(name)+"/migrated", api.MigratedRequest{To: to}, &v)
	return v, err
}
