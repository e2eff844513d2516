// Package volume is the provider contract of stowage: the Provider interface
// that every storage backend implements, the requests it takes, the error
// classes it returns and the optional abilities a provider may have.
//
// The contract mirrors the CSI lifecycle so that a CSI driver can sit behind
// it and any Provider can be served as a CSI driver:
//
//	Create -> [Stage] -> Publish ... Unpublish -> [Unstage] -> Delete
//
// Create and Delete act on the backend (CSI controller service). Stage makes a
// volume available once per host at a staging path (needed only when
// Capabilities.Stage is set); Publish makes it available at a target path for
// consumers (CSI node service). The orchestrator (volumed) chooses the paths
// and keeps the reference counts; providers keep none.
//
// Every method is idempotent: repeating a call that succeeded succeeds again
// and changes nothing. Every method takes a context first and returns early
// with the context's error when it is done. Errors carry one of the classes
// below, tested with errors.Is.
//
// This package imports only the standard library.
package volume

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Error classes. Providers wrap them with %w, keeping their own cause.
var (
	// ErrNotFound means the volume (or another named object) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrExists means an object of that name exists with other properties.
	ErrExists = errors.New("already exists")
	// ErrInUse means the object is busy, for example mounted.
	ErrInUse = errors.New("in use")
	// ErrInvalid means the request itself is wrong; retrying cannot help.
	ErrInvalid = errors.New("invalid argument")
	// ErrUnavailable means the backend cannot serve now; a retry may succeed.
	ErrUnavailable = errors.New("unavailable")
	// ErrNotSupported means the provider does not offer the operation.
	ErrNotSupported = errors.New("not supported")
)

// Info describes a provider (CSI GetPluginInfo).
type Info struct {
	// Name is the provider's driver name, for example "stowage.local".
	Name string `json:"name"`
	// Version is the provider's version string.
	Version string `json:"version"`
}

// Capabilities says which optional steps a provider needs or offers.
type Capabilities struct {
	// Stage is set when the provider needs Stage before Publish and Unstage
	// after the last Unpublish on a host (CSI STAGE_UNSTAGE_VOLUME).
	Stage bool `json:"stage"`
	// Stats is set when Stats answers (CSI GET_VOLUME_STATS).
	Stats bool `json:"stats"`
	// Clone is set when Create accepts a Source naming a volume, copying
	// it (CSI CLONE_VOLUME). A snapshot as Source needs a Snapshotter.
	Clone bool `json:"clone,omitempty"`
}

// AccessMode says how a volume is used on a host.
type AccessMode int

// Access modes, after CSI's VolumeCapability.AccessMode.
const (
	// SingleNodeWriter: read-write on one host at a time.
	SingleNodeWriter AccessMode = iota
	// SingleNodeReaderOnly: read-only on one host.
	SingleNodeReaderOnly
	// MultiNodeReaderOnly: read-only on many hosts.
	MultiNodeReaderOnly
	// MultiNodeMultiWriter: read-write on many hosts at once.
	MultiNodeMultiWriter
)

// String returns the access mode's name.
func (m AccessMode) String() string {
	switch m {
	case SingleNodeWriter:
		return "single-node-writer"
	case SingleNodeReaderOnly:
		return "single-node-reader-only"
	case MultiNodeReaderOnly:
		return "multi-node-reader-only"
	case MultiNodeMultiWriter:
		return "multi-node-multi-writer"
	}
	return fmt.Sprintf("access-mode(%d)", int(m))
}

// CreateRequest asks for a new volume (CSI CreateVolume).
type CreateRequest struct {
	// Name is the orchestrator's name of the volume. Creating the same
	// name twice with the same request returns the same volume.
	Name string
	// CapacityBytes is the requested size; 0 leaves it to the provider.
	CapacityBytes int64
	// Parameters are the provider's own options. A provider rejects
	// unknown keys with ErrInvalid and names the keys it accepts.
	Parameters map[string]string
	// Source, when set, is what the new volume starts from (CSI
	// VolumeContentSource). A provider that cannot fill a volume from a
	// source returns ErrNotSupported; an unknown source is ErrNotFound.
	Source *Source
}

