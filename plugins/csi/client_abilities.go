package csi

import (
	"context"
	"fmt"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/stowage/stowage/plugins/volume"
)

// need returns ErrNotSupported, saying that the driver cannot do what,
// unless it has the controller capability t.
func (c *Client) need(ctx context.Context, t csipb.ControllerServiceCapability_RPC_Type, op, what string) error {
	ok, err := c.controllerCap(ctx, t)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: %s: the CSI driver at %s cannot %s (no %s capability)", volume.ErrNotSupported, op, c.path, what, t)
	}
	return nil
}

// contentSource returns the CreateVolume content source of src.
func (c *Client) contentSource(ctx context.Context, src *volume.Source) (*csipb.VolumeContentSource, error) {
	switch {
	case src.SnapshotID != "" && src.VolumeID != "":
		return nil, fmt.Errorf("%w: CreateVolume: a source names either a snapshot or a volume, not both", volume.ErrInvalid)
	case src.SnapshotID != "":
		if err := c.need(ctx, csipb.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT, "CreateVolume", "create volumes from snapshots"); err != nil {
			return nil, err
		}
		return &csipb.VolumeContentSource{Type: &csipb.VolumeContentSource_Snapshot{
			Snapshot: &csipb.VolumeContentSource_SnapshotSource{SnapshotId: src.SnapshotID},
		}}, nil
	case src.VolumeID != "":
		if err := c.need(ctx, csipb.ControllerServiceCapability_RPC_CLONE_VOLUME, "CreateVolume", "copy volumes"); err != nil {
			return nil, err
		}
		return &csipb.VolumeContentSource{Type: &csipb.VolumeContentSource_Volume{
			Volume: &csipb.VolumeContentSource_VolumeSource{VolumeId: src.VolumeID},
		}}, nil
	}
	return nil, fmt.Errorf("%w: CreateVolume: the source names neither a snapshot nor a volume", volume.ErrInvalid)
}

func snapshotOf(s *csipb.Snapshot) volume.Snapshot {
	out := volume.Snapshot{
		ID:             s.GetSnapshotId(),
		SourceVolumeID: s.GetSourceVolumeId(),
		SizeBytes:      s.GetSizeBytes(),
		ReadyToUse:     s.GetReadyToUse(),
	}
	if t := s.GetCreationTime(); t != nil {
		out.CreatedAt = t.AsTime()
	}
	return out
}

// CreateSnapshot calls CreateSnapshot. It needs CREATE_DELETE_SNAPSHOT.
func (c *Client) CreateSnapshot(ctx context.Context, volumeID, name string) (volume.Snapshot, error) {
	if err := c.need(ctx, csipb.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT, "CreateSnapshot", "take snapshots"); err != nil {
		return volume.Snapshot{}, err
	}
	resp, err := c.ctl.CreateSnapshot(ctx, &csipb.CreateSnapshotRequest{SourceVolumeId: volumeID, Name: name})
	if err != nil {
		return volume.Snapshot{}, c.fail(ctx, "CreateSnapshot", err)
	}
	if resp.GetSnapshot().GetSnapshotId() == "" {
		return volume.Snapshot{}, fmt.Errorf("%w: CreateSnapshot: the driver returned no snapshot ID", volume.ErrUnavailable)
	}
	return snapshotOf(resp.GetSnapshot()), nil
}

// DeleteSnapshot calls DeleteSnapshot; NOT_FOUND counts as deleted. It
// needs CREATE_DELETE_SNAPSHOT.
func (c *Client) DeleteSnapshot(ctx context.Context, snapshotID string) error {
	if err := c.need(ctx, csipb.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT, "DeleteSnapshot", "delete snapshots"); err != nil {
		return err
	}
	_, err := c.ctl.DeleteSnapshot(ctx, &csipb.DeleteSnapshotRequest{SnapshotId: snapshotID})
	return c.gone(ctx, "DeleteSnapshot", err)
}

