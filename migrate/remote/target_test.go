package remote

import (
	"errors"
	"strings"
	"testing"

	"github.com/stowage/stowage/plugins/volume"
)

func TestParseTarget(t *testing.T) {
	tests := []struct {
		in   string
		want Target
		err  string // a part of the error; empty for success
	}{
		{in: "ssh://hostb", want: Target{Host: "hostb", Port: 22}},
		{in: "ssh://root@hostb:2222", want: Target{User: "root", Host: "hostb", Port: 2222}},
		{in: "ssh://hostb/?volume=db2", want: Target{Host: "hostb", Port: 22, Volume: "db2"}},
		{in: "ssh://hostb?volume=db2", want: Target{Host: "hostb", Port: 22, Volume: "db2"}},
		{in: "ssh://u@[fd00::2]:22/", want: Target{User: "u", Host: "fd00::2", Port: 22}},
		{in: "hostb", err: `scheme "" is not supported`},
		{in: "rsync://hostb", err: `scheme "rsync"`},
		{in: "ssh://", err: "no host"},
		{in: "ssh://hostb:0", err: "port \"0\""},
		{in: "ssh://hostb:99999", err: "port"},
		{in: "ssh://hostb:", err: "empty port"},
		{in: "ssh://u:secret@hostb", err: "passwords are not accepted"},
		{in: "ssh://hostb/data", err: `path "/data" is not supported`},
		{in: "ssh://hostb/?vol=x", err: `unknown parameter "vol"`},
		{in: "ssh://hostb/?volume=a&volume=b", err: "given 2 times"},
		{in: "ssh://hostb/?volume=-x", err: `invalid volume name "-x"`},
		{in: "ssh://hostb/#frag", err: "fragment"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTarget(tc.in)
			if tc.err == "" {
				if err != nil || got != tc.want {
					t.Fatalf("ParseTarget = %+v, %v; want %+v", got, err, tc.want)
				}
				back, err := ParseTarget(got.String())
				if err != nil || back != got {
					t.Errorf("ParseTarget(String()) = %+v, %v; want %+v", back, err, got)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, volume.ErrInvalid) {
				t.Fatalf("ParseTarget = %+v, %v; want ErrInvalid containing %q", got, err, tc.err)
			}
			if !strings.Contains(err.Error(), targetForm) {
				t.Errorf("error %q does not say what is accepted", err)
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q repeats the password", err)
			}
		})
	}
}

func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"ssh://hostb", "ssh://u@h:22/?volume=v", "ssh://u:p@h", "ssh://[::1]:2/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseTarget(s)
		if err != nil {
			if !errors.Is(err, volume.ErrInvalid) {
				t.Fatalf("error %v is not ErrInvalid", err)
			}
			return
		}
		if got.Host == "" || got.Port < 1 || got.Port > 65535 {
			t.Fatalf("ParseTarget(%q) = %+v", s, got)
		}
		back, err := ParseTarget(got.String())
		if err != nil || back != got {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v, %v", s, got, got.String(), back, err)
		}
	})
}
