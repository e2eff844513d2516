package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rootfsTar writes a small rootfs tarball and returns its path.
func rootfsTar(t *testing.T, content string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "etc/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "etc/motd", Mode: 0o644, Size: int64(len(content))},
	} {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
	}
	tw.Write([]byte(content))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestImageCommands(t *testing.T) {
	root := t.TempDir()
	env := map[string]string{"STOW_ROOT": root}
	out, errOut, code := stow(t, env, "image", "import", rootfsTar(t, "hello"), "base:1")
	if code != 0 || !strings.HasPrefix(out, "sha256:") || errOut != "" {
		t.Fatalf("import: %q %q %d", out, errOut, code)
	}
	id := strings.TrimSpace(out)
	// --root wins over STOW_ROOT.
	other := t.TempDir()
	if _, errOut, code := stow(t, env, "--root", other, "image", "import", rootfsTar(t, "other"), "other"); code != 0 {
		t.Fatalf("import --root: %q", errOut)
	}
	if _, err := os.Stat(filepath.Join(other, "images", "other:latest.json")); err != nil {
		t.Errorf("--root: %v", err)
	}

	out, _, code = stow(t, env, "images")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 2 {
		t.Fatalf("images: %q", out)
	}
	if f := strings.Fields(lines[0]); strings.Join(f, " ") != "NAME ID LAYERS SIZE CREATED" {
		t.Errorf("header %q", lines[0])
	}
	if f := strings.Fields(lines[1]); len(f) != 5 || f[0] != "base:1" || f[1] != id[7:19] || f[2] != "1" || f[3] != "2.5KiB" {
		t.Errorf("row %q", lines[1])
	}

	out, _, code = stow(t, env, "image", "ls", "--format", "json")
	var views []struct {
		Name      string   `json:"name"`
		ID        string   `json:"id"`
		Layers    []string `json:"layers"`
		SizeBytes int64    `json:"size_bytes"`
		Config    struct {
			Cmd []string `json:"cmd"`
		} `json:"config"`
	}
	if err := json.Unmarshal([]byte(out), &views); err != nil || code != 0 {
		t.Fatalf("images --format json: %v %q", err, out)
	}
	if len(views) != 1 || views[0].ID != id || views[0].SizeBytes != 2560 || views[0].Config.Cmd[0] != "/bin/sh" {
		t.Errorf("json %+v", views)
	}

	_, errOut, code = stow(t, env, "image", "import", filepath.Join(root, "nothere"), "x")
	if code != 1 || !strings.Contains(errOut, "stow: import ") || !strings.Contains(errOut, "not found") {
		t.Errorf("import of a missing file: %q %d", errOut, code)
	}
	_, errOut, code = stow(t, env, "image", "import", rootfsTar(t, "x"), "Bad")
	if code != 1 || !strings.Contains(errOut, "NAME must match") {
		t.Errorf("import as a bad name: %q %d", errOut, code)
	}

	out, errOut, code = stow(t, env, "image", "rm", "base:1", "missing")
	if code != 1 || out != "base:1\n" || !strings.Contains(errOut, "image missing:latest: not found") {
		t.Errorf("rm: %q %q %d", out, errOut, code)
	}
	out, _, _ = stow(t, env, "images", "--format", "json")
	if strings.TrimSpace(out) != "[]" {
		t.Errorf("images after rm: %q", out)
	}
}
