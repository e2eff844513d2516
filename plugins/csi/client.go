package csi

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/stowage/stowage/plugins/volume"
)

// ClientOptions configure a Client.
type ClientOptions struct {
	// Logger receives debug records; nil discards them.
	Logger *slog.Logger
	// NodeID is the node ID the client uses in ControllerPublishVolume;
	// empty means the one NodeGetInfo reports.
	NodeID string
}

// Client is a volume.Provider backed by a CSI driver endpoint. It calls the
// driver the way a container orchestrator does and turns gRPC codes into
// the contract's error classes, keeping the driver's message:
//
//	NOT_FOUND                 ErrNotFound
//	ALREADY_EXISTS            ErrExists
//	FAILED_PRECONDITION       ErrInUse
//	INVALID_ARGUMENT          ErrInvalid
//	OUT_OF_RANGE              ErrInvalid
//	UNIMPLEMENTED             ErrNotSupported
//	anything else             ErrUnavailable (UNAVAILABLE,
//	                          DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED,
//	                          ABORTED, INTERNAL, ...)
//
// An endpoint that cannot be reached, or does not answer before the
// context's deadline, is ErrUnavailable saying so; a done context is also
// in the error chain. Client always implements volume.Lister,
// volume.Snapshotter, volume.Expander and volume.Unlocker; each returns
// ErrNotSupported, saying what the driver lacks, when the driver does not
// advertise the ability (LIST_VOLUMES; CREATE_DELETE_SNAPSHOT and
// LIST_SNAPSHOTS; EXPAND_VOLUME of the controller or the node; the lock
// service). It is safe for concurrent use.
type Client struct {
	endpoint string
	path     string
	conn     *grpc.ClientConn
	id       csipb.IdentityClient
	ctl      csipb.ControllerClient
	node     csipb.NodeClient
	log      *slog.Logger

	mu      sync.Mutex // guards the fields below
	dialErr error      // the last dial's error, nil after a dial succeeded
	nodeID  string     // from the options or NodeGetInfo
	// ctlCaps are the controller capabilities, asked once.
	ctlCaps map[csipb.ControllerServiceCapability_RPC_Type]bool
}

var (
	_ volume.Provider    = (*Client)(nil)
	_ volume.Lister      = (*Client)(nil)
	_ volume.Snapshotter = (*Client)(nil)
	_ volume.Expander    = (*Client)(nil)
	_ volume.Unlocker    = (*Client)(nil)
)

// Dial returns a client of the CSI driver at endpoint ("unix:///abs/path"
// or "/abs/path"). It connects lazily, on the first call, and reconnects
// after the driver restarts. A malformed endpoint is ErrInvalid.
func Dial(endpoint string, opts ClientOptions) (*Client, error) {
	path, err := socketPath(endpoint)
	if err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{endpoint: endpoint, path: path, log: log, nodeID: opts.NodeID}
	conn, err := grpc.NewClient("unix://"+path,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(c.dial),
	)
	if err != nil {
		return nil, fmt.Errorf("%w: endpoint %q: %w", volume.ErrInvalid, endpoint, err)
	}
	c.conn = conn
	c.id = csipb.NewIdentityClient(conn)
	c.ctl = csipb.NewControllerClient(conn)
	c.node = csipb.NewNodeClient(conn)
	return c, nil
}

// dial connects to the socket and remembers whether that worked, so that
// errors can tell an unreachable endpoint from a driver's own UNAVAILABLE.
func (c *Client) dial(ctx context.Context, _ string) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.path)
	c.mu.Lock()
	c.dialErr = err
	c.mu.Unlock()
	return conn, err
}

// Reconnect makes the client connect again at once instead of after its
// backoff, which grows while the driver is away: call it when the driver
// is known to be back, for example after its sidecar restarted.
func (c *Client) Reconnect() {
	c.conn.ResetConnectBackoff()
}

// Close closes the connection.
func (c *Client) Close() error {
	return c.conn.Close()
}

// fail turns the error of a call op into an error of the contract.
func (c *Client) fail(ctx context.Context, op string, err error) error {
	st, _ := status.FromError(err)
	code := st.Code()
	class := classOf(code)
	c.mu.Lock()
	dialErr := c.dialErr
	c.mu.Unlock()
	var msg string
	switch {
	case dialErr != nil && (code == codes.Unavailable || code == codes.DeadlineExceeded):
		msg = fmt.Sprintf("CSI endpoint %s is not reachable: %v", c.path, dialErr)
	case code == codes.DeadlineExceeded:
		msg = fmt.Sprintf("CSI endpoint %s did not answer in time", c.path)
	case code == codes.Canceled:
		msg = "cancelled"
	default:
		msg = st.Message()
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%w: %s: %s: %w", class, op, msg, cerr)
	}
	return fmt.Errorf("%w: %s: %s", class, op, msg)
}

