package csi

import (
	"context"
	"errors"
	"fmt"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/stowage/stowage/plugins/volume"
)

// controllerAbilities returns the controller capabilities of the optional
// abilities p has: a volume.Snapshotter fills volumes from its snapshots,
// and Capabilities.Clone says it copies volumes.
func controllerAbilities(p volume.Provider, caps volume.Capabilities) []csipb.ControllerServiceCapability_RPC_Type {
	var types []csipb.ControllerServiceCapability_RPC_Type
	if _, ok := p.(volume.Snapshotter); ok {
		types = append(types,
			csipb.ControllerServiceCapability_RPC_CREATE_DELETE_SNAPSHOT,
			csipb.ControllerServiceCapability_RPC_LIST_SNAPSHOTS)
	}
	if caps.Clone {
		types = append(types, csipb.ControllerServiceCapability_RPC_CLONE_VOLUME)
	}
	if _, ok := p.(volume.Expander); ok {
		types = append(types, csipb.ControllerServiceCapability_RPC_EXPAND_VOLUME)
	}
	return types
}

// source returns the contract's source of a CreateVolume content source;
// nil for none. A source the provider cannot fill from (a snapshot without
// a volume.Snapshotter, a volume without Capabilities.Clone) is
// INVALID_ARGUMENT.
func (c controller) source(ctx context.Context, cs *csipb.VolumeContentSource) (*volume.Source, error) {
	if cs == nil {
		return nil, nil
	}
	switch {
	case cs.GetSnapshot() != nil:
		if _, ok := c.s.p.(volume.Snapshotter); !ok {
			return nil, invalid("CreateVolume: volume_content_source is not supported: the driver cannot create volumes from snapshots")
		}
		id := cs.GetSnapshot().GetSnapshotId()
		if id == "" {
			return nil, invalid("CreateVolume: volume_content_source.snapshot.snapshot_id is required")
		}
		return &volume.Source{SnapshotID: id}, nil
	case cs.GetVolume() != nil:
		caps, err := c.s.caps(ctx)
		if err != nil {
			return nil, err
		}
		if !caps.Clone {
			return nil, invalid("CreateVolume: volume_content_source is not supported: the driver cannot copy volumes")
		}
		id := cs.GetVolume().GetVolumeId()
		if id == "" {
			return nil, invalid("CreateVolume: volume_content_source.volume.volume_id is required")
		}
		return &volume.Source{VolumeID: id}, nil
	}
	return nil, invalid("CreateVolume: volume_content_source names neither a snapshot nor a volume")
}

// snapshotter returns the provider as a volume.Snapshotter, or UNIMPLEMENTED.
func (c controller) snapshotter(op string) (volume.Snapshotter, error) {
	sp, ok := c.s.p.(volume.Snapshotter)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "%s: the driver takes no snapshots", op)
	}
	return sp, nil
}

func snapshotID(s volume.Snapshot) string { return s.ID }

func csiSnapshot(s volume.Snapshot) *csipb.Snapshot {
	cs := &csipb.Snapshot{
		SnapshotId:     s.ID,
		SourceVolumeId: s.SourceVolumeID,
		SizeBytes:      s.SizeBytes,
		ReadyToUse:     s.ReadyToUse,
	}
	if !s.CreatedAt.IsZero() {
		cs.CreationTime = timestamppb.New(s.CreatedAt)
	}
	return cs
}

func (c controller) CreateSnapshot(ctx context.Context, req *csipb.CreateSnapshotRequest) (*csipb.CreateSnapshotResponse, error) {
	const op = "CreateSnapshot"
	if err := required(op, "name", req.GetName() != "", "source_volume_id", req.GetSourceVolumeId() != ""); err != nil {
		return nil, err
	}
	sp, err := c.snapshotter(op)
	if err != nil {
		return nil, err
	}
	if len(req.GetParameters()) > 0 {
		return nil, invalid("%s: parameters are not supported", op)
	}
	s, err := sp.CreateSnapshot(ctx, req.GetSourceVolumeId(), req.GetName())
	if err != nil {
		return nil, err
	}
	return &csipb.CreateSnapshotResponse{Snapshot: csiSnapshot(s)}, nil
}

func (c controller) DeleteSnapshot(ctx context.Context, req *csipb.DeleteSnapshotRequest) (*csipb.DeleteSnapshotResponse, error) {
	const op = "DeleteSnapshot"
	if err := required(op, "snapshot_id", req.GetSnapshotId() != ""); err != nil {
		return nil, err
	}
	sp, err := c.snapshotter(op)
	if err != nil {
		return nil, err
	}
	if err := sp.DeleteSnapshot(ctx, req.GetSnapshotId()); err != nil {
		return nil, err
	}
	return &csipb.DeleteSnapshotResponse{}, nil
}