// Source is the content a new volume starts from: exactly one of its fields
// is set.
type Source struct {
	// SnapshotID is a snapshot of the same provider (a clone of it).
	SnapshotID string `json:"snapshot_id,omitempty"`
	// VolumeID is a volume of the same provider (a copy of it).
	VolumeID string `json:"volume_id,omitempty"`
}

// Volume is a volume as the provider created it.
type Volume struct {
	// ID is the provider's identifier, used in every later call.
	ID string `json:"id"`
	// CapacityBytes is the size the provider gave it; 0 when unbounded.
	CapacityBytes int64 `json:"capacity_bytes"`
	// Context is opaque data the orchestrator keeps and passes back to
	// Stage and Publish (CSI volume_context).
	Context map[string]string `json:"context,omitempty"`
}

// StageRequest makes a volume available once on this host (CSI
// NodeStageVolume).
type StageRequest struct {
	VolumeID    string
	StagingPath string // an existing directory chosen by the orchestrator
	Access      AccessMode
	Context     map[string]string
}

// PublishRequest makes a volume available at a target path (CSI
// NodePublishVolume).
type PublishRequest struct {
	VolumeID    string
	StagingPath string // empty when the provider does not stage
	TargetPath  string // the provider creates it if missing
	ReadOnly    bool
	Access      AccessMode
	Context     map[string]string
}

// Stats are the usage figures of a published volume (CSI
// NodeGetVolumeStats). Figures a provider cannot tell are -1.
type Stats struct {
	CapacityBytes  int64 `json:"capacity_bytes"`
	AvailableBytes int64 `json:"available_bytes"`
	UsedBytes      int64 `json:"used_bytes"`
	Inodes         int64 `json:"inodes"`
	InodesFree     int64 `json:"inodes_free"`
	InodesUsed     int64 `json:"inodes_used"`
}

// Provider is a storage backend.
type Provider interface {
	// Info returns the provider's name and version.
	Info(ctx context.Context) (Info, error)
	// Capabilities says which optional steps the provider needs or offers.
	Capabilities(ctx context.Context) (Capabilities, error)
	// Probe returns nil when the provider can serve, ErrUnavailable (with
	// the cause) when it cannot.
	Probe(ctx context.Context) error

	// Create creates a volume, or returns the existing one when a volume of
	// that name exists with the same capacity and parameters. It returns
	// ErrExists when the name exists with others, ErrInvalid for bad
	// parameters, naming the accepted ones.
	Create(ctx context.Context, req CreateRequest) (Volume, error)
	// Delete removes a volume and its data. Deleting a missing volume
	// succeeds. The orchestrator never deletes a staged or published
	// volume; a provider that notices one returns ErrInUse.
	Delete(ctx context.Context, volumeID string) error

	// Stage makes the volume available at req.StagingPath. Called once per
	// host before the first Publish when Capabilities.Stage is set. It
	// returns ErrNotFound for an unknown volume.
	Stage(ctx context.Context, req StageRequest) error
	// Unstage undoes Stage. Unstaging what is not staged succeeds.
	Unstage(ctx context.Context, volumeID, stagingPath string) error
	// Publish makes the volume available at req.TargetPath. It returns
	// ErrNotFound for an unknown volume.
	Publish(ctx context.Context, req PublishRequest) error
	// Unpublish undoes Publish and removes the target path. Unpublishing
	// what is not published succeeds.
	Unpublish(ctx context.Context, volumeID, targetPath string) error

	// Stats returns usage figures of the volume published or staged at
	// path. It returns ErrNotFound for an unknown volume and
	// ErrNotSupported when Capabilities.Stats is not set.
	Stats(ctx context.Context, volumeID, path string) (Stats, error)
}

