package local

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

func TestParseParameters(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name     string
		capacity int64
		params   map[string]string
		want     spec
		wantErr  string // substring of the ErrInvalid error; empty for success
	}{
		{name: "default is dir", want: spec{Type: typeDir}},
		{name: "explicit dir", params: map[string]string{"type": "dir"}, want: spec{Type: typeDir}},
		{name: "size implies fs ext4", capacity: 64 * mib, want: spec{Type: typeFS, FS: fsExt4, CapacityBytes: 64 * mib}},
		{name: "fs defaults to ext4", capacity: 64 * mib, params: map[string]string{"type": "fs"}, want: spec{Type: typeFS, FS: fsExt4, CapacityBytes: 64 * mib}},
		{name: "xfs", capacity: 300 * mib, params: map[string]string{"type": "fs", "fs": "xfs"}, want: spec{Type: typeFS, FS: fsXFS, CapacityBytes: 300 * mib}},
		{name: "fs without type", capacity: 300 * mib, params: map[string]string{"fs": "xfs"}, want: spec{Type: typeFS, FS: fsXFS, CapacityBytes: 300 * mib}},
		{name: "size rounded up", capacity: 64*mib + 1, want: spec{Type: typeFS, FS: fsExt4, CapacityBytes: 64*mib + 4096}},
		{name: "unknown key", params: map[string]string{"colour": "red"}, wantErr: `unknown option "colour"`},
		{name: "bad type", params: map[string]string{"type": "block"}, wantErr: "use dir or fs"},
		{name: "empty type", params: map[string]string{"type": ""}, wantErr: "use dir or fs"},
		{name: "bad fs", capacity: 64 * mib, params: map[string]string{"fs": "btrfs"}, wantErr: "use ext4 or xfs"},
		{name: "fs without size", params: map[string]string{"type": "fs"}, wantErr: "needs a size"},
		{name: "fs key without size", params: map[string]string{"fs": "ext4"}, wantErr: "needs type=fs"},
		{name: "dir with size", capacity: 64 * mib, params: map[string]string{"type": "dir"}, wantErr: "cannot enforce a size"},
		{name: "dir with fs", params: map[string]string{"type": "dir", "fs": "ext4"}, wantErr: "needs type=fs"},
		{name: "ext4 too small", capacity: mib, wantErr: "minimum for ext4 of 4MiB"},
		{name: "xfs too small", capacity: 64 * mib, params: map[string]string{"fs": "xfs"}, wantErr: "minimum for xfs of 300MiB"},
		{name: "negative size", capacity: -1, wantErr: "negative"},
		{name: "huge size", capacity: 1<<63 - 1, wantErr: "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseParameters(tt.capacity, tt.params)
			if tt.wantErr != "" {
				if !errors.Is(err, volume.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseParameters() = %+v, %v; want ErrInvalid containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("parseParameters() = %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestCheckID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"v1", true},
		{"My_vol.2-x", true},
		{"0", true},
		{"a..", true},
		{strings.Repeat("a", maxIDLen), true},
		{"", false},
		{".", false},
		{"..", false},
		{".hidden", false},
		{"-x", false},
		{"_x", false},
		{"a/b", false},
		{"../etc", false},
		{"a b", false},
		{"a\x00b", false},
		{"é", false},
		{strings.Repeat("a", maxIDLen+1), false},
	}
	for _, tt := range tests {
		name := tt.id
		if len(name) > 20 {
			name = fmt.Sprintf("%d_characters", len(name))
		}
		t.Run(name, func(t *testing.T) {
			err := checkID(tt.id)
			if tt.ok && err != nil {
				t.Errorf("checkID(%q) = %v; want nil", tt.id, err)
			}
			if !tt.ok && !errors.Is(err, volume.ErrInvalid) {
				t.Errorf("checkID(%q) = %v; want ErrInvalid", tt.id, err)
			}
		})
	}
}

func FuzzParseParameters(f *testing.F) {
	f.Add(int64(0), "type", "dir", "", "")
	f.Add(int64(64<<20), "type", "fs", "fs", "ext4")
	f.Add(int64(300<<20), "fs", "xfs", "", "")
	f.Add(int64(1), "type", "fs", "x", "y")
	f.Add(int64(-5), "", "", "", "")
	f.Fuzz(func(t *testing.T, capacity int64, k1, v1, k2, v2 string) {
		params := map[string]string{}
		if k1 != "" {
			params[k1] = v1
		}
		if k2 != "" {
			params[k2] = v2
		}
		got, err := parseParameters(capacity, params)
		if err != nil {
			if !errors.Is(err, volume.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		switch got.Type {
		case typeDir:
			if got.FS != "" || got.CapacityBytes != 0 {
				t.Fatalf("dir spec %+v has fs or size", got)
			}
		case typeFS:
			if got.CapacityBytes < minSize[got.FS] || got.CapacityBytes < capacity || got.CapacityBytes%sizeAlign != 0 {
				t.Fatalf("fs spec %+v for capacity %d: bad size", got, capacity)
			}
		default:
			t.Fatalf("spec %+v has an unknown type", got)
		}
		// Parsing is deterministic: the same request gives the same spec.
		if again, err := parseParameters(capacity, params); err != nil || again != got {
			t.Fatalf("second parse = %+v, %v; want %+v", again, err, got)
		}
	})
}
