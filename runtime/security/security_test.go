package security

import (
	"errors"
	"slices"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

func TestDefaultCapabilitiesValid(t *testing.T) {
	names := DefaultCapabilities()
	caps, err := parseCapabilities(names)
	if err != nil {
		t.Fatal(err)
	}
	if len(caps) != 14 {
		t.Errorf("%d capabilities, want Docker's 14: %v", len(caps), names)
	}
	for _, n := range []string{"CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"} {
		if !slices.Contains(names, n) {
			t.Errorf("%s missing", n)
		}
	}
	for _, n := range []string{"CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_PTRACE", "CAP_NET_ADMIN"} {
		if slices.Contains(names, n) {
			t.Errorf("%s in the default set", n)
		}
	}
	names[0] = "changed"
	if DefaultCapabilities()[0] != "CAP_CHOWN" {
		t.Error("DefaultCapabilities returns shared state")
	}
}

func TestParseCapabilities(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		wantErr error
	}{
		{"canonical", []string{"CAP_KILL", "CAP_SYS_ADMIN"}, nil},
		{"lower case without prefix", []string{"kill", "cap_chown"}, nil},
		{"none", nil, nil},
		{"unknown", []string{"CAP_KILL", "CAP_FLY"}, volume.ErrInvalid},
		{"empty", []string{""}, volume.ErrInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			caps, err := parseCapabilities(tt.in)
			if !errors.Is(err, tt.wantErr) || (err == nil && len(caps) != len(tt.in)) {
				t.Fatalf("parseCapabilities(%q) = %v, %v; want error %v", tt.in, caps, err, tt.wantErr)
			}
		})
	}
}

func TestDropCapabilitiesRejectsUnknown(t *testing.T) {
	// Validation comes first, so this changes nothing even as root.
	if err := DropCapabilities([]string{"CAP_CHOWN", "CAP_NOT_A_CAP"}); !errors.Is(err, volume.ErrInvalid) {
		t.Fatalf("DropCapabilities: %v, want ErrInvalid", err)
	}
}

// TestLoadSeccompRejectsBadPrograms: what is not a whole program is
// refused before anything is loaded.
func TestLoadSeccompRejectsBadPrograms(t *testing.T) {
	for _, progs := range [][][]byte{nil, {}, {{}}, {make([]byte, 12)}, {make([]byte, 8), make([]byte, 12)}} {
		if err := LoadSeccomp(progs); !errors.Is(err, volume.ErrInvalid) && !errors.Is(err, volume.ErrNotSupported) {
			t.Errorf("LoadSeccomp(%v) = %v, want ErrInvalid", progs, err)
		}
	}
}