// Info calls GetPluginInfo.
func (c *Client) Info(ctx context.Context) (volume.Info, error) {
	resp, err := c.id.GetPluginInfo(ctx, &csipb.GetPluginInfoRequest{})
	if err != nil {
		return volume.Info{}, c.fail(ctx, "GetPluginInfo", err)
	}
	return volume.Info{Name: resp.GetName(), Version: resp.GetVendorVersion()}, nil
}

// Capabilities calls NodeGetCapabilities: STAGE_UNSTAGE_VOLUME is Stage,
// GET_VOLUME_STATS is Stats; and ControllerGetCapabilities (once):
// CLONE_VOLUME is Clone.
func (c *Client) Capabilities(ctx context.Context) (volume.Capabilities, error) {
	resp, err := c.node.NodeGetCapabilities(ctx, &csipb.NodeGetCapabilitiesRequest{})
	if err != nil {
		return volume.Capabilities{}, c.fail(ctx, "NodeGetCapabilities", err)
	}
	var caps volume.Capabilities
	for _, cp := range resp.GetCapabilities() {
		switch cp.GetRpc().GetType() {
		case csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME:
			caps.Stage = true
		case csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS:
			caps.Stats = true
		}
	}
	clone, err := c.controllerCap(ctx, csipb.ControllerServiceCapability_RPC_CLONE_VOLUME)
	if err != nil {
		return volume.Capabilities{}, err
	}
	caps.Clone = clone
	return caps, nil
}

// controllerCap returns whether the driver has the controller capability
// t. It asks ControllerGetCapabilities once and remembers the answer; a
// driver without a controller service has none.
func (c *Client) controllerCap(ctx context.Context, t csipb.ControllerServiceCapability_RPC_Type) (bool, error) {
	c.mu.Lock()
	caps := c.ctlCaps
	c.mu.Unlock()
	if caps == nil {
		resp, err := c.ctl.ControllerGetCapabilities(ctx, &csipb.ControllerGetCapabilitiesRequest{})
		// A driver without a controller service (a node plugin alone)
		// has no controller capabilities.
		if err != nil && status.Code(err) != codes.Unimplemented {
			return false, c.fail(ctx, "ControllerGetCapabilities", err)
		}
		caps = map[csipb.ControllerServiceCapability_RPC_Type]bool{}
		for _, cp := range resp.GetCapabilities() {
			caps[cp.GetRpc().GetType()] = true
		}
		c.mu.Lock()
		c.ctlCaps = caps
		c.mu.Unlock()
	}
	return caps[t], nil
}

// Probe calls Probe; a driver that is not ready is ErrUnavailable.
func (c *Client) Probe(ctx context.Context) error {
	resp, err := c.id.Probe(ctx, &csipb.ProbeRequest{})
	if err != nil {
		return c.fail(ctx, "Probe", err)
	}
	if r := resp.GetReady(); r != nil && !r.GetValue() {
		return fmt.Errorf("%w: Probe: the CSI driver at %s is not ready yet", volume.ErrUnavailable, c.path)
	}
	return nil
}

// Create calls CreateVolume with a mount capability, SINGLE_NODE_WRITER, the
// capacity as required_bytes and the source as volume_content_source. A
// source the driver does not advertise (CREATE_DELETE_SNAPSHOT for a
// snapshot, CLONE_VOLUME for a volume) is ErrNotSupported.
func (c *Client) Create(ctx context.Context, req volume.CreateRequest) (volume.Volume, error) {
	creq := &csipb.CreateVolumeRequest{
		Name:               req.Name,
		VolumeCapabilities: []*csipb.VolumeCapability{mountCapability(volume.SingleNodeWriter)},
		Parameters:         req.Parameters,
	}
	if req.CapacityBytes > 0 {
		creq.CapacityRange = &csipb.CapacityRange{RequiredBytes: req.CapacityBytes}
	}
	if req.Source != nil {
		cs, err := c.contentSource(ctx, req.Source)
		if err != nil {
			return volume.Volume{}, err
		}
		creq.VolumeContentSource = cs
	}
	resp, err := c.ctl.CreateVolume(ctx, creq)
	if err != nil {
		return volume.Volume{}, c.fail(ctx, "CreateVolume", err)
	}
	v := resp.GetVolume()
	if v.GetVolumeId() == "" {
		return volume.Volume{}, fmt.Errorf("%w: CreateVolume: the driver returned no volume ID", volume.ErrUnavailable)
	}
	return volume.Volume{ID: v.GetVolumeId(), CapacityBytes: v.GetCapacityBytes(), Context: v.GetVolumeContext()}, nil
}