// Lister is a provider that can list its volumes (CSI ListVolumes). volumed
// uses it at start to compare its records with the provider's.
type Lister interface {
	List(ctx context.Context) ([]Volume, error)
}

// ExpandRequest asks to grow a volume (CSI ControllerExpandVolume and
// NodeExpandVolume together).
type ExpandRequest struct {
	VolumeID      string
	CapacityBytes int64
	// StagingPath is where the volume is staged on this host, and
	// TargetPath one place it is published; both are empty when the volume
	// is not in use here. A provider with a filesystem grows it online
	// through them, or at the next Stage when they are empty.
	StagingPath string
	TargetPath  string
}

// Expander is a provider that can grow a volume. Expand returns the new
// capacity, which is at least the one asked for. Asking for less than the
// current capacity is ErrInvalid (volumes never shrink); asking for the
// current capacity succeeds and changes nothing.
type Expander interface {
	Expand(ctx context.Context, req ExpandRequest) (int64, error)
}

// Snapshot is a point-in-time copy of a volume (CSI Snapshot).
type Snapshot struct {
	// ID is the provider's identifier of the snapshot.
	ID string `json:"id"`
	// SourceVolumeID is the volume it was taken of.
	SourceVolumeID string `json:"source_volume_id"`
	// CreatedAt is when it was taken.
	CreatedAt time.Time `json:"created_at"`
	// SizeBytes is the size of the volume when it was taken; 0 when unknown.
	SizeBytes int64 `json:"size_bytes"`
	// ReadyToUse is set once a volume can be created from it.
	ReadyToUse bool `json:"ready_to_use"`
}

// Snapshotter is a provider that takes snapshots (CSI CreateSnapshot,
// DeleteSnapshot, ListSnapshots). Volumes are created from a snapshot with
// CreateRequest.Source.
type Snapshotter interface {
	// CreateSnapshot takes a snapshot called name of a volume. Taking the
	// same name of the same volume again returns the existing snapshot;
	// the name taken for another volume is ErrExists.
	CreateSnapshot(ctx context.Context, volumeID, name string) (Snapshot, error)
	// DeleteSnapshot removes a snapshot. Deleting a missing one succeeds;
	// one that volumes still depend on is ErrInUse.
	DeleteSnapshot(ctx context.Context, snapshotID string) error
	// ListSnapshots lists the snapshots of a volume, or of every volume
	// when volumeID is empty.
	ListSnapshots(ctx context.Context, volumeID string) ([]Snapshot, error)
}

// Unlocker is a provider that lets one host write a volume at a time and
// can break the lock of a host that died. Stage of a volume that another
// host holds read-write returns ErrInUse naming the holder.
type Unlocker interface {
	// Unlock breaks the write lock on the volume and fences its holder,
	// so that it can no longer write, and returns a description of the
	// holder it broke ("" when the volume was not locked). It is the
	// operator's explicit choice: volumed never calls it on its own.
	Unlock(ctx context.Context, volumeID string) (holder string, err error)
}

// CheckParameters returns an ErrInvalid error when params has a key that is
// not in valid. The error names the unknown keys and lists the valid ones.
func CheckParameters(params map[string]string, valid ...string) error {
	ok := make(map[string]bool, len(valid))
	for _, k := range valid {
		ok[k] = true
	}
	var unknown []string
	for k := range params {
		if !ok[k] {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	v := append([]string(nil), valid...)
	sort.Strings(v)
	accepted := "none"
	if len(v) > 0 {
		accepted = strings.Join(v, ", ")
	}
	return fmt.Errorf("%w: unknown option %s (valid options: %s)",
		ErrInvalid, quoteJoin(unknown), accepted)
}

func quoteJoin(s []string) string {
	q := make([]string, len(s))
	for i, x := range s {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}
