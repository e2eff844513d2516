// Package csi makes the provider contract and the Container Storage Interface
// symmetric: Server serves any volume.Provider as a CSI driver (Identity,
// Controller and Node services on one gRPC endpoint), and Client uses any CSI
// driver endpoint as a volume.Provider, calling it the way a container
// orchestrator does.
//
// # What the server implements
//
// Identity: GetPluginInfo, GetPluginCapabilities (CONTROLLER_SERVICE) and
// Probe (ready when the provider's Probe succeeds; the provider's error
// otherwise, as the spec asks of an unhealthy plugin).
//
// Controller: CreateVolume, DeleteVolume, ValidateVolumeCapabilities,
// ListVolumes (when the provider is a volume.Lister, with max_entries and
// starting_token) and ControllerGetCapabilities. Volumes have the mount access
// type and a single-node access mode (SINGLE_NODE_WRITER,
// SINGLE_NODE_READER_ONLY, SINGLE_NODE_SINGLE_WRITER or
// SINGLE_NODE_MULTI_WRITER); the block access type and multi-node modes are
// refused. capacity_range.required_bytes becomes the request's capacity; a
// volume larger than limit_bytes is refused with OUT_OF_RANGE. The mount's
// fs_type and mount_flags are ignored: a provider chooses its file system
// from its parameters. Secrets are ignored and never logged.
// ControllerPublishVolume is not implemented.
//
// Optional abilities are advertised exactly when the provider has them.
// A volume.Snapshotter gives CREATE_DELETE_SNAPSHOT and LIST_SNAPSHOTS
// (with max_entries, starting_token and the snapshot_id and
// source_volume_id filters), Capabilities.Clone gives CLONE_VOLUME:
// CreateVolume's volume_content_source becomes CreateRequest.Source and is
// echoed as the volume's content_source; a source the provider cannot fill
// from is INVALID_ARGUMENT. A volume.Expander gives the controller's and the
// node's EXPAND_VOLUME and the plugin capability of ONLINE expansion:
// ControllerExpandVolume calls Expand without paths and answers
// node_expansion_required, NodeExpandVolume calls it with volume_path as
// the target path and staging_target_path (without capacity_range, the
// capacity the provider lists for the volume).
//
// A volume.Unlocker is served by one more service on the same endpoint,
// since CSI has no call to break a write lock. It is described by hand
// with well-known protobuf messages, so a client needs no generated code:
//
//	service stowage.csi.v1.Lock {
//	  rpc Unlock(google.protobuf.StringValue)  // the volume ID
//	      returns (google.protobuf.StringValue); // the holder broken, or ""
//	}
//
// Its errors are mapped like those of the CSI calls; a driver without it
// answers UNIMPLEMENTED.
//
// Node: NodeStageVolume and NodeUnstageVolume (when the provider stages),
// NodePublishVolume, NodeUnpublishVolume, NodeGetVolumeStats (when the
// provider answers Stats; NOT_FOUND when the path does not exist),
// NodeGetCapabilities and NodeGetInfo.
//
// Errors of the contract become gRPC codes: ErrNotFound NOT_FOUND, ErrExists
// ALREADY_EXISTS, ErrInUse FAILED_PRECONDITION, ErrInvalid INVALID_ARGUMENT,
// ErrUnavailable UNAVAILABLE, ErrNotSupported UNIMPLEMENTED, an expired
// context DEADLINE_EXCEEDED, anything else INTERNAL; the message is the
// provider's, which is safe to show.
//
// # What the client implements
//
// Client calls GetPluginInfo, NodeGetCapabilities, Probe, CreateVolume (mount
// access, SINGLE_NODE_WRITER, required_bytes), DeleteVolume, NodeStageVolume,
// NodeUnstageVolume, NodePublishVolume, NodeUnpublishVolume,
// NodeGetVolumeStats and ListVolumes; CreateSnapshot, DeleteSnapshot,
// ListSnapshots (every page), ControllerExpandVolume and NodeExpandVolume
// (when the volume is in use on this host and the controller asks for
// node expansion), and the lock service's Unlock, each when the driver
// advertises it (ErrNotSupported naming what is missing otherwise). When
// the driver has the controller
// capability PUBLISH_UNPUBLISH_VOLUME, the client calls
// ControllerPublishVolume for its node before NodeStageVolume (or
// NodePublishVolume when the driver does not stage) and passes the publish
// context on, and ControllerUnpublishVolume after NodeUnstageVolume (or
// NodeUnpublishVolume). gRPC codes become the contract's classes again (see
// Client), keeping the driver's message.
//
// # Endpoints
//
// An endpoint is a unix socket, written "unix:///abs/path" or "/abs/path".
package csi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	csipb "github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stowage/stowage/plugins/volume"
)

// maxSocketPath is the longest path a unix socket address holds (sun_path
// is 108 bytes with its terminating NUL on Linux).
const maxSocketPath = 107

// socketPath returns the file system path of an endpoint.
func socketPath(endpoint string) (string, error) {
	p := endpoint
	if rest, ok := strings.CutPrefix(endpoint, "unix://"); ok {
		p = rest
	} else if rest, ok := strings.CutPrefix(endpoint, "unix:"); ok {
		p = rest
	}
	switch {
	case p == "" || !filepath.IsAbs(p):
		return "", fmt.Errorf("%w: endpoint %q: want unix:///absolute/path or /absolute/path", volume.ErrInvalid, endpoint)
	case len(p) > maxSocketPath:
		return "", fmt.Errorf("%w: endpoint %q: a unix socket path has at most %d bytes", volume.ErrInvalid, endpoint, maxSocketPath)
	}
	return filepath.Clean(p), nil
}