// ListSnapshots calls ListSnapshots, page by page, for one volume or all of
// them. It needs LIST_SNAPSHOTS.
func (c *Client) ListSnapshots(ctx context.Context, volumeID string) ([]volume.Snapshot, error) {
	if err := c.need(ctx, csipb.ControllerServiceCapability_RPC_LIST_SNAPSHOTS, "ListSnapshots", "list snapshots"); err != nil {
		return nil, err
	}
	return allPages("ListSnapshots", snapshotID, func(token string) ([]volume.Snapshot, string, error) {
		resp, err := c.ctl.ListSnapshots(ctx, &csipb.ListSnapshotsRequest{SourceVolumeId: volumeID, StartingToken: token})
		if err != nil {
			return nil, "", c.fail(ctx, "ListSnapshots", err)
		}
		snaps := make([]volume.Snapshot, 0, len(resp.GetEntries()))
		for _, e := range resp.GetEntries() {
			snaps = append(snaps, snapshotOf(e.GetSnapshot()))
		}
		return snaps, resp.GetNextToken(), nil
	})
}

// nodeCap returns whether the driver's node service has capability t.
func (c *Client) nodeCap(ctx context.Context, t csipb.NodeServiceCapability_RPC_Type) (bool, error) {
	resp, err := c.node.NodeGetCapabilities(ctx, &csipb.NodeGetCapabilitiesRequest{})
	if err != nil {
		return false, c.fail(ctx, "NodeGetCapabilities", err)
	}
	for _, cp := range resp.GetCapabilities() {
		if cp.GetRpc().GetType() == t {
			return true, nil
		}
	}
	return false, nil
}

// Expand calls ControllerExpandVolume when the driver has the controller
// capability EXPAND_VOLUME, then NodeExpandVolume when the node has it, the
// volume is in use here (req names a path) and the controller did not say
// the node has nothing to do. The published path is the volume_path, the
// staging path when the volume is only staged.
func (c *Client) Expand(ctx context.Context, req volume.ExpandRequest) (int64, error) {
	ctlOK, err := c.controllerCap(ctx, csipb.ControllerServiceCapability_RPC_EXPAND_VOLUME)
	if err != nil {
		return 0, err
	}
	nodeOK, err := c.nodeCap(ctx, csipb.NodeServiceCapability_RPC_EXPAND_VOLUME)
	if err != nil {
		return 0, err
	}
	path := req.TargetPath
	if path == "" {
		path = req.StagingPath
	}
	switch {
	case !ctlOK && !nodeOK:
		return 0, fmt.Errorf("%w: expand volume: the CSI driver at %s cannot expand volumes (no EXPAND_VOLUME capability)", volume.ErrNotSupported, c.path)
	case !ctlOK && path == "":
		return 0, fmt.Errorf("%w: expand volume: the CSI driver at %s expands volumes only where they are in use; mount the volume first", volume.ErrNotSupported, c.path)
	}
	capacity, nodeToo := req.CapacityBytes, true
	if ctlOK {
		resp, err := c.ctl.ControllerExpandVolume(ctx, &csipb.ControllerExpandVolumeRequest{
			VolumeId:         req.VolumeID,
			CapacityRange:    &csipb.CapacityRange{RequiredBytes: req.CapacityBytes},
			VolumeCapability: mountCapability(volume.SingleNodeWriter),
		})
		if err != nil {
			return 0, c.fail(ctx, "ControllerExpandVolume", err)
		}
		capacity, nodeToo = resp.GetCapacityBytes(), resp.GetNodeExpansionRequired()
	}
	if !nodeOK || !nodeToo || path == "" {
		return capacity, nil
	}
	resp, err := c.node.NodeExpandVolume(ctx, &csipb.NodeExpandVolumeRequest{
		VolumeId:          req.VolumeID,
		VolumePath:        path,
		StagingTargetPath: req.StagingPath,
		CapacityRange:     &csipb.CapacityRange{RequiredBytes: req.CapacityBytes},
		VolumeCapability:  mountCapability(volume.SingleNodeWriter),
	})
	if err != nil {
		return 0, c.fail(ctx, "NodeExpandVolume", err)
	}
	if resp.GetCapacityBytes() > 0 {
		capacity = resp.GetCapacityBytes()
	}
	return capacity, nil
}

// Unlock calls the lock service (see the package doc). A driver without it
// is ErrNotSupported.
func (c *Client) Unlock(ctx context.Context, volumeID string) (string, error) {
	out := new(wrapperspb.StringValue)
	err := c.conn.Invoke(ctx, unlockMethod, wrapperspb.String(volumeID), out)
	if status.Code(err) == codes.Unimplemented {
		return "", fmt.Errorf("%w: Unlock: the CSI driver at %s keeps no write locks (no %s service)", volume.ErrNotSupported, c.path, lockServiceName)
	}
	if err != nil {
		return "", c.fail(ctx, "Unlock", err)
	}
	return out.GetValue(), nil
}
