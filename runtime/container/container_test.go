package container

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/plugins/volume"
)

func TestParseVolume(t *testing.T) {
	tests := []struct {
		spec string
		want Volume
		err  string
	}{
		{spec: "data:/d", want: Volume{Name: "data", Target: "/d"}},
		{spec: "data:/d/../e/", want: Volume{Name: "data", Target: "/e"}},
		{spec: "data:/d:ro", want: Volume{Name: "data", Target: "/d", ReadOnly: true}},
		{spec: "data:/d:rw", want: Volume{Name: "data", Target: "/d"}},
		{spec: "data", err: "want NAME:/PATH"},
		{spec: ":/d", err: "name is empty"},
		{spec: "data:", err: "path is empty"},
		{spec: "data:rel", err: "must be absolute"},
		{spec: "data:/", err: "must not be /"},
		{spec: "data:/d:rw,bogus", err: `unknown mode "rw,bogus"`},
		{spec: "data:/d:ro:x", err: "want NAME:/PATH"},
		{spec: "/host:/d", err: "only named volumes"},
		{spec: "./host:/d", err: "only named volumes"},
		{spec: "bad name:/d", err: "must match"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseVolume(tt.spec)
			if tt.err != "" {
				if !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseVolume(%q) = %v, want ErrInvalid with %q", tt.spec, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseVolume(%q) = %+v, %v, want %+v", tt.spec, got, err, tt.want)
			}
		})
	}
	if _, err := ParseVolumes([]string{"a:/d", "b:/d/"}); err == nil || !strings.Contains(err.Error(), "mounted twice") {
		t.Errorf("two volumes on one path: %v", err)
	}
}

func TestParseMount(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		spec string
		want Bind
		err  string
	}{
		{spec: "type=bind,source=" + dir + ",target=/d",
			want: Bind{Source: dir, Target: "/d", Propagation: PropagationRPrivate}},
		{spec: "type=bind,src=" + dir + "/,dst=/d/../e/,ro,propagation=rshared",
			want: Bind{Source: dir, Target: "/e", ReadOnly: true, Propagation: PropagationRShared}},
		{spec: "type=bind,source=" + dir + ",destination=/d,readonly=true,bind-propagation=rslave",
			want: Bind{Source: dir, Target: "/d", ReadOnly: true, Propagation: PropagationRSlave}},
		{spec: "target=/d,readonly=false,source=" + dir + ",type=bind,propagation=private",
			want: Bind{Source: dir, Target: "/d", Propagation: PropagationRPrivate}},
		{spec: "source=" + dir + ",target=/d", err: "type=bind is required"},
		{spec: "type=volume,source=data,target=/d", err: `type "volume" is not supported`},
		{spec: "type=bind,target=/d", err: "source is required"},
		{spec: "type=bind,source=" + dir, err: "target is required"},
		{spec: "type=bind,source=rel,target=/d", err: "absolute path"},
		{spec: "type=bind,source=" + dir + ",target=rel", err: "absolute path"},
		{spec: "type=bind,source=" + dir + ",target=/", err: "must not be /"},
		{spec: "type=bind,source=" + dir + "/nope,target=/d", err: "does not exist"},
		{spec: "type=bind,source=" + file + ",target=/d", err: "not a directory"},
		{spec: "type=bind,source=" + dir + ",target=/d,propagation=shared", err: `unknown propagation "shared"`},
		{spec: "type=bind,source=" + dir + ",target=/d,readonly=yes", err: `readonly="yes"`},
		{spec: "type=bind,source=" + dir + ",target=/d,consistency=cached", err: `unknown key "consistency"`},
		{spec: "type=bind,source=" + dir + ",target=/d,src=/x", err: "source is given twice"},
		{spec: "type=bind,source=" + dir + ",target", err: "target needs a value"},
		{spec: "type=bind,,source=" + dir + ",target=/d", err: "empty field"},
	}
	for _, tt := range tests {
		t.Run(tt.spec, func(t *testing.T) {
			got, err := ParseMount(tt.spec)
			if tt.err != "" {
				if !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), "accepted: type=bind") {
					t.Fatalf("ParseMount(%q) = %v, want ErrInvalid with %q and the accepted keys", tt.spec, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseMount(%q) = %+v, %v, want %+v", tt.spec, got, err, tt.want)
			}
			if again, err := ParseMount(got.String()); err != nil || again != got {
				t.Errorf("ParseMount(%q) = %+v, %v: String does not round-trip", got.String(), again, err)
			}
		})
	}
	spec := "type=bind,source=" + dir + ",target=/d"
	if _, err := ParseMounts([]string{spec, spec + "/"}, nil); err == nil || !strings.Contains(err.Error(), "mounted twice") {
		t.Errorf("two binds on one path: %v", err)
	}
	if _, err := ParseMounts([]string{spec}, []Volume{{Name: "v", Target: "/d"}}); err == nil || !strings.Contains(err.Error(), "mounted twice") {
		t.Errorf("a bind on a volume's path: %v", err)
	}
}

