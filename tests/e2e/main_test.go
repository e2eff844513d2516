// Package e2e_test runs stowage end to end: the volumed and stow binaries
// built from this module, against a private dockerd. The tests need root and
// the packages of tests/scripts/deps.sh; they skip without them unless
// STOWAGE_E2E_REQUIRED=1.
package e2e_test

import (
	"encoding/json"
	"testing"

	"github.com/stowage/stowage/tests/e2e/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// dockerVolume is the part of `docker volume inspect` the tests read.
type dockerVolume struct {
	Name       string
	Driver     string
	Mountpoint string
	Status     map[string]any
}

// inspectDockerVolume returns `docker volume inspect NAME`.
func inspectDockerVolume(t *testing.T, d *harness.Docker, name string) dockerVolume {
	t.Helper()
	var vols []dockerVolume
	out := d.Must("volume", "inspect", name)
	if err := json.Unmarshal([]byte(out), &vols); err != nil || len(vols) != 1 {
		t.Fatalf("docker volume inspect %s: %v\n%s", name, err, out)
	}
	return vols[0]
}

// runArgs returns the arguments of `docker run` for a container without
// network that mounts volume vol at /data.
func runArgs(image, vol string, extra ...string) []string {
	args := []string{"run", "--network", "none", "-v", vol + ":/data"}
	return append(args, append(extra, image)...)
}
