package e2e_test

import (
	"testing"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// TestDockerHarness checks the harness itself: a private dockerd runs a
// container of the imported busybox image.
func TestDockerHarness(t *testing.T) {
	testenv.Require(t, "root", "dockerd", "busybox")
	d := harness.StartDockerd(t)
	image := harness.ImportBusybox(t, d.Host)
	if got := d.Must("run", "--rm", "--network", "none", image, "sh", "-c", "echo ok"); got != "ok" {
		t.Fatalf("container printed %q, want ok", got)
	}
	if got := d.Must("run", "--rm", "--network", "none", image, "true"); got != "" {
		t.Fatalf("true printed %q", got)
	}
}
