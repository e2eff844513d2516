package client

import (
	"context"
	"net"
	"net/http"
)

// DialFunc opens a stream to volumed's socket.
type DialFunc func(ctx context.Context) (net.Conn, error)

// NewDial returns a client of the control API reached through dial, for a
// socket that is not local, e.g. one forwarded over SSH; where names it in
// messages.
func NewDial(where string, dial DialFunc) *Client {
	return &Client{path: where, hc: &http.Client{Transport: dialTransport(dial)}}
}

// NewPluginDial returns a client of the plugin socket reached through dial;
// where names it in messages.
func NewPluginDial(where string, dial DialFunc) *Plugin {
	return &Plugin{path: where, hc: &http.Client{Transport: dialTransport(dial)}}
}

func dialTransport(dial DialFunc) *http.Transport {
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
	}
}
