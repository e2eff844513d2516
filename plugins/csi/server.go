package csi

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/stowage/stowage/plugins/volume"
)

// ServerOptions configure a Server.
type ServerOptions struct {
	// Name is the driver name GetPluginInfo reports, a DNS-like name of at
	// most 63 characters such as "stowage.local"; empty means the
	// provider's own name.
	Name string
	// Version is the vendor version GetPluginInfo reports; empty means the
	// provider's own version.
	Version string
	// NodeID is what NodeGetInfo reports; empty means the host name.
	NodeID string
	// Logger receives a debug record per call and a warning per internal
	// error; nil discards them.
	Logger *slog.Logger
}

// Server serves a volume.Provider as a CSI driver: Identity, Controller and
// Node services. It keeps no state of its own, so it can be restarted at any
// time. It is safe for concurrent use.
type Server struct {
	p    volume.Provider
	opts ServerOptions
	log  *slog.Logger
}

// gracePeriod bounds how long Serve waits for calls in flight after its
// context is done before it cuts them off.
const gracePeriod = 10 * time.Second

// NewServer returns a server for p.
func NewServer(p volume.Provider, opts ServerOptions) *Server {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{p: p, opts: opts, log: log}
}

// Register registers the Identity, Controller and Node services on g, and
// the lock service when the provider is a volume.Unlocker.
func (s *Server) Register(g *grpc.Server) {
	csipb.RegisterIdentityServer(g, identity{s: s})
	csipb.RegisterControllerServer(g, controller{s: s})
	csipb.RegisterNodeServer(g, node{s: s})
	if u, ok := s.p.(volume.Unlocker); ok {
		g.RegisterService(&lockServiceDesc, lockServer{u: u})
	}
}

// Serve serves the CSI services on l with its own gRPC server until ctx is
// done, then stops gracefully (cutting off calls still running after 10s)
// and returns nil. It returns the error that stops serving otherwise. It
// closes l.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	g := grpc.NewServer(grpc.ChainUnaryInterceptor(s.intercept))
	s.Register(g)
	errc := make(chan error, 1)
	go func() { errc <- g.Serve(l) }()
	select {
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("%w: serve CSI: %w", volume.ErrUnavailable, err)
		}
		return nil
	case <-ctx.Done():
	}
	stopped := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(stopped)
	}()
	t := time.NewTimer(gracePeriod)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		s.log.Warn("CSI calls still running after the grace period; stopping them", "duration", gracePeriod)
		g.Stop()
		<-stopped
	}
	<-errc // nil after a stop
	return nil
}

// intercept logs every call, turns a panic into INTERNAL and makes sure
// every error is a gRPC status.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
	start := time.Now()
	op := info.FullMethod[strings.LastIndexByte(info.FullMethod, '/')+1:]
	defer func() {
		if r := recover(); r != nil {
			s.log.ErrorContext(ctx, "CSI call panicked", "op", op, "panic", r, "stack", string(debug.Stack()))
			resp, err = nil, status.Errorf(codes.Internal, "%s: internal error", op)
		}
		err = toStatus(err)
		code := status.Code(err)
		if code == codes.Internal || code == codes.Unknown {
			s.log.WarnContext(ctx, "CSI call failed", "op", op, "duration", time.Since(start), "code", code.String(), "error", err)
		} else {
			s.log.DebugContext(ctx, "CSI call", "op", op, "duration", time.Since(start), "code", code.String())
		}
	}()
	return h(ctx, req)
}

// invalid returns an INVALID_ARGUMENT status.
func invalid(format string, args ...any) error {
	return status.Errorf(codes.InvalidArgument, format, args...)
}

// required returns an INVALID_ARGUMENT status unless every named field is
// set; fields come in pairs of name and whether it is set.
func required(op string, fields ...any) error {
	for i := 0; i+1 < len(fields); i += 2 {
		if set, _ := fields[i+1].(bool); !set {
			return invalid("%s: %s is required", op, fields[i])
		}
	}
	return nil
}

// caps returns the provider's capabilities.
func (s *Server) caps(ctx context.Context) (volume.Capabilities, error) {
	c, err := s.p.Capabilities(ctx)
	if err != nil {
		return c, fmt.Errorf("get capabilities: %w", err)
	}
	return c, nil
}

