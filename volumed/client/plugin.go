package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/stowage/stowage/plugins/volume"
)

// DefaultPluginSocket is where dockerd, and stow, find volumed's plugin
// socket.
const DefaultPluginSocket = "/run/docker/plugins/stowage.sock"

// pluginContentType is the media type of the Docker plugin protocol.
const pluginContentType = "application/vnd.docker.plugins.v1.2+json"

// Plugin speaks the Docker volume plugin protocol (POST /VolumeDriver.*) to
// volumed's plugin socket, as dockerd does. It is how the container runtime
// mounts volumes without Docker. It is safe for concurrent use.
//
// The protocol carries only an error text ({"Err": "..."}); Plugin maps it to
// the error classes of plugins/volume by the class names that volumed's
// messages end in ("not found", "in use", ...), keeping the text as it is.
type Plugin struct {
	path string
	hc   *http.Client
}

// PluginVolume is a volume as the plugin protocol describes it.
type PluginVolume struct {
	Name string `json:"Name"`
	// Mountpoint is where the volume is mounted; empty while unmounted.
	Mountpoint string         `json:"Mountpoint,omitempty"`
	CreatedAt  string         `json:"CreatedAt,omitempty"`
	Status     map[string]any `json:"Status,omitempty"`
}

// NewPlugin returns a client of the plugin socket at path (an absolute
// path, or "unix:///PATH"). It does not connect yet.
func NewPlugin(socket string) *Plugin {
	path := strings.TrimPrefix(socket, "unix://")
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Plugin{path: path, hc: &http.Client{Transport: tr}}
}

// Mount mounts the named volume for the mount ID id and returns the host
// path where it is mounted. Mounting the same (name, id) twice counts twice,
// as dockerd expects; each Mount needs its Unmount.
func (p *Plugin) Mount(ctx context.Context, name, id string) (string, error) {
	var out struct {
		Mountpoint string
	}
	if err := p.call(ctx, "Mount", map[string]string{"Name": name, "ID": id}, &out); err != nil {
		return "", err
	}
	if out.Mountpoint == "" {
		return "", fmt.Errorf("mount volume %q: %w: the plugin answered no mount point", name, volume.ErrUnavailable)
	}
	return out.Mountpoint, nil
}

// Unmount releases the mount of the named volume with mount ID id. It is
// ErrNotFound when no such mount is counted.
func (p *Plugin) Unmount(ctx context.Context, name, id string) error {
	return p.call(ctx, "Unmount", map[string]string{"Name": name, "ID": id}, nil)
}

// Get returns the named volume; ErrNotFound when it does not exist.
func (p *Plugin) Get(ctx context.Context, name string) (PluginVolume, error) {
	var out struct {
		Volume *PluginVolume
	}
	if err := p.call(ctx, "Get", map[string]string{"Name": name}, &out); err != nil {
		return PluginVolume{}, err
	}
	if out.Volume == nil {
		return PluginVolume{}, fmt.Errorf("get volume %q: %w", name, volume.ErrNotFound)
	}
	return *out.Volume, nil
}

// call POSTs in to /VolumeDriver.<method> and decodes the answer into out
// (when not nil).
func (p *Plugin) call(ctx context.Context, method string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return fmt.Errorf("encode %s request: %w", method, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://plugin/VolumeDriver."+method, bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("%w: %s: %v", volume.ErrInvalid, method, err)
	}
	req.Header.Set("Accept", pluginContentType)
	req.Header.Set("Content-Type", pluginContentType)
	res, err := p.hc.Do(req)
	if err != nil {
		return transportError(ctx, err, "volume plugin "+method,
			fmt.Sprintf("volumed's plugin socket is not reachable at %s", p.path),
			"start volumed, or give its plugin socket with --plugin-socket")
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%w: read answer to %s: %v", volume.ErrUnavailable, method, err)
	}
	var e struct {
		Err string
	}
	if err := json.Unmarshal(body, &e); err != nil {
		if res.StatusCode >= 300 {
			return fmt.Errorf("%w: volume plugin %s answered %s", volume.ErrUnavailable, method, res.Status)
		}
		return fmt.Errorf("decode answer to %s: %w", method, err)
	}
	if e.Err != "" {
		return &classError{msg: e.Err, class: pluginClass(e.Err)}
	}
	if res.StatusCode >= 300 {
		return fmt.Errorf("%w: volume plugin %s answered %s", volume.ErrUnavailable, method, res.Status)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("decode answer to %s: %w", method, err)
	}
	return nil
}

// pluginClass finds the error class in a plugin error text: volumed's texts
// carry the class's own words (volume.ErrNotFound's "not found", ...).
func pluginClass(msg string) error {
	for _, c := range []error{volume.ErrNotFound, volume.ErrExists, volume.ErrInUse,
		volume.ErrInvalid, volume.ErrUnavailable, volume.ErrNotSupported} {
		if strings.Contains(msg, c.Error()) {
			return c
		}
	}
	return nil
}
