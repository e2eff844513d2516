package manager

import (
	"context"
	"fmt"
	"strings"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/volumed/api"
)

// MarkMigrated records that the named volume was migrated to another host,
// named by to: from then on it mounts read-only, and it stays so until it
// is removed. It refuses while the volume is mounted (ErrInUse), since a
// mount made before would stay writable. Marking again replaces to.
func (m *Manager) MarkMigrated(ctx context.Context, name, to string) (api.Volume, error) {
	if strings.TrimSpace(to) == "" {
		return api.Volume{}, fmt.Errorf("mark volume %q migrated: %w: empty target", name, volume.ErrInvalid)
	}
	rec, unlock, err := m.lockRecord(ctx, "mark volume migrated", name)
	if err != nil {
		return api.Volume{}, err
	}
	defer unlock()
	if n := rec.MountCount(); n > 0 || rec.Published {
		return api.Volume{}, fmt.Errorf("mark volume %q migrated: %w by %d %s", name, volume.ErrInUse, n, plural(n, "mount", "mounts"))
	}
	rec.MigratedTo = to
	if err := m.save(rec); err != nil {
		return api.Volume{}, fmt.Errorf("mark volume %q migrated: %w", name, err)
	}
	m.log.Info("volume migrated", "volume", name, "to", to)
	return m.apiVolume(rec), nil
}
