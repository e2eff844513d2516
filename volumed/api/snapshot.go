package api

import "time"

// Snapshot states, as for volumes: StateCreating while the provider takes
// it (or volumed stopped while it did; taking it again finishes the job),
// StateReady, StateRemoving while the provider deletes it.

// Snapshot is a snapshot of a volume as volumed knows it.
type Snapshot struct {
	// Volume is the volume it was taken of and Name its name there; a
	// volume is created from it with the option from=VOLUME@NAME.
	Volume   string `json:"volume"`
	Name     string `json:"name"`
	Provider string `json:"provider"`
	// ID is the provider's ID of the snapshot.
	ID    string `json:"id"`
	State string `json:"state"`
	// SizeBytes is the volume's size when it was taken; 0 when unknown.
	SizeBytes int64 `json:"size_bytes"`
	// ReadyToUse is set once volumes can be created from it.
	ReadyToUse bool      `json:"ready_to_use"`
	CreatedAt  time.Time `json:"created_at"`
}

// SnapshotRequest asks for a snapshot of a volume.
type SnapshotRequest struct {
	Name string `json:"name"`
}

// ResizeRequest asks to grow a volume to Size, a size such as "2GiB".
type ResizeRequest struct {
	Size string `json:"size"`
}

// UnlockRequest asks to break a volume's write lock. Without Force volumed
// refuses and explains what unlocking does.
type UnlockRequest struct {
	Force bool `json:"force"`
}

// UnlockResult says whose write lock was broken.
type UnlockResult struct {
	Volume string `json:"volume"`
	// Holder describes the host whose lock was broken; empty when the
	// volume was not locked.
	Holder string `json:"holder"`
}