func TestParseEnv(t *testing.T) {
	tests := []struct {
		name    string
		base    []string
		entries []string
		want    []string
		bad     bool
	}{
		{name: "add", base: []string{"PATH=/bin"}, entries: []string{"A=1"}, want: []string{"PATH=/bin", "A=1"}},
		{name: "replace in place", base: []string{"A=1", "B=2"}, entries: []string{"A=3"}, want: []string{"A=3", "B=2"}},
		{name: "empty value", entries: []string{"A="}, want: []string{"A="}},
		{name: "value with =", entries: []string{"A=b=c"}, want: []string{"A=b=c"}},
		{name: "no =", entries: []string{"A"}, bad: true},
		{name: "empty key", entries: []string{"=x"}, bad: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseEnv(tt.base, tt.entries)
			if tt.bad {
				if !errors.Is(err, volume.ErrInvalid) {
					t.Fatalf("ParseEnv = %v, want ErrInvalid", err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("ParseEnv = %q, %v, want %q", got, err, tt.want)
			}
		})
	}
}

func TestParseCPUsAndNetwork(t *testing.T) {
	for s, want := range map[string]float64{"0.5": 0.5, "2": 2, "0.01": 0.01} {
		if got, err := ParseCPUs(s); err != nil || got != want {
			t.Errorf("ParseCPUs(%q) = %v, %v", s, got, err)
		}
	}
	for _, s := range []string{"", "0", "0.001", "-1", "x", "NaN", "1e9"} {
		if _, err := ParseCPUs(s); !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("ParseCPUs(%q) = %v, want ErrInvalid", s, err)
		}
	}
	for _, s := range []string{"none", "host"} {
		if _, err := ParseNetwork(s); err != nil {
			t.Errorf("ParseNetwork(%q): %v", s, err)
		}
	}
	if _, err := ParseNetwork("bridge"); !errors.Is(err, volume.ErrInvalid) {
		t.Errorf("ParseNetwork(bridge) = %v", err)
	}
}

