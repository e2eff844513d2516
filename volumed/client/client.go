// Package client talks to volumed's control API on its unix socket. It is
// how the stow command and other programs reach the daemon.
//
// Errors that volumed answers wrap the error classes of plugins/volume, so
// errors.Is(err, volume.ErrNotFound) works as it does inside the daemon; their
// text is the daemon's message.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

// Client is a connection to volumed. It is safe for concurrent use.
type Client struct {
	path string
	hc   *http.Client
}

// New returns a client of the volumed whose API socket is given by host,
// either "unix:///PATH" or an absolute PATH. It does not connect yet.
func New(host string) (*Client, error) {
	path := host
	if rest, ok := strings.CutPrefix(host, "unix://"); ok {
		path = rest
	}
	if !filepath.IsAbs(path) {
		return nil, &classError{
			msg:   fmt.Sprintf("invalid host %q: use unix:///PATH or an absolute socket path", host),
			class: volume.ErrInvalid,
		}
	}
	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
	}
	return &Client{path: path, hc: &http.Client{Transport: tr}}, nil
}

// CreateVolume creates a volume, or returns the existing one when it exists
// with the same options.
func (c *Client) CreateVolume(ctx context.Context, req api.CreateRequest) (api.Volume, error) {
	var v api.Volume
	err := c.do(ctx, http.MethodPost, "/v1/volumes", req, &v)
	return v, err
}

// RemoveVolume removes a volume and its data.
func (c *Client) RemoveVolume(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/v1/volumes/"+url.PathEscape(name), nil, nil)
}

// Volume returns one volume.
func (c *Client) Volume(ctx context.Context, name string) (api.Volume, error) {
	var v api.Volume
	err := c.do(ctx, http.MethodGet, "/v1/volumes/"+url.PathEscape(name), nil, &v)
	return v, err
}

// Volumes returns every volume.
func (c *Client) Volumes(ctx context.Context) ([]api.Volume, error) {
	var vs []api.Volume
	err := c.do(ctx, http.MethodGet, "/v1/volumes", nil, &vs)
	return vs, err
}

// Providers returns the providers volumed supervises.
func (c *Client) Providers(ctx context.Context) ([]api.Provider, error) {
	var ps []api.Provider
	err := c.do(ctx, http.MethodGet, "/v1/providers", nil, &ps)
	return ps, err
}

// Status describes the daemon.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var st api.Status
	err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// do sends in (when not nil) as JSON and decodes the answer into out (when
// not nil).
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	// The host part is ignored: every request goes to the socket.
	req, err := http.NewRequestWithContext(ctx, method, "http://volumed"+path, body)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %v", volume.ErrInvalid, method, path, err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return transportError(ctx, err, method+" "+path,
			fmt.Sprintf("volumed is not reachable at %s", c.path), "start volumed, or give its API socket with --host")
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		return decodeError(res)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(res.Body).Decode(out); err != nil {
		return fmt.Errorf("decode answer to %s %s: %w", method, path, err)
	}
	return nil
}

// classError is an error of a class whose text does not repeat the class's
// name: the message volumed answered, or the client's own. It unwraps to the
// class's sentinel (none for volumed's internal errors).
type classError struct {
	msg   string
	class error
}

func (e *classError) Error() string { return e.msg }
func (e *classError) Unwrap() error { return e.class }

func decodeError(res *http.Response) error {
	b, err := io.ReadAll(io.LimitReader(res.Body, 64<<10))
	if err != nil {
		return fmt.Errorf("read volumed's answer (%s): %w", res.Status, err)
	}
	var e api.Error
	if err := json.Unmarshal(b, &e); err != nil || e.Message == "" {
		return fmt.Errorf("volumed answered %s", res.Status)
	}
	return &classError{msg: e.Message, class: api.ClassError(e.Class)}
}

// transportError explains a request that got no answer: a socket nobody
// listens on says where it was and what to do (hint); otherwise the
// request's own context error or an unavailable error naming op.
func transportError(ctx context.Context, err error, op, unreachable, hint string) error {
	var dial *net.OpError
	if errors.As(err, &dial) && dial.Op == "dial" {
		return &classError{msg: fmt.Sprintf("%s: %v (%s)", unreachable, dial.Err, hint), class: volume.ErrUnavailable}
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("%s: %w", op, ctxErr)
	}
	return fmt.Errorf("%w: %s: %v", volume.ErrUnavailable, op, err)
}
