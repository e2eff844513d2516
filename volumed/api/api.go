// Package api holds the types of volumed's control API, the JSON that the
// daemon serves on its API socket and that the client and the stow command
// read, and the mapping between wire error classes and the error classes of
// plugins/volume.
package api

import "time"

// Volume states.
const (
	// StateCreating: the provider is creating the volume, or volumed stopped
	// while it was; the next Create of the same name finishes the job.
	StateCreating = "creating"
	// StateReady: the volume can be mounted.
	StateReady = "ready"
	// StateRemoving: the provider is deleting the volume, or volumed stopped
	// while it was; the next Remove finishes the job.
	StateRemoving = "removing"
)

// Volume is a volume as volumed knows it.
type Volume struct {
	Name     string `json:"name"`
	Provider string `json:"provider"`
	// ID is the provider's ID of the volume.
	ID    string `json:"id"`
	State string `json:"state"`
	// CapacityBytes is the size the provider gave the volume; 0 when the
	// volume has no fixed size.
	CapacityBytes int64             `json:"capacity_bytes"`
	Options       map[string]string `json:"options,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
	// Mountpoint is where the volume is mounted on this host; empty while
	// nothing mounts it.
	Mountpoint string `json:"mountpoint,omitempty"`
	// Mounts is the number of active mounts (the sum of MountIDs).
	Mounts int `json:"mounts"`
	// MountIDs counts mounts per mount ID; a mount ID may hold several.
	MountIDs map[string]int `json:"mount_ids,omitempty"`
	// MigratedTo is where `stow migrate` moved the volume (a URL without
	// secrets); such a volume mounts read-only until it is removed.
	MigratedTo string `json:"migrated_to,omitempty"`
}

// Provider is a storage provider volumed supervises.
type Provider struct {
	Name string `json:"name"`
	// Kind says where it runs: "builtin" (inside volumed), "csi" (a CSI
	// driver at an endpoint), "sidecar" (a CSI driver in a container that
	// volumed runs).
	Kind string `json:"kind"`
	// Driver and Version are what the provider reports of itself.
	Driver  string `json:"driver"`
	Version string `json:"version"`
	// State is one of the Provider states: "up" or "down" from the last
	// probe, or for a sidecar "starting", "restarting" or "failed" while
	// volumed brings it up.
	State string `json:"state"`
	// LastError is the last probe error, or what took a sidecar down or
	// kept it from starting; empty while up.
	LastError string `json:"last_error,omitempty"`
	// Restarts counts how often volumed restarted a sidecar since it
	// started; 0 for other kinds.
	Restarts  int       `json:"restarts"`
	CheckedAt time.Time `json:"checked_at"`
	Volumes   int       `json:"volumes"`
}

// Provider states.
const (
	ProviderUp   = "up"
	ProviderDown = "down"
	// ProviderStarting: volumed is starting the sidecar for the first time.
	ProviderStarting = "starting"
	// ProviderRestarting: the sidecar went down and volumed is bringing it
	// back; new mounts wait for it (bounded by their deadline).
	ProviderRestarting = "restarting"
	// ProviderFailed: the sidecar failed to start several times in a row;
	// volumed keeps trying, but new mounts fail at once.
	ProviderFailed = "failed"
)

// Status describes the daemon.
type Status struct {
	Version      string     `json:"version"`
	PID          int        `json:"pid"`
	StartedAt    time.Time  `json:"started_at"`
	Root         string     `json:"root"`
	PluginSocket string     `json:"plugin_socket"`
	APISocket    string     `json:"api_socket"`
	MetricsAddr  string     `json:"metrics_addr"`
	Volumes      int        `json:"volumes"`
	MountsActive int        `json:"mounts_active"`
	Providers    []Provider `json:"providers"`
}

// CreateRequest asks for a new volume.
type CreateRequest struct {
	Name    string            `json:"name"`
	Options map[string]string `json:"options,omitempty"`
}

// Error is the body of every failed control API request.
type Error struct {
	// Message is safe to show to users.
	Message string `json:"message"`
	// Class is one of the Class constants.
	Class string `json:"class"`
}

// Error classes on the wire, one per class of plugins/volume.
const (
	ClassNotFound     = "not_found"
	ClassExists       = "exists"
	ClassInUse        = "in_use"
	ClassInvalid      = "invalid"
	ClassUnavailable  = "unavailable"
	ClassNotSupported = "not_supported"
	ClassInternal     = "internal"
)