func TestValidateName(t *testing.T) {
	for _, ok := range []string{"web", "a.b-c_d", "A1"} {
		if err := ValidateName(ok); err != nil {
			t.Errorf("ValidateName(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-x", "a/b", "a b", strings.Repeat("a", 129), NewID()} {
		if err := ValidateName(bad); !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestStore(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Second)
	cfg := Config{
		ID: "ab" + strings.Repeat("0", 62), Name: "web", Image: "busybox:latest",
		Args: []string{"sh"}, Hostname: "web", Network: NetNone, Created: now,
		Volumes:   []Volume{{Name: "data", Target: "/d", ReadOnly: true}},
		Resources: Resources{MemoryBytes: 64 << 20, CPUs: 0.5, PidsMax: 64},
	}
	c, err := s.Create(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.State.Status != Created || c.State.MonitorPID != os.Getpid() {
		t.Errorf("new state %+v", c.State)
	}
	for _, sub := range []string{"upper", "work", "rootfs", "config.json", "state.json"} {
		if _, err := os.Stat(filepath.Join(c.Dir, sub)); err != nil {
			t.Errorf("container dir: %v", err)
		}
	}
	other := cfg
	other.ID, other.Name, other.Created = "ac"+strings.Repeat("1", 62), "", now.Add(time.Second)
	if _, err := s.Create(other); err != nil {
		t.Fatal(err)
	}
	dup := cfg
	dup.ID = "ff" + strings.Repeat("2", 62)
	if _, err := s.Create(dup); !errors.Is(err, volume.ErrExists) {
		t.Errorf("Create with a name in use = %v, want ErrExists", err)
	}

	st := State{Status: Exited, ExitCode: 137, OOMKilled: true, StartedAt: now, FinishedAt: now.Add(time.Minute),
		Mounts: []MountedVolume{{Name: "data", ID: cfg.ID + "-0", Source: "/x"}}}
	if err := s.SaveState(cfg.ID, st); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("web")
	if err != nil {
		t.Fatal(err)
	}
	if got.Config.Resources != cfg.Resources || !slices.Equal(got.Config.Volumes, cfg.Volumes) ||
		got.State.ExitCode != 137 || !got.State.OOMKilled || !got.State.FinishedAt.Equal(st.FinishedAt) ||
		len(got.State.Mounts) != 1 {
		t.Errorf("round trip: %+v", got)
	}
	if got.StatusText(now) != "Exited (137) OOM killed" {
		t.Errorf("StatusText = %q", got.StatusText(now))
	}

	refs := []struct {
		ref  string
		want string
		err  error
	}{
		{ref: cfg.ID, want: cfg.ID},
		{ref: "web", want: cfg.ID},
		{ref: "ab", want: cfg.ID},
		{ref: other.ID[:12], want: other.ID},
		{ref: "a", err: volume.ErrInvalid},
		{ref: "zz", err: volume.ErrNotFound},
		{ref: "ff" + strings.Repeat("0", 62), err: volume.ErrNotFound},
		{ref: "", err: volume.ErrInvalid},
	}
	for _, r := range refs {
		c, err := s.Get(r.ref)
		if r.err != nil {
			if !errors.Is(err, r.err) {
				t.Errorf("Get(%q) = %v, want %v", r.ref, err, r.err)
			}
			continue
		}
		if err != nil || c.ID() != r.want {
			t.Errorf("Get(%q) = %s, %v, want %s", r.ref, c.ID(), err, r.want)
		}
	}
	all, err := s.List()
	if err != nil || len(all) != 2 || all[0].ID() != cfg.ID {
		t.Fatalf("List = %v, %v", all, err)
	}
	if all[1].Config.Name != other.ID[:12] {
		t.Errorf("default name %q, want the ID's first 12 digits", all[1].Config.Name)
	}
	if err := s.Remove(cfg.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get("web"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Get after Remove = %v", err)
	}
}

func TestStatusText(t *testing.T) {
	now := time.Now()
	tests := []struct {
		st   State
		want string
	}{
		{State{Status: Created}, "Created"},
		{State{Status: Running, StartedAt: now.Add(-5 * time.Second)}, "Up 5 seconds"},
		{State{Status: Exited, ExitCode: 1, FinishedAt: now.Add(-3 * time.Minute)}, "Exited (1) 3 minutes ago"},
		{State{Status: Exited, ExitCode: -1}, "Exited (-1)"},
	}
	for _, tt := range tests {
		if got := (Container{State: tt.st}).StatusText(now); got != tt.want {
			t.Errorf("StatusText(%+v) = %q, want %q", tt.st, got, tt.want)
		}
	}
}

func FuzzParseMount(f *testing.F) {
	dir := f.TempDir()
	f.Add("type=bind,source=" + dir + ",target=/d,ro,propagation=rshared")
	f.Add("type=bind,src=" + dir + ",dst=/d/../e,readonly=false,bind-propagation=rslave")
	f.Add("type=bind,,source==,target")
	f.Fuzz(func(t *testing.T, spec string) {
		b, err := ParseMount(spec)
		if err != nil {
			if !errors.Is(err, volume.ErrInvalid) {
				t.Fatalf("ParseMount(%q) = %v, want ErrInvalid", spec, err)
			}
			return
		}
		if !filepath.IsAbs(b.Source) || !filepath.IsAbs(b.Target) || b.Target == "/" ||
			!slices.Contains([]string{PropagationRPrivate, PropagationRShared, PropagationRSlave}, b.Propagation) {
			t.Fatalf("ParseMount(%q) = %+v", spec, b)
		}
		if again, err := ParseMount(b.String()); err != nil || again != b {
			t.Fatalf("ParseMount(%q) = %+v, %v: String does not round-trip %+v", b.String(), again, err, b)
		}
	})
}

// State is written without fsync; after a host crash it may be gone, and the
// container then reads as exited rather than as an error.
func TestStoreLostState(t *testing.T) {
	s, err := OpenStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{ID: "cd" + strings.Repeat("3", 62), Name: "lost", Image: "busybox:latest", Args: []string{"sh"}, Network: NetNone}
	c, err := s.Create(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "state.json"), nil, 0o600); err != nil { // as after a crash
		t.Fatal(err)
	}
	got, err := s.Get("lost")
	if err != nil {
		t.Fatalf("Get with a lost state: %v", err)
	}
	if got.State.Status != Exited || got.State.ExitCode != -1 || !strings.Contains(got.State.Error, "state lost") {
		t.Errorf("state = %+v; want exited, code -1, state lost", got.State)
	}
	if got.Config.Name != "lost" || got.Config.Image != cfg.Image {
		t.Errorf("config = %+v", got.Config)
	}
}

// FuzzNameRules checks isID against the regular expression of its rule
// (volume.ValidName has its own, FuzzValidName).
func FuzzNameRules(f *testing.F) {
	idRE := regexp.MustCompile(`^[0-9a-f]{64}$`)
	for _, s := range []string{"web", "Web_1.x-y", "_x", ".x", "-x", "", "a b", "é",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeF"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := isID(s), idRE.MatchString(s); got != want {
			t.Errorf("isID(%q) = %v, want %v", s, got, want)
		}
	})
}