// Delete calls DeleteVolume; NOT_FOUND counts as deleted.
func (c *Client) Delete(ctx context.Context, volumeID string) error {
	_, err := c.ctl.DeleteVolume(ctx, &csipb.DeleteVolumeRequest{VolumeId: volumeID})
	return c.gone(ctx, "DeleteVolume", err)
}

// gone is fail for calls that undo something: NOT_FOUND is success.
func (c *Client) gone(ctx context.Context, op string, err error) error {
	if err == nil || status.Code(err) == codes.NotFound {
		return nil
	}
	return c.fail(ctx, op, err)
}

// Stage calls ControllerPublishVolume when the driver needs it, then
// NodeStageVolume.
func (c *Client) Stage(ctx context.Context, req volume.StageRequest) error {
	pub, err := c.attach(ctx, req.VolumeID, req.Access, false, req.Context)
	if err != nil {
		return err
	}
	_, err = c.node.NodeStageVolume(ctx, &csipb.NodeStageVolumeRequest{
		VolumeId:          req.VolumeID,
		StagingTargetPath: req.StagingPath,
		VolumeCapability:  mountCapability(req.Access),
		VolumeContext:     req.Context,
		PublishContext:    pub,
	})
	if err != nil {
		return c.fail(ctx, "NodeStageVolume", err)
	}
	return nil
}

// Unstage calls NodeUnstageVolume, then ControllerUnpublishVolume when the
// driver needs it.
func (c *Client) Unstage(ctx context.Context, volumeID, stagingPath string) error {
	_, err := c.node.NodeUnstageVolume(ctx, &csipb.NodeUnstageVolumeRequest{VolumeId: volumeID, StagingTargetPath: stagingPath})
	if err := c.gone(ctx, "NodeUnstageVolume", err); err != nil {
		return err
	}
	return c.detach(ctx, volumeID)
}

// Publish calls NodePublishVolume, after ControllerPublishVolume when the
// driver needs it (again when it stages: the call is idempotent and returns
// the publish context NodePublishVolume needs).
func (c *Client) Publish(ctx context.Context, req volume.PublishRequest) error {
	pub, err := c.attach(ctx, req.VolumeID, req.Access, req.ReadOnly && req.StagingPath == "", req.Context)
	if err != nil {
		return err
	}
	_, err = c.node.NodePublishVolume(ctx, &csipb.NodePublishVolumeRequest{
		VolumeId:          req.VolumeID,
		StagingTargetPath: req.StagingPath,
		TargetPath:        req.TargetPath,
		VolumeCapability:  mountCapability(req.Access),
		Readonly:          req.ReadOnly,
		VolumeContext:     req.Context,
		PublishContext:    pub,
	})
	if err != nil {
		return c.fail(ctx, "NodePublishVolume", err)
	}
	return nil
}

// Unpublish calls NodeUnpublishVolume; a driver that does not stage and
// needs ControllerPublishVolume also gets ControllerUnpublishVolume.
func (c *Client) Unpublish(ctx context.Context, volumeID, targetPath string) error {
	_, err := c.node.NodeUnpublishVolume(ctx, &csipb.NodeUnpublishVolumeRequest{VolumeId: volumeID, TargetPath: targetPath})
	if err := c.gone(ctx, "NodeUnpublishVolume", err); err != nil {
		return err
	}
	if ok, err := c.controllerCap(ctx, csipb.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME); err != nil || !ok {
		return err
	}
	caps, err := c.Capabilities(ctx)
	if err != nil || caps.Stage {
		return err
	}
	return c.detach(ctx, volumeID)
}

// attach calls ControllerPublishVolume for this node when the driver has
// PUBLISH_UNPUBLISH_VOLUME and returns the publish context; nil otherwise.
func (c *Client) attach(ctx context.Context, volumeID string, m volume.AccessMode, readOnly bool, vctx map[string]string) (map[string]string, error) {
	nodeID, err := c.attachNode(ctx)
	if err != nil || nodeID == "" {
		return nil, err
	}
	resp, err := c.ctl.ControllerPublishVolume(ctx, &csipb.ControllerPublishVolumeRequest{
		VolumeId:         volumeID,
		NodeId:           nodeID,
		VolumeCapability: mountCapability(m),
		Readonly:         readOnly,
		VolumeContext:    vctx,
	})
	if err != nil {
		return nil, c.fail(ctx, "ControllerPublishVolume", err)
	}
	return resp.GetPublishContext(), nil
}

