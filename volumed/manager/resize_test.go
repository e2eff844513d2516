package manager

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/plugins/volume/volumetest"
)

// growsAtStage is a provider that, like rbd's ext4 without
// CAP_SYS_RESOURCE, grows a volume at once but its mounted file system
// only at the next Stage: Stats reports the size the volume had when it
// was staged.
type growsAtStage struct {
	*volumetest.Fake

	mu     sync.Mutex       // guards staged
	staged map[string]int64 // file system size per staged volume ID
}

func (g *growsAtStage) Stage(ctx context.Context, req volume.StageRequest) error {
	if err := g.Fake.Stage(ctx, req); err != nil {
		return err
	}
	st, err := g.Fake.Stats(ctx, req.VolumeID, req.StagingPath)
	if err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.staged[req.VolumeID] = st.CapacityBytes
	return nil
}

func (g *growsAtStage) Unstage(ctx context.Context, volumeID, stagingPath string) error {
	if err := g.Fake.Unstage(ctx, volumeID, stagingPath); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.staged, volumeID)
	return nil
}

func (g *growsAtStage) Stats(ctx context.Context, volumeID, path string) (volume.Stats, error) {
	st, err := g.Fake.Stats(ctx, volumeID, path)
	g.mu.Lock()
	defer g.mu.Unlock()
	if c, ok := g.staged[volumeID]; ok {
		st.CapacityBytes = c
	}
	return st, err
}

// logBuffer collects a logger's lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// take returns the lines written since the last take.
func (b *logBuffer) take() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf.String()
	b.buf.Reset()
	return s
}

// TestResizeLogsWhatGrew checks that the log of a resize says whether the
// file system grew online, as its size shows, for a provider that grows
// it online and for one that grows it only at the next mount.
func TestResizeLogsWhatGrew(t *testing.T) {
	root := t.TempDir()
	online := volumetest.NewFake(filepath.Join(root, "online"), true)
	atStage := &growsAtStage{Fake: volumetest.NewFake(filepath.Join(root, "at-stage"), true), staged: map[string]int64{}}
	var logs logBuffer
	_, m := openManager(t, root, nil, Options{
		Root:            filepath.Join(root, "volumed"),
		Providers:       map[string]volume.Provider{"online": online, "at-stage": atStage},
		DefaultProvider: "online",
		Logger:          slog.New(slog.NewTextHandler(&logs, nil)),
	})
	ctx := ctxT(t)
	for _, tc := range []struct {
		provider string
		mounted  bool
		want     []string // in the resize's log line
	}{
		{"online", false, []string{"level=INFO", "grows when next mounted", "online=false"}},
		{"online", true, []string{"level=INFO", "its mounted file system online", "online=true", "fs_bytes=4194304"}},
		{"at-stage", false, []string{"level=INFO", "grows when next mounted", "online=false"}},
		{"at-stage", true, []string{"level=WARN", "grows only when next mounted", "online=false", "fs_bytes=2097152"}},
	} {
		name := tc.provider + map[bool]string{false: "-unmounted", true: "-mounted"}[tc.mounted]
		t.Run(name, func(t *testing.T) {
			if _, err := m.Create(ctx, name, map[string]string{"provider": tc.provider, "size": "2MiB"}); err != nil {
				t.Fatal(err)
			}
			if tc.mounted {
				if _, err := m.Mount(ctx, name, "m"); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := m.Unmount(ctx, name, "m"); err != nil {
						t.Error(err)
					}
				})
			}
			logs.take()
			if v, err := m.Resize(ctx, name, 4<<20); err != nil || v.CapacityBytes != 4<<20 {
				t.Fatalf("Resize = %+v, %v", v, err)
			}
			line := ""
			for l := range strings.Lines(logs.take()) {
				if strings.Contains(l, "volume resized") {
					line = l
				}
			}
			if !strings.Contains(line, "volume="+name) {
				t.Fatalf("no resize log line of %s: %q", name, line)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("resize log line %q lacks %q", line, w)
				}
			}
		})
	}
}
