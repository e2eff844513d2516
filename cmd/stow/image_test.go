package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/runtime/container"
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

// TestImageRemoveInUse: image rm refuses an image that containers were
// made from, naming them; -f overrides stopped containers only; a second
// name of the same image can go.
func TestImageRemoveInUse(t *testing.T) {
	root := t.TempDir()
	env := map[string]string{"STOW_ROOT": root}
	tarball := rootfsTar(t, "hello")
	out, errOut, code := stow(t, env, "image", "import", tarball, "base:1")
	if code != 0 {
		t.Fatalf("import: %q %d", errOut, code)
	}
	id := strings.TrimSpace(out)
	if _, errOut, code := stow(t, env, "image", "import", rootfsTar(t, "other"), "other"); code != 0 {
		t.Fatalf("import other: %q", errOut)
	}
	cs, err := container.OpenStore(root)
	if err != nil {
		t.Fatal(err)
	}
	// Containers as stow run records them: web runs on base:1, done and
	// old have exited, and x was made from another image.
	add := func(name, img, imgID string, status container.Status) {
		t.Helper()
		c, err := cs.Create(container.Config{ID: container.NewID(), Name: name, Image: img, ImageID: imgID,
			Args: []string{"true"}, Created: time.Now().UTC()})
		if err != nil {
			t.Fatal(err)
		}
		st := c.State
		st.Status = status
		if err := cs.SaveState(c.ID(), st); err != nil {
			t.Fatal(err)
		}
	}
	add("web", "base:1", id, container.Running)
	add("done", "base:1", id, container.Exited)
	add("old", "base:1", "", container.Exited) // recorded without an image ID
	add("x", "other:latest", "sha256:"+strings.Repeat("0", 64), container.Exited)

	tests := []struct {
		name    string
		args    []string
		running container.Status // web's status before the step
		out     string
		errText string
	}{
		{"running container refuses", []string{"image", "rm", "base:1"}, container.Running, "",
			"stow: image base:1: in use by running container web (stop and remove it first; -f never removes the image of a running container)\n"},
		{"even with -f", []string{"image", "rm", "-f", "base:1"}, container.Running, "",
			"stow: image base:1: in use by running container web (stop and remove it first; -f never removes the image of a running container)\n"},
		{"created counts as running", []string{"image", "rm", "--force", "base:1"}, container.Created, "",
			"stow: image base:1: in use by running container web (stop and remove it first; -f never removes the image of a running container)\n"},
		{"stopped containers refuse", []string{"image", "rm", "base:1"}, container.Exited, "",
			"stow: image base:1: in use by containers web, done, old (remove them first with 'stow rm', or remove the image anyway with -f)\n"},
		{"other images go", []string{"image", "rm", "other"}, container.Exited, "other\n", ""},
		{"missing image", []string{"image", "rm", "nope"}, container.Exited, "",
			"stow: image nope:latest: not found (list images with 'stow images', import one with 'stow image import PATH NAME')\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := cs.Get("web")
			if err != nil {
				t.Fatal(err)
			}
			c.State.Status = tt.running
			if err := cs.SaveState(c.ID(), c.State); err != nil {
				t.Fatal(err)
			}
			out, errOut, code := stow(t, env, tt.args...)
			if out != tt.out || errOut != tt.errText || (code == 0) != (tt.errText == "") {
				t.Errorf("stow %s: %q %q exit %d\nwant %q %q", strings.Join(tt.args, " "), out, errOut, code, tt.out, tt.errText)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(root, "images", "base:1.json")); err != nil {
		t.Fatalf("refused removals removed the image: %v", err)
	}

	// A second name of the same image is only a name: it goes, and base:1
	// is still refused.
	if _, errOut, code := stow(t, env, "image", "import", tarball, "base:2"); code != 0 {
		t.Fatalf("import base:2: %q", errOut)
	}
	if out, errOut, code := stow(t, env, "image", "rm", "base:2"); code != 0 || out != "base:2\n" {
		t.Errorf("rm of a second name: %q %q %d", out, errOut, code)
	}
	if _, errOut, code := stow(t, env, "image", "rm", "base:1"); code != 1 || !strings.Contains(errOut, "in use by containers web, done, old") {
		t.Errorf("rm after dropping the second name: %q %d", errOut, code)
	}

	// -f removes the image of stopped containers, and its layer.
	if out, errOut, code := stow(t, env, "image", "rm", "-f", "base:1"); code != 0 || out != "base:1\n" || errOut != "" {
		t.Errorf("rm -f: %q %q %d", out, errOut, code)
	}
	if out, _, _ := stow(t, env, "images", "--format", "json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("images after rm -f: %q", out)
	}
	if layers, _ := filepath.Glob(filepath.Join(root, "layers", "sha256", "*.json")); len(layers) != 0 {
		t.Errorf("layers left: %v", layers)
	}
}
