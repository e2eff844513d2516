package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/stowage/stowage/volumed/api"
)

// RemoveVolumeWithSnapshots removes a volume after its snapshots.
// RemoveVolume refuses a volume that has snapshots.
func (c *Client) RemoveVolumeWithSnapshots(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/volumes/"+url.PathEscape(name)+"?snapshots=true", nil, nil)
}

// Snapshot takes the snapshot snap of a volume, or returns the existing one.
func (c *Client) Snapshot(ctx context.Context, name, snap string) (api.Snapshot, error) {
	var s api.Snapshot
	err := c.do(ctx, http.MethodPost, "/v1/volumes/"+url.PathEscape(name)+"/snapshots", api.SnapshotRequest{Name: snap}, &s)
	return s, err
}

// Snapshots returns the snapshots of a volume, or of every volume when name
// is empty.
func (c *Client) Snapshots(ctx context.Context, name string) ([]api.Snapshot, error) {
	path := "/v1/snapshots"
	if name != "" {
		path = "/v1/volumes/" + url.PathEscape(name) + "/snapshots"
	}
	var ss []api.Snapshot
	err := c.do(ctx, http.MethodGet, path, nil, &ss)
	return ss, err
}

// RemoveSnapshot removes the snapshot snap of a volume.
func (c *Client) RemoveSnapshot(ctx context.Context, name, snap string) error {
	return c.do(ctx, http.MethodDelete, "/v1/volumes/"+url.PathEscape(name)+"/snapshots/"+url.PathEscape(snap), nil, nil)
}

// ResizeVolume grows a volume to size, a size such as "2GiB".
func (c *Client) ResizeVolume(ctx context.Context, name, size string) (api.Volume, error) {
	var v api.Volume
	err := c.do(ctx, http.MethodPost, "/v1/volumes/"+url.PathEscape(name)+"/resize", api.ResizeRequest{Size: size}, &v)
	return v, err
}

// UnlockVolume breaks the write lock another host holds on a volume.
// Without force volumed refuses and explains what that does.
func (c *Client) UnlockVolume(ctx context.Context, name string, force bool) (api.UnlockResult, error) {
	var res api.UnlockResult
	err := c.do(ctx, http.MethodPost, "/v1/volumes/"+url.PathEscape(name)+"/unlock", api.UnlockRequest{Force: force}, &res)
	return res, err
}