// identity is the CSI Identity service.
type identity struct {
	csipb.UnimplementedIdentityServer
	s *Server
}

// driverName is what the CSI spec allows as a driver name.
var driverName = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9._-]{0,61}[a-zA-Z0-9])?$`)

func (i identity) GetPluginInfo(ctx context.Context, _ *csipb.GetPluginInfoRequest) (*csipb.GetPluginInfoResponse, error) {
	name, version := i.s.opts.Name, i.s.opts.Version
	if name == "" || version == "" {
		info, err := i.s.p.Info(ctx)
		if err != nil {
			return nil, err
		}
		if name == "" {
			name = info.Name
		}
		if version == "" {
			version = info.Version
		}
	}
	if !driverName.MatchString(name) {
		return nil, status.Errorf(codes.FailedPrecondition, "driver name %q is not valid: use at most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit", name)
	}
	return &csipb.GetPluginInfoResponse{Name: name, VendorVersion: version}, nil
}

func (i identity) GetPluginCapabilities(context.Context, *csipb.GetPluginCapabilitiesRequest) (*csipb.GetPluginCapabilitiesResponse, error) {
	resp := &csipb.GetPluginCapabilitiesResponse{Capabilities: []*csipb.PluginCapability{{
		Type: &csipb.PluginCapability_Service_{Service: &csipb.PluginCapability_Service{
			Type: csipb.PluginCapability_Service_CONTROLLER_SERVICE,
		}},
	}}}
	if _, ok := i.s.p.(volume.Expander); ok {
		resp.Capabilities = append(resp.Capabilities, &csipb.PluginCapability{
			Type: &csipb.PluginCapability_VolumeExpansion_{VolumeExpansion: &csipb.PluginCapability_VolumeExpansion{
				Type: csipb.PluginCapability_VolumeExpansion_ONLINE,
			}},
		})
	}
	return resp, nil
}

// Probe reports ready when the provider's Probe succeeds. An unhealthy
// provider is an error, as the spec asks, so that the cause reaches the
// caller.
func (i identity) Probe(ctx context.Context, _ *csipb.ProbeRequest) (*csipb.ProbeResponse, error) {
	if err := i.s.p.Probe(ctx); err != nil {
		return nil, err
	}
	return &csipb.ProbeResponse{Ready: wrapperspb.Bool(true)}, nil
}

// controller is the CSI Controller service.
type controller struct {
	csipb.UnimplementedControllerServer
	s *Server
}

func (c controller) CreateVolume(ctx context.Context, req *csipb.CreateVolumeRequest) (*csipb.CreateVolumeResponse, error) {
	if err := required("CreateVolume", "name", req.GetName() != "", "volume_capabilities", len(req.GetVolumeCapabilities()) > 0); err != nil {
		return nil, err
	}
	for _, vc := range req.GetVolumeCapabilities() {
		if _, msg := checkCapability(vc); msg != "" {
			return nil, invalid("CreateVolume: %s", msg)
		}
	}
	src, err := c.source(ctx, req.GetVolumeContentSource())
	if err != nil {
		return nil, err
	}
	if len(req.GetMutableParameters()) > 0 {
		return nil, invalid("CreateVolume: mutable_parameters are not supported")
	}
	want, limit := req.GetCapacityRange().GetRequiredBytes(), req.GetCapacityRange().GetLimitBytes()
	switch {
	case want < 0 || limit < 0:
		return nil, invalid("CreateVolume: capacity_range must not be negative")
	case limit > 0 && want > limit:
		return nil, status.Errorf(codes.OutOfRange, "CreateVolume: required_bytes %d exceeds limit_bytes %d", want, limit)
	}
	v, err := c.s.p.Create(ctx, volume.CreateRequest{Name: req.GetName(), CapacityBytes: want, Parameters: req.GetParameters(), Source: src})
	if err != nil {
		return nil, err
	}
	if limit > 0 && v.CapacityBytes > limit {
		return nil, status.Errorf(codes.OutOfRange, "CreateVolume: volume %q has %d bytes, more than limit_bytes %d", v.ID, v.CapacityBytes, limit)
	}
	cv := csiVolume(v)
	cv.ContentSource = req.GetVolumeContentSource()
	return &csipb.CreateVolumeResponse{Volume: cv}, nil
}

func csiVolume(v volume.Volume) *csipb.Volume {
	return &csipb.Volume{VolumeId: v.ID, CapacityBytes: v.CapacityBytes, VolumeContext: v.Context}
}

func (c controller) DeleteVolume(ctx context.Context, req *csipb.DeleteVolumeRequest) (*csipb.DeleteVolumeResponse, error) {
	if err := required("DeleteVolume", "volume_id", req.GetVolumeId() != ""); err != nil {
		return nil, err
	}
	if err := c.s.p.Delete(ctx, req.GetVolumeId()); err != nil {
		return nil, err
	}
	return &csipb.DeleteVolumeResponse{}, nil
}

// ValidateVolumeCapabilities confirms the capabilities the server supports.
// It tells an unknown volume by the provider's list; a provider that cannot
// list gets its capabilities checked only.
func (c controller) ValidateVolumeCapabilities(ctx context.Context, req *csipb.ValidateVolumeCapabilitiesRequest) (*csipb.ValidateVolumeCapabilitiesResponse, error) {
	if err := required("ValidateVolumeCapabilities", "volume_id", req.GetVolumeId() != "", "volume_capabilities", len(req.GetVolumeCapabilities()) > 0); err != nil {
		return nil, err
	}
	if l, ok := c.s.p.(volume.Lister); ok {
		vols, err := l.List(ctx)
		if err != nil {
			return nil, fmt.Errorf("list volumes: %w", err)
		}
		if !hasVolume(vols, req.GetVolumeId()) {
			return nil, status.Errorf(codes.NotFound, "volume %q does not exist", req.GetVolumeId())
		}
	}
	for _, vc := range req.GetVolumeCapabilities() {
		if _, msg := checkCapability(vc); msg != "" {
			return &csipb.ValidateVolumeCapabilitiesResponse{Message: msg}, nil
		}
	}
	return &csipb.ValidateVolumeCapabilitiesResponse{Confirmed: &csipb.ValidateVolumeCapabilitiesResponse_Confirmed{
		VolumeContext:      req.GetVolumeContext(),
		VolumeCapabilities: req.GetVolumeCapabilities(),
		Parameters:         req.GetParameters(),
	}}, nil
}

func volumeID(v volume.Volume) string { return v.ID }

func hasVolume(vols []volume.Volume, id string) bool {
	for _, v := range vols {
		if v.ID == id {
			return true
		}
	}
	return false
}

// tokenPrefix starts every ListVolumes token. A token names the last volume
// ID of the page before, so deleting or adding volumes between pages never
// repeats an entry.
const tokenPrefix = "after."

func encodeToken(id string) string {
	return tokenPrefix + base64.RawURLEncoding.EncodeToString([]byte(id))
}

func decodeToken(tok string) (string, bool) {
	rest, ok := strings.CutPrefix(tok, tokenPrefix)
	if !ok {
		return "", false
	}
	id, err := base64.RawURLEncoding.DecodeString(rest)
	if err != nil || len(id) == 0 {
		return "", false
	}
	return string(id), true
}

func (c controller) ListVolumes(ctx context.Context, req *csipb.ListVolumesRequest) (*csipb.ListVolumesResponse, error) {
	l, ok := c.s.p.(volume.Lister)
	if !ok {
		return nil, status.Error(codes.Unimplemented, "ListVolumes: the provider cannot list its volumes")
	}
	vols, err := l.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	vols, next, err := page("ListVolumes", vols, volumeID, req.GetMaxEntries(), req.GetStartingToken())
	if err != nil {
		return nil, err
	}
	resp := &csipb.ListVolumesResponse{NextToken: next}
	for _, v := range vols {
		resp.Entries = append(resp.Entries, &csipb.ListVolumesResponse_Entry{Volume: csiVolume(v)})
	}
	return resp, nil
}

func (c controller) ControllerGetCapabilities(ctx context.Context, _ *csipb.ControllerGetCapabilitiesRequest) (*csipb.ControllerGetCapabilitiesResponse, error) {
	caps, err := c.s.caps(ctx)
	if err != nil {
		return nil, err
	}
	types := []csipb.ControllerServiceCapability_RPC_Type{csipb.ControllerServiceCapability_RPC_CREATE_DELETE_VOLUME}
	if _, ok := c.s.p.(volume.Lister); ok {
		types = append(types, csipb.ControllerServiceCapability_RPC_LIST_VOLUMES)
	}
	types = append(types, controllerAbilities(c.s.p, caps)...)
	resp := &csipb.ControllerGetCapabilitiesResponse{}
	for _, t := range types {
		resp.Capabilities = append(resp.Capabilities, &csipb.ControllerServiceCapability{
			Type: &csipb.ControllerServiceCapability_Rpc{Rpc: &csipb.ControllerServiceCapability_RPC{Type: t}},
		})
	}
	return resp, nil
}

// node is the CSI Node service.
type node struct {
	csipb.UnimplementedNodeServer
	s *Server
}

// nodeCapability returns the access mode of a node call's capability, or
// FAILED_PRECONDITION ("exceeds capabilities") when the server does not
// support it.
func nodeCapability(op string, vc *csipb.VolumeCapability) (volume.AccessMode, error) {
	m, msg := checkCapability(vc)
	if msg != "" {
		return 0, status.Errorf(codes.FailedPrecondition, "%s: %s", op, msg)
	}
	return m, nil
}

// needStage returns UNIMPLEMENTED unless the provider stages volumes.
func (n node) needStage(ctx context.Context, op string) error {
	caps, err := n.s.caps(ctx)
	if err != nil {
		return err
	}
	if !caps.Stage {
		return status.Errorf(codes.Unimplemented, "%s: the driver does not stage volumes", op)
	}
	return nil
}

func (n node) NodeStageVolume(ctx context.Context, req *csipb.NodeStageVolumeRequest) (*csipb.NodeStageVolumeResponse, error) {
	const op = "NodeStageVolume"
	if err := required(op, "volume_id", req.GetVolumeId() != "", "staging_target_path", req.GetStagingTargetPath() != "",
		"volume_capability", req.GetVolumeCapability() != nil); err != nil {
		return nil, err
	}
	m, err := nodeCapability(op, req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	if err := n.needStage(ctx, op); err != nil {
		return nil, err
	}
	err = n.s.p.Stage(ctx, volume.StageRequest{
		VolumeID:    req.GetVolumeId(),
		StagingPath: req.GetStagingTargetPath(),
		Access:      m,
		Context:     req.GetVolumeContext(),
	})
	if err != nil {
		return nil, err
	}
	return &csipb.NodeStageVolumeResponse{}, nil
}

func (n node) NodeUnstageVolume(ctx context.Context, req *csipb.NodeUnstageVolumeRequest) (*csipb.NodeUnstageVolumeResponse, error) {
	const op = "NodeUnstageVolume"
	if err := required(op, "volume_id", req.GetVolumeId() != "", "staging_target_path", req.GetStagingTargetPath() != ""); err != nil {
		return nil, err
	}
	if err := n.needStage(ctx, op); err != nil {
		return nil, err
	}
	if err := n.s.p.Unstage(ctx, req.GetVolumeId(), req.GetStagingTargetPath()); err != nil {
		return nil, err
	}
	return &csipb.NodeUnstageVolumeResponse{}, nil
}

func (n node) NodePublishVolume(ctx context.Context, req *csipb.NodePublishVolumeRequest) (*csipb.NodePublishVolumeResponse, error) {
	const op = "NodePublishVolume"
	if err := required(op, "volume_id", req.GetVolumeId() != "", "target_path", req.GetTargetPath() != "",
		"volume_capability", req.GetVolumeCapability() != nil); err != nil {
		return nil, err
	}
	m, err := nodeCapability(op, req.GetVolumeCapability())
	if err != nil {
		return nil, err
	}
	caps, err := n.s.caps(ctx)
	if err != nil {
		return nil, err
	}
	staging := ""
	if caps.Stage {
		staging = req.GetStagingTargetPath()
		if staging == "" {
			return nil, status.Errorf(codes.FailedPrecondition, "%s: staging_target_path is required: the driver stages volumes", op)
		}
	}
	err = n.s.p.Publish(ctx, volume.PublishRequest{
		VolumeID:    req.GetVolumeId(),
		StagingPath: staging,
		TargetPath:  req.GetTargetPath(),
		ReadOnly:    req.GetReadonly() || m == volume.SingleNodeReaderOnly,
		Access:      m,
		Context:     req.GetVolumeContext(),
	})
	if err != nil {
		return nil, err
	}
	return &csipb.NodePublishVolumeResponse{}, nil
}

func (n node) NodeUnpublishVolume(ctx context.Context, req *csipb.NodeUnpublishVolumeRequest) (*csipb.NodeUnpublishVolumeResponse, error) {
	const op = "NodeUnpublishVolume"
	if err := required(op, "volume_id", req.GetVolumeId() != "", "target_path", req.GetTargetPath() != ""); err != nil {
		return nil, err
	}
	if err := n.s.p.Unpublish(ctx, req.GetVolumeId(), req.GetTargetPath()); err != nil {
		return nil, err
	}
	return &csipb.NodeUnpublishVolumeResponse{}, nil
}

// NodeGetVolumeStats answers NOT_FOUND for a path that does not exist, as
// the spec asks for a volume that "does not exist on the specified
// volume_path"; the provider tells an unknown volume.
func (n node) NodeGetVolumeStats(ctx context.Context, req *csipb.NodeGetVolumeStatsRequest) (*csipb.NodeGetVolumeStatsResponse, error) {
	const op = "NodeGetVolumeStats"
	if err := required(op, "volume_id", req.GetVolumeId() != "", "volume_path", req.GetVolumePath() != ""); err != nil {
		return nil, err
	}
	caps, err := n.s.caps(ctx)
	if err != nil {
		return nil, err
	}
	if !caps.Stats {
		return nil, status.Errorf(codes.Unimplemented, "%s: the driver does not report volume statistics", op)
	}
	path := req.GetVolumePath()
	if !filepath.IsAbs(path) {
		return nil, status.Errorf(codes.NotFound, "%s: volume %q is not published or staged at %q: not an absolute path", op, req.GetVolumeId(), path)
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, status.Errorf(codes.NotFound, "%s: volume %q is not published or staged at %q: no such path", op, req.GetVolumeId(), path)
	}
	st, err := n.s.p.Stats(ctx, req.GetVolumeId(), path)
	if err != nil {
		return nil, err
	}
	resp := &csipb.NodeGetVolumeStatsResponse{Usage: []*csipb.VolumeUsage{{
		Unit:      csipb.VolumeUsage_BYTES,
		Total:     known(st.CapacityBytes),
		Available: known(st.AvailableBytes),
		Used:      known(st.UsedBytes),
	}}}
	if st.Inodes >= 0 {
		resp.Usage = append(resp.Usage, &csipb.VolumeUsage{
			Unit:      csipb.VolumeUsage_INODES,
			Total:     st.Inodes,
			Available: known(st.InodesFree),
			Used:      known(st.InodesUsed),
		})
	}
	return resp, nil
}

// known returns n, or 0 (CSI's "not set") for the contract's unknown -1.
func known(n int64) int64 {
	return max(n, 0)
}

func (n node) NodeGetCapabilities(ctx context.Context, _ *csipb.NodeGetCapabilitiesRequest) (*csipb.NodeGetCapabilitiesResponse, error) {
	caps, err := n.s.caps(ctx)
	if err != nil {
		return nil, err
	}
	var types []csipb.NodeServiceCapability_RPC_Type
	if caps.Stage {
		types = append(types, csipb.NodeServiceCapability_RPC_STAGE_UNSTAGE_VOLUME)
	}
	if caps.Stats {
		types = append(types, csipb.NodeServiceCapability_RPC_GET_VOLUME_STATS)
	}
	if _, ok := n.s.p.(volume.Expander); ok {
		types = append(types, csipb.NodeServiceCapability_RPC_EXPAND_VOLUME)
	}
	resp := &csipb.NodeGetCapabilitiesResponse{Capabilities: []*csipb.NodeServiceCapability{}}
	for _, t := range types {
		resp.Capabilities = append(resp.Capabilities, &csipb.NodeServiceCapability{
			Type: &csipb.NodeServiceCapability_Rpc{Rpc: &csipb.NodeServiceCapability_RPC{Type: t}},
		})
	}
	return resp, nil
}

func (n node) NodeGetInfo(context.Context, *csipb.NodeGetInfoRequest) (*csipb.NodeGetInfoResponse, error) {
	id := n.s.opts.NodeID
	if id == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, status.Errorf(codes.Internal, "NodeGetInfo: no node ID configured and no host name: %v", err)
		}
		id = h
	}
	return &csipb.NodeGetInfoResponse{NodeId: id}, nil
}
