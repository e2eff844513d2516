// Package plugin is volumed's Docker edge: it serves the Docker volume
// plugin protocol (VolumeDriver.*) on a unix socket and hands each request
// to the manager with a deadline below dockerd's own.
package plugin

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	dv "github.com/docker/go-plugins-helpers/volume"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

// Backend is what the plugin edge needs of the manager.
type Backend interface {
	Create(ctx context.Context, name string, opts map[string]string) (api.Volume, error)
	Remove(ctx context.Context, name string) error
	Get(ctx context.Context, name string) (api.Volume, error)
	List(ctx context.Context) ([]api.Volume, error)
	Mount(ctx context.Context, name, id string) (string, error)
	Unmount(ctx context.Context, name, id string) error
	Path(ctx context.Context, name string) (string, error)
}

// Observer records each request; metrics.Metrics is one.
type Observer interface {
	ObserveRequest(method string, err error, d time.Duration)
}

// dockerd's own deadlines for volume plugin requests (moby's
// volume/drivers/proxy.go). A request still running then fails at dockerd
// with a bare "context deadline exceeded", so the Driver's deadlines stay
// below them.
const (
	DockerSlowDeadline = 2 * time.Minute // Create and Mount
	DockerDeadline     = time.Minute     // every other request
)

// The Driver's deadlines when Options leave them 0.
const (
	DefaultSlowTimeout = 100 * time.Second // Create and Mount
	DefaultTimeout     = 50 * time.Second  // every other request
)

// Options configure a Driver.
type Options struct {
	// SlowTimeout bounds Create and Mount; it must stay below
	// DockerSlowDeadline. 0 means DefaultSlowTimeout.
	SlowTimeout time.Duration
	// Timeout bounds every other request; it must stay below
	// DockerDeadline. 0 means DefaultTimeout.
	Timeout  time.Duration
	Observer Observer
	Logger   *slog.Logger
}

// Driver implements the Docker volume plugin protocol over a Backend.
type Driver struct {
	b        Backend
	slow     time.Duration
	timeout  time.Duration
	observer Observer
	log      *slog.Logger

	base   context.Context // cancelled by Close: requests in flight end
	cancel context.CancelFunc
	wg     sync.WaitGroup // requests in flight
}

var _ dv.Driver = (*Driver)(nil)

// New returns a Driver over b.
func New(b Backend, opts Options) *Driver {
	d := &Driver{b: b, slow: opts.SlowTimeout, timeout: opts.Timeout, observer: opts.Observer, log: opts.Logger}
	if d.slow <= 0 {
		d.slow = DefaultSlowTimeout
	}
	if d.timeout <= 0 {
		d.timeout = DefaultTimeout
	}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.base, d.cancel = context.WithCancel(context.Background())
	return d
}

