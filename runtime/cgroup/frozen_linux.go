package cgroup

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/stowage/stowage/plugins/volume"
)

// Frozen reports whether the group is frozen or being frozen: what Freeze
// asked for and Thaw has not undone yet.
func (g *Group) Frozen() (bool, error) {
	var file, thawed string
	if g.tree.version == 2 {
		file, thawed = filepath.Join(g.dirs[""], "cgroup.freeze"), "0"
	} else {
		dir, ok := g.dirs["freezer"]
		if !ok {
			return false, fmt.Errorf("cgroup %s: no freezer controller: %w", g.name, volume.ErrNotSupported)
		}
		file, thawed = filepath.Join(dir, "freezer.state"), "THAWED"
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return false, fmt.Errorf("read freezer state of cgroup %s: %w", g.name, err)
	}
	return strings.TrimSpace(string(b)) != thawed, nil
}