// Listen listens on the unix socket of endpoint ("unix:///abs/path" or
// "/abs/path"), creating its directory if missing. A socket left by a process
// that is gone is removed; a socket that a process still answers on is
// refused with ErrInUse, and any other file with ErrExists. The socket gets
// mode 0660.
func Listen(endpoint string) (net.Listener, error) {
	path, err := socketPath(endpoint)
	if err != nil {
		return nil, err
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return nil, fmt.Errorf("%w: listen on %s: %w", volume.ErrUnavailable, path, err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("%w: listen on %s: %w", volume.ErrUnavailable, path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		return nil, fmt.Errorf("%w: listen on %s: %w", volume.ErrUnavailable, path, errors.Join(err, l.Close()))
	}
	return l, nil
}

// removeStale removes a socket at path that nobody listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: listen on %s: %w", volume.ErrUnavailable, path, err)
	}
	if fi.Mode().Type() != os.ModeSocket {
		return fmt.Errorf("%w: listen on %s: the path exists and is not a socket", volume.ErrExists, path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("%w: listen on %s: another process serves this socket", volume.ErrInUse, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w: listen on %s: check the existing socket: %w", volume.ErrUnavailable, path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: listen on %s: remove stale socket: %w", volume.ErrUnavailable, path, err)
	}
	return nil
}

// toStatus turns an error of the contract into a gRPC status error. The
// message is err's text, which providers keep free of secrets.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status, from the server's own checks
	}
	return status.Error(codeOf(err), err.Error())
}

// codeOf returns the gRPC code of an error of the contract.
func codeOf(err error) codes.Code {
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		return codes.Canceled
	case errors.Is(err, volume.ErrNotFound):
		return codes.NotFound
	case errors.Is(err, volume.ErrExists):
		return codes.AlreadyExists
	case errors.Is(err, volume.ErrInUse):
		return codes.FailedPrecondition
	case errors.Is(err, volume.ErrInvalid):
		return codes.InvalidArgument
	case errors.Is(err, volume.ErrUnavailable):
		return codes.Unavailable
	case errors.Is(err, volume.ErrNotSupported):
		return codes.Unimplemented
	}
	return codes.Internal
}

// classOf returns the contract's error class of a gRPC code.
func classOf(c codes.Code) error {
	switch c {
	case codes.NotFound:
		return volume.ErrNotFound
	case codes.AlreadyExists:
		return volume.ErrExists
	case codes.FailedPrecondition:
		return volume.ErrInUse
	case codes.InvalidArgument, codes.OutOfRange:
		return volume.ErrInvalid
	case codes.Unimplemented:
		return volume.ErrNotSupported
	}
	// Unavailable, DeadlineExceeded, ResourceExhausted, Aborted, Canceled
	// and the driver's own failures (Internal, Unknown, ...): a retry may
	// succeed.
	return volume.ErrUnavailable
}

// Access modes the server accepts, and what they mean to the contract.
var accessModes = map[csipb.VolumeCapability_AccessMode_Mode]volume.AccessMode{
	csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER:        volume.SingleNodeWriter,
	csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY:   volume.SingleNodeReaderOnly,
	csipb.VolumeCapability_AccessMode_SINGLE_NODE_SINGLE_WRITER: volume.SingleNodeWriter,
	csipb.VolumeCapability_AccessMode_SINGLE_NODE_MULTI_WRITER:  volume.SingleNodeWriter,
}

// csiMode returns the CSI access mode of a contract access mode.
func csiMode(m volume.AccessMode) csipb.VolumeCapability_AccessMode_Mode {
	switch m {
	case volume.SingleNodeReaderOnly:
		return csipb.VolumeCapability_AccessMode_SINGLE_NODE_READER_ONLY
	case volume.MultiNodeReaderOnly:
		return csipb.VolumeCapability_AccessMode_MULTI_NODE_READER_ONLY
	case volume.MultiNodeMultiWriter:
		return csipb.VolumeCapability_AccessMode_MULTI_NODE_MULTI_WRITER
	}
	return csipb.VolumeCapability_AccessMode_SINGLE_NODE_WRITER
}

// mountCapability returns a mount volume capability with access mode m.
func mountCapability(m volume.AccessMode) *csipb.VolumeCapability {
	return &csipb.VolumeCapability{
		AccessType: &csipb.VolumeCapability_Mount{Mount: &csipb.VolumeCapability_MountVolume{}},
		AccessMode: &csipb.VolumeCapability_AccessMode{Mode: csiMode(m)},
	}
}

// checkCapability returns the contract access mode of c, or a message
// saying why the server does not support c.
func checkCapability(c *csipb.VolumeCapability) (volume.AccessMode, string) {
	if c.GetBlock() != nil {
		return 0, "the block access type is not supported; use mount"
	}
	if c.GetMount() == nil {
		return 0, "the access type is missing; use mount"
	}
	mode := c.GetAccessMode().GetMode()
	m, ok := accessModes[mode]
	if !ok {
		return 0, fmt.Sprintf("access mode %s is not supported (supported: SINGLE_NODE_WRITER, SINGLE_NODE_READER_ONLY, SINGLE_NODE_SINGLE_WRITER, SINGLE_NODE_MULTI_WRITER)", mode)
	}
	return m, ""
}
