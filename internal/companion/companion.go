// Package companion finds the programs installed with stow: stow-init, which
// runs inside new containers, and stow-provider, which serves providers over
// CSI. They live beside the executable that looks for them, or in
// ../libexec/stowage/ from its directory.
package companion

import (
	"fmt"
	"os"
	"path/filepath"
)

// FindFrom returns the path of the program name installed with the
// executable exe, or "" when there is none.
func FindFrom(exe, name string) string {
	dir := filepath.Dir(exe)
	for _, p := range []string{filepath.Join(dir, name), filepath.Join(dir, "..", "libexec", "stowage", name)} {
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Find returns the path of the program name installed with the running
// executable, or an error that says where it was looked for.
func Find(name string) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find %s: %w", name, err)
	}
	if p := FindFrom(exe, name); p != "" {
		return p, nil
	}
	dir := filepath.Dir(exe)
	return "", fmt.Errorf("%s is not installed: looked in %s and %s (make build puts it beside stow)",
		name, dir, filepath.Join(dir, "..", "libexec", "stowage"))
}
