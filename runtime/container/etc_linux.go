package container

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/runtime/container/initproc"
)

// etcFiles are the files of a container's /etc that the runtime writes
// into its directory and binds over the image's, as Docker does: the host
// name, the hosts table that resolves it, and the resolver configuration.
var etcFiles = []string{"hostname", "hosts", "resolv.conf"}

// hostsTemplate is the start of a container's /etc/hosts, Docker's; the
// container's host name follows, on an address of its loopback.
const hostsTemplate = `127.0.0.1	localhost
::1	localhost ip6-localhost ip6-loopback
fe00::0	ip6-localnet
ff00::0	ip6-mcastprefix
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
`

// hostResolvConf is the resolver configuration that a container on the
// host's network gets a copy of.
const hostResolvConf = "/etc/resolv.conf"

// writeEtc writes the container's /etc files into its directory and
// returns their binds, but for those a mount of the configuration covers
// (a volume on /etc, a bind of its own /etc/hosts).
func writeEtc(c Container, mounts []initproc.BindMount) ([]initproc.BindMount, error) {
	resolv := "# --net none: no name servers\n"
	if c.Config.Network == NetHost {
		b, err := os.ReadFile(hostResolvConf)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("copy the host's resolver configuration: %w", err)
		}
		resolv = string(b)
	}
	content := map[string]string{
		"hostname":    c.Config.Hostname + "\n",
		"hosts":       hostsTemplate + "127.0.1.1\t" + c.Config.Hostname + "\n",
		"resolv.conf": resolv,
	}
	var binds []initproc.BindMount
	for _, name := range etcFiles {
		target := "/etc/" + name
		if covered(target, mounts) {
			continue
		}
		file := filepath.Join(c.Dir, name)
		if err := os.WriteFile(file, []byte(content[name]), 0o644); err != nil {
			return nil, fmt.Errorf("write the container's %s: %w", target, err)
		}
		binds = append(binds, initproc.BindMount{Source: file, Target: target, File: true})
	}
	return binds, nil
}

// covered says whether one of mounts is on target or a directory above it.
func covered(target string, mounts []initproc.BindMount) bool {
	for _, m := range mounts {
		t := path.Clean(m.Target)
		if t == target || t == "/" || len(target) > len(t) && target[:len(t)+1] == t+"/" {
			return true
		}
	}
	return false
}

// initLayer returns the directory of the layer that every container's root
// has above its image's: the empty files that the /etc binds mount on, so
// that they exist in the root without being changes of the container (they
// would show in `stow diff` and go into `stow commit`). It is made once
// per runtime root.
func (e *Engine) initLayer() (string, error) {
	dir := filepath.Join(e.store.dir, ".init")
	if _, err := os.Lstat(filepath.Join(dir, "etc", etcFiles[len(etcFiles)-1])); err == nil {
		return dir, nil
	}
	tmp, err := os.MkdirTemp(e.store.dir, ".init-")
	if err != nil {
		return "", fmt.Errorf("make init layer: %w", err)
	}
	defer os.RemoveAll(tmp) // gone once renamed
	if err := os.Chmod(tmp, 0o755); err != nil {
		return "", fmt.Errorf("make init layer: %w", err)
	}
	if err := os.Mkdir(filepath.Join(tmp, "etc"), 0o755); err != nil {
		return "", fmt.Errorf("make init layer: %w", err)
	}
	for _, name := range etcFiles {
		if err := os.WriteFile(filepath.Join(tmp, "etc", name), nil, 0o644); err != nil {
			return "", fmt.Errorf("make init layer: %w", err)
		}
	}
	// Another process may have made it meanwhile: then its layer stays.
	if err := os.Rename(tmp, dir); err != nil && !errors.Is(err, fs.ErrExist) && !errors.Is(err, unix.ENOTEMPTY) {
		return "", fmt.Errorf("make init layer: %w", err)
	}
	return dir, nil
}