// Serve answers plugin requests on l until ctx is done, then stops taking
// connections and waits for the requests in flight. It returns nil after
// such a stop.
func (d *Driver) Serve(ctx context.Context, l net.Listener) error {
	h := dv.NewHandler(d)
	errc := make(chan error, 1)
	go func() { errc <- h.Serve(l) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	l.Close()
	<-errc
	d.wg.Wait()
	return nil
}

// Close cancels the requests in flight.
func (d *Driver) Close() { d.cancel() }

// begin starts one request: a deadline and bookkeeping for the end.
func (d *Driver) begin(method string, slow bool) (context.Context, func(err error, attrs ...any)) {
	d.wg.Add(1)
	t := d.timeout
	if slow {
		t = d.slow
	}
	ctx, cancel := context.WithTimeout(d.base, t)
	start := time.Now()
	return ctx, func(err error, attrs ...any) {
		cancel()
		dur := time.Since(start)
		if d.observer != nil {
			d.observer.ObserveRequest(method, err, dur)
		}
		attrs = append(attrs, "op", method, "duration", dur)
		switch {
		case err == nil:
			d.log.Debug("plugin request", attrs...)
		case errors.Is(err, volume.ErrNotFound) && (method == "Get" || method == "Path"):
			d.log.Debug("plugin request", append(attrs, "err", err)...) // dockerd asks Get before every create
		default:
			d.log.Warn("plugin request failed", append(attrs, "err", err)...)
		}
		d.wg.Done()
	}
}

// Create implements the protocol's VolumeDriver.Create.
func (d *Driver) Create(r *dv.CreateRequest) (err error) {
	ctx, end := d.begin("Create", true)
	defer func() { end(err, "volume", r.Name) }()
	_, err = d.b.Create(ctx, r.Name, r.Options)
	return err
}

// Remove implements VolumeDriver.Remove.
func (d *Driver) Remove(r *dv.RemoveRequest) (err error) {
	ctx, end := d.begin("Remove", false)
	defer func() { end(err, "volume", r.Name) }()
	return d.b.Remove(ctx, r.Name)
}

// Mount implements VolumeDriver.Mount.
func (d *Driver) Mount(r *dv.MountRequest) (_ *dv.MountResponse, err error) {
	ctx, end := d.begin("Mount", true)
	defer func() { end(err, "volume", r.Name, "mount_id", r.ID) }()
	p, err := d.b.Mount(ctx, r.Name, r.ID)
	if err != nil {
		return nil, err
	}
	return &dv.MountResponse{Mountpoint: p}, nil
}

// Unmount implements VolumeDriver.Unmount.
func (d *Driver) Unmount(r *dv.UnmountRequest) (err error) {
	ctx, end := d.begin("Unmount", false)
	defer func() { end(err, "volume", r.Name, "mount_id", r.ID) }()
	return d.b.Unmount(ctx, r.Name, r.ID)
}

// Path implements VolumeDriver.Path.
func (d *Driver) Path(r *dv.PathRequest) (_ *dv.PathResponse, err error) {
	ctx, end := d.begin("Path", false)
	defer func() { end(err, "volume", r.Name) }()
	p, err := d.b.Path(ctx, r.Name)
	if err != nil {
		return nil, err
	}
	return &dv.PathResponse{Mountpoint: p}, nil
}

// Get implements VolumeDriver.Get.
func (d *Driver) Get(r *dv.GetRequest) (_ *dv.GetResponse, err error) {
	ctx, end := d.begin("Get", false)
	defer func() { end(err, "volume", r.Name) }()
	v, err := d.b.Get(ctx, r.Name)
	if err != nil {
		return nil, err
	}
	return &dv.GetResponse{Volume: dockerVolume(v)}, nil
}

// List implements VolumeDriver.List.
func (d *Driver) List() (_ *dv.ListResponse, err error) {
	ctx, end := d.begin("List", false)
	defer func() { end(err) }()
	vols, err := d.b.List(ctx)
	if err != nil {
		return nil, err
	}
	out := &dv.ListResponse{Volumes: make([]*dv.Volume, 0, len(vols))}
	for _, v := range vols {
		out.Volumes = append(out.Volumes, &dv.Volume{Name: v.Name, Mountpoint: v.Mountpoint})
	}
	return out, nil
}

// Capabilities implements VolumeDriver.Capabilities: volumes are local to
// this host.
func (d *Driver) Capabilities() *dv.CapabilitiesResponse {
	_, end := d.begin("Capabilities", false)
	end(nil)
	return &dv.CapabilitiesResponse{Capabilities: dv.Capability{Scope: "local"}}
}

// dockerVolume is what `docker volume inspect` shows.
func dockerVolume(v api.Volume) *dv.Volume {
	size := "-"
	if v.CapacityBytes > 0 {
		size = volume.FormatSize(v.CapacityBytes)
	}
	return &dv.Volume{
		Name:       v.Name,
		Mountpoint: v.Mountpoint,
		CreatedAt:  v.CreatedAt.Format(time.RFC3339),
		Status: map[string]any{
			"provider": v.Provider,
			"id":       v.ID,
			"state":    v.State,
			"size":     size,
			"mounts":   v.Mounts,
		},
	}
}
