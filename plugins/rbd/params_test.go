package rbd

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

func TestParseParameters(t *testing.T) {
	tests := []struct {
		name     string
		capacity int64
		params   map[string]string
		want     spec
		err      error
	}{
		{"defaults", 0, nil, spec{FS: fsExt4, CapacityBytes: DefaultSize}, nil},
		{"rounded up", 5<<20 + 1, map[string]string{"fs": "ext4"}, spec{FS: fsExt4, CapacityBytes: 6 << 20}, nil},
		{"xfs", 300 << 20, map[string]string{"fs": "xfs"}, spec{FS: fsXFS, CapacityBytes: 300 << 20}, nil},
		{"xfs too small", 64 << 20, map[string]string{"fs": "xfs"}, spec{}, volume.ErrInvalid},
		{"ext4 too small", 1 << 20, nil, spec{}, volume.ErrInvalid},
		{"negative", -1, nil, spec{}, volume.ErrInvalid},
		{"too large", maxSize + 1, nil, spec{}, volume.ErrInvalid},
		{"unknown fs", 64 << 20, map[string]string{"fs": "btrfs"}, spec{}, volume.ErrInvalid},
		{"unknown key", 64 << 20, map[string]string{"type": "fs"}, spec{}, volume.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseParameters(tc.capacity, tc.params)
			if !errors.Is(err, tc.err) || got != tc.want {
				t.Errorf("parseParameters(%d, %v) = %+v, %v; want %+v, %v", tc.capacity, tc.params, got, err, tc.want, tc.err)
			}
		})
	}
}

func TestParseSnapshotID(t *testing.T) {
	if img, snap, err := parseSnapshotID("vol@s1"); err != nil || img != "vol" || snap != "s1" {
		t.Errorf("parseSnapshotID(vol@s1) = %q, %q, %v", img, snap, err)
	}
	for _, id := range []string{"", "vol", "@s", "vol@", "a/b@s", "vol@s@t", "vol@.hidden"} {
		if _, _, err := parseSnapshotID(id); !errors.Is(err, volume.ErrNotFound) {
			t.Errorf("parseSnapshotID(%q) = %v; want ErrNotFound", id, err)
		}
	}
}

func TestCookie(t *testing.T) {
	if h := hostOfCookie(cookiePrefix + "host-a"); h != "host-a" {
		t.Errorf("hostOfCookie = %q", h)
	}
	if h := hostOfCookie("auto 1234"); h != "" {
		t.Errorf("hostOfCookie of a foreign cookie = %q", h)
	}
	for _, bad := range []string{"", "a b", "-a", strings.Repeat("a", 64), "a/b"} {
		if err := checkHostID(bad); !errors.Is(err, volume.ErrInvalid) {
			t.Errorf("checkHostID(%q) = %v; want ErrInvalid", bad, err)
		}
	}
}

// cephError is an error as go-ceph returns them: a negative errno behind
// ErrorCode.
type cephError int

func (e cephError) Error() string  { return fmt.Sprintf("rbd: ret=%d", int(e)) }
func (e cephError) ErrorCode() int { return int(e) }

func TestWrap(t *testing.T) {
	tests := []struct {
		err  error
		want error
		says string
	}{
		{cephError(-int(syscall.ENOENT)), volume.ErrNotFound, ""},
		{cephError(-int(syscall.EEXIST)), volume.ErrExists, ""},
		{cephError(-int(syscall.EBUSY)), volume.ErrInUse, ""},
		{cephError(-int(syscall.EINVAL)), volume.ErrInvalid, ""},
		{cephError(-int(syscall.EOPNOTSUPP)), volume.ErrNotSupported, ""},
		{cephError(-int(syscall.EACCES)), volume.ErrUnavailable, "key"},
		{cephError(-int(syscall.ESHUTDOWN)), volume.ErrUnavailable, "fenced"},
		{cephError(-int(syscall.ETIMEDOUT)), volume.ErrUnavailable, "reachable"},
		{syscall.EBUSY, volume.ErrInUse, ""},
		{fmt.Errorf("%w: kept", volume.ErrExists), volume.ErrExists, "kept"},
	}
	for _, tc := range tests {
		err := wrap(tc.err, "open image", `"v"`)
		if !errors.Is(err, tc.want) || !errors.Is(err, tc.err) || !strings.Contains(err.Error(), `open image "v"`) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("wrap(%v) = %v; want %v keeping the cause, saying %q", tc.err, err, tc.want, tc.says)
		}
	}
	if wrap(nil, "x", "y") != nil {
		t.Error("wrap(nil) is not nil")
	}
}
