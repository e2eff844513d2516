package bench_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/tests/e2e/harness"
	"github.com/stowage/stowage/volumed/api"
)

// sidecarProvider is the name of the provider startSidecarVolumed
// configures: the local provider as a sidecar container.
const sidecarProvider = "side"

// startSidecarVolumed starts volumed with its built-in local provider and,
// as provider "side", the local provider as a CSI sidecar container run by
// the bundled runtime from the image tests/scripts/provider-image.sh builds,
// and waits until the sidecar is up. Its cleanups stop volumed, remove the
// sidecar's container and release what is left.
func startSidecarVolumed(b *testing.B, bins harness.Binaries, args ...string) *harness.Volumed {
	b.Helper()
	// Not b.TempDir: the sidecar's socket path must stay below 108 bytes.
	base, err := os.MkdirTemp("", "stowage-bsc-")
	if err != nil {
		b.Fatal(err)
	}
	var (
		root    = filepath.Join(base, "root")    // volumed's root, the sidecar's mount_dir
		rtRoot  = filepath.Join(base, "runtime") // the sidecar's runtime root
		sockDir = filepath.Join(base, "csi")
		dataDir = filepath.Join(base, "data")
	)
	stow := func(args ...string) ([]byte, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		return exec.CommandContext(ctx, bins.Stow, append([]string{"--root", rtRoot}, args...)...).CombinedOutput()
	}
	// Cleanups run in reverse: volumed stops (and leaves its sidecar
	// running, by design), then the sidecar goes, then what is left.
	b.Cleanup(func() {
		harness.Sweep(b, base)
		if err := os.RemoveAll(base); err != nil {
			b.Errorf("remove %s: %v", base, err)
		}
	})
	b.Cleanup(func() {
		if out, err := stow("rm", "-f", "stowage-sidecar-"+sidecarProvider); err != nil && !strings.Contains(string(out), "not found") {
			b.Errorf("stow rm -f the sidecar: %v\n%s", err, out)
		}
	})
	if err := os.Mkdir(rtRoot, 0o755); err != nil {
		b.Fatal(err)
	}
	tarball := filepath.Join(base, "provider-image.tar")
	script := filepath.Join("..", "scripts", "provider-image.sh")
	provider := filepath.Join(filepath.Dir(bins.Stow), "stow-provider")
	if out, err := exec.Command(script, tarball, provider).CombinedOutput(); err != nil {
		b.Fatalf("%s: %v\n%s", script, err, out)
	}
	if out, err := stow("image", "import", tarball, "stowage-provider"); err != nil {
		b.Fatalf("stow image import: %v\n%s", err, out)
	}
	config := filepath.Join(base, "volumed.toml")
	text := fmt.Sprintf(`[providers.%s]
type = "sidecar"
image = "stowage-provider"
command = ["stow-provider", "local", "--endpoint", "unix:///csi/csi.sock", "--root", "/data", "--log-level", "warn"]
stow = %q
runtime_root = %q
socket_dir = %q
data_dir = %q
`, sidecarProvider, bins.Stow, rtRoot, sockDir, dataDir)
	if err := os.WriteFile(config, []byte(text), 0o644); err != nil {
		b.Fatal(err)
	}
	v := harness.StartVolumed(b, bins, append([]string{"--config", config, "--root", root}, args...)...)
	err = harness.Poll(60*time.Second, func() error {
		r := v.Stow("--format", "json", "provider", "ls")
		if r.Code != 0 {
			return fmt.Errorf("stow provider ls: %s", r)
		}
		var ps []api.Provider
		if err := json.Unmarshal([]byte(r.Stdout), &ps); err != nil {
			return fmt.Errorf("decode stow provider ls: %v", err)
		}
		for _, p := range ps {
			if p.Name == sidecarProvider && p.State == api.ProviderUp {
				return nil
			}
		}
		return fmt.Errorf("provider %s is not up: %s", sidecarProvider, r.Stdout)
	})
	if err != nil {
		b.Fatal(err)
	}
	return v
}
