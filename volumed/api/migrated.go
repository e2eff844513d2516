package api

// MigratedRequest marks a volume as migrated to another host
// (POST /v1/volumes/{name}/migrated).
type MigratedRequest struct {
	// To names the target, e.g. ssh://hostb/?volume=db; it must hold no
	// secrets.
	To string `json:"to"`
}