// detach calls ControllerUnpublishVolume for this node when the driver has
// PUBLISH_UNPUBLISH_VOLUME.
func (c *Client) detach(ctx context.Context, volumeID string) error {
	nodeID, err := c.attachNode(ctx)
	if err != nil || nodeID == "" {
		return err
	}
	_, err = c.ctl.ControllerUnpublishVolume(ctx, &csipb.ControllerUnpublishVolumeRequest{VolumeId: volumeID, NodeId: nodeID})
	return c.gone(ctx, "ControllerUnpublishVolume", err)
}

// attachNode returns the node ID to attach volumes to when the driver has
// PUBLISH_UNPUBLISH_VOLUME, and "" when it attaches nothing.
func (c *Client) attachNode(ctx context.Context) (string, error) {
	ok, err := c.controllerCap(ctx, csipb.ControllerServiceCapability_RPC_PUBLISH_UNPUBLISH_VOLUME)
	if err != nil || !ok {
		return "", err
	}
	return c.nodeIDOf(ctx)
}

// nodeIDOf returns the configured node ID or asks NodeGetInfo once.
func (c *Client) nodeIDOf(ctx context.Context) (string, error) {
	c.mu.Lock()
	id := c.nodeID
	c.mu.Unlock()
	if id != "" {
		return id, nil
	}
	resp, err := c.node.NodeGetInfo(ctx, &csipb.NodeGetInfoRequest{})
	if err != nil {
		return "", c.fail(ctx, "NodeGetInfo", err)
	}
	if resp.GetNodeId() == "" {
		return "", fmt.Errorf("%w: NodeGetInfo: the driver reported no node ID", volume.ErrUnavailable)
	}
	c.mu.Lock()
	c.nodeID = resp.GetNodeId()
	c.mu.Unlock()
	return resp.GetNodeId(), nil
}

// Stats calls NodeGetVolumeStats. Figures the driver does not report are
// -1.
func (c *Client) Stats(ctx context.Context, volumeID, path string) (volume.Stats, error) {
	resp, err := c.node.NodeGetVolumeStats(ctx, &csipb.NodeGetVolumeStatsRequest{VolumeId: volumeID, VolumePath: path})
	if err != nil {
		return volume.Stats{}, c.fail(ctx, "NodeGetVolumeStats", err)
	}
	st := volume.Stats{CapacityBytes: -1, AvailableBytes: -1, UsedBytes: -1, Inodes: -1, InodesFree: -1, InodesUsed: -1}
	for _, u := range resp.GetUsage() {
		switch u.GetUnit() {
		case csipb.VolumeUsage_BYTES:
			st.CapacityBytes, st.AvailableBytes, st.UsedBytes = u.GetTotal(), u.GetAvailable(), u.GetUsed()
		case csipb.VolumeUsage_INODES:
			st.Inodes, st.InodesFree, st.InodesUsed = u.GetTotal(), u.GetAvailable(), u.GetUsed()
		}
	}
	return st, nil
}

// List calls ListVolumes, page by page. It returns ErrNotSupported when the
// driver lacks the LIST_VOLUMES capability.
func (c *Client) List(ctx context.Context) ([]volume.Volume, error) {
	ok, err := c.controllerCap(ctx, csipb.ControllerServiceCapability_RPC_LIST_VOLUMES)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("%w: ListVolumes: the CSI driver at %s cannot list volumes", volume.ErrNotSupported, c.path)
	}
	return allPages("ListVolumes", volumeID, func(token string) ([]volume.Volume, string, error) {
		resp, err := c.ctl.ListVolumes(ctx, &csipb.ListVolumesRequest{StartingToken: token})
		if err != nil {
			return nil, "", c.fail(ctx, "ListVolumes", err)
		}
		vols := make([]volume.Volume, 0, len(resp.GetEntries()))
		for _, e := range resp.GetEntries() {
			v := e.GetVolume()
			vols = append(vols, volume.Volume{ID: v.GetVolumeId(), CapacityBytes: v.GetCapacityBytes(), Context: v.GetVolumeContext()})
		}
		return vols, resp.GetNextToken(), nil
	})
}