// ListSnapshots lists the provider's snapshots ordered by ID, filtered by
// snapshot_id and source_volume_id (an unknown one lists nothing), a page
// at a time with the tokens of ListVolumes.
func (c controller) ListSnapshots(ctx context.Context, req *csipb.ListSnapshotsRequest) (*csipb.ListSnapshotsResponse, error) {
	const op = "ListSnapshots"
	sp, err := c.snapshotter(op)
	if err != nil {
		return nil, err
	}
	snaps, err := sp.ListSnapshots(ctx, req.GetSourceVolumeId())
	if errors.Is(err, volume.ErrNotFound) && req.GetSourceVolumeId() != "" {
		snaps, err = nil, nil // an unknown volume has no snapshots
	}
	if err != nil {
		return nil, fmt.Errorf("list snapshots: %w", err)
	}
	if id := req.GetSnapshotId(); id != "" {
		var match []volume.Snapshot
		for _, s := range snaps {
			if s.ID == id {
				match = append(match, s)
			}
		}
		snaps = match
	}
	snaps, next, err := page(op, snaps, snapshotID, req.GetMaxEntries(), req.GetStartingToken())
	if err != nil {
		return nil, err
	}
	resp := &csipb.ListSnapshotsResponse{NextToken: next}
	for _, s := range snaps {
		resp.Entries = append(resp.Entries, &csipb.ListSnapshotsResponse_Entry{Snapshot: csiSnapshot(s)})
	}
	return resp, nil
}

// expander returns the provider as a volume.Expander, or UNIMPLEMENTED.
func (s *Server) expander(op string) (volume.Expander, error) {
	ep, ok := s.p.(volume.Expander)
	if !ok {
		return nil, status.Errorf(codes.Unimplemented, "%s: the driver cannot expand volumes", op)
	}
	return ep, nil
}

// expandCapacity returns the capacity a capacity range asks for.
func expandCapacity(op string, cr *csipb.CapacityRange) (int64, error) {
	want, limit := cr.GetRequiredBytes(), cr.GetLimitBytes()
	switch {
	case want < 0 || limit < 0:
		return 0, invalid("%s: capacity_range must not be negative", op)
	case limit > 0 && want > limit:
		return 0, status.Errorf(codes.OutOfRange, "%s: required_bytes %d exceeds limit_bytes %d", op, want, limit)
	}
	return want, nil
}

// ControllerExpandVolume grows the volume on the backend. The node is
// asked to expand too, so that a provider with a file system grows it
// where the volume is in use.
func (c controller) ControllerExpandVolume(ctx context.Context, req *csipb.ControllerExpandVolumeRequest) (*csipb.ControllerExpandVolumeResponse, error) {
	const op = "ControllerExpandVolume"
	if err := required(op, "volume_id", req.GetVolumeId() != "", "capacity_range.required_bytes", req.GetCapacityRange().GetRequiredBytes() > 0); err != nil {
		return nil, err
	}
	ep, err := c.s.expander(op)
	if err != nil {
		return nil, err
	}
	want, err := expandCapacity(op, req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	got, err := ep.Expand(ctx, volume.ExpandRequest{VolumeID: req.GetVolumeId(), CapacityBytes: want})
	if err != nil {
		return nil, err
	}
	if limit := req.GetCapacityRange().GetLimitBytes(); limit > 0 && got > limit {
		return nil, status.Errorf(codes.OutOfRange, "%s: volume %q has %d bytes, more than limit_bytes %d", op, req.GetVolumeId(), got, limit)
	}
	return &csipb.ControllerExpandVolumeResponse{CapacityBytes: got, NodeExpansionRequired: true}, nil
}

// NodeExpandVolume grows the volume online through volume_path (and
// staging_target_path). Without capacity_range it keeps the volume's
// capacity, which the provider must then list.
func (n node) NodeExpandVolume(ctx context.Context, req *csipb.NodeExpandVolumeRequest) (*csipb.NodeExpandVolumeResponse, error) {
	const op = "NodeExpandVolume"
	if err := required(op, "volume_id", req.GetVolumeId() != "", "volume_path", req.GetVolumePath() != ""); err != nil {
		return nil, err
	}
	ep, err := n.s.expander(op)
	if err != nil {
		return nil, err
	}
	if vc := req.GetVolumeCapability(); vc != nil {
		if _, err := nodeCapability(op, vc); err != nil {
			return nil, err
		}
	}
	want, err := expandCapacity(op, req.GetCapacityRange())
	if err != nil {
		return nil, err
	}
	if want == 0 {
		if want, err = n.currentCapacity(ctx, op, req.GetVolumeId()); err != nil {
			return nil, err
		}
	}
	got, err := ep.Expand(ctx, volume.ExpandRequest{
		VolumeID:      req.GetVolumeId(),
		CapacityBytes: want,
		StagingPath:   req.GetStagingTargetPath(),
		TargetPath:    req.GetVolumePath(),
	})
	if err != nil {
		return nil, err
	}
	return &csipb.NodeExpandVolumeResponse{CapacityBytes: got}, nil
}

// currentCapacity returns the capacity of a volume from the provider's
// list.
func (n node) currentCapacity(ctx context.Context, op, id string) (int64, error) {
	l, ok := n.s.p.(volume.Lister)
	if !ok {
		return 0, invalid("%s: capacity_range is required: the driver cannot look up the volume's capacity", op)
	}
	vols, err := l.List(ctx)
	if err != nil {
		return 0, fmt.Errorf("list volumes: %w", err)
	}
	for _, v := range vols {
		if v.ID == id {
			if v.CapacityBytes <= 0 {
				return 0, invalid("%s: capacity_range is required: volume %q has no fixed capacity", op, id)
			}
			return v.CapacityBytes, nil
		}
	}
	return 0, status.Errorf(codes.NotFound, "%s: volume %q does not exist", op, id)
}
