package volume

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	good := []struct {
		in   string
		want int64
	}{
		{"4096", 4096},
		{"64MiB", 64 << 20},
		{"64mib", 64 << 20},
		{"64M", 64 << 20},
		{"64mb", 64 << 20},
		{"1G", 1 << 30},
		{"1GiB", 1 << 30},
		{"1.5GiB", 3 << 29},
		{"2k", 2048},
		{" 1T ", 1 << 40},
	}
	for _, tc := range good {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseSize(tc.in)
			if err != nil || got != tc.want {
				t.Fatalf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
			}
		})
	}
	bad := []string{"", "MiB", "-1G", "0", "0.1", "1X", "1GiBB", "1..2G", "99999999999P", "1 G G"}
	for _, in := range bad {
		t.Run("bad/"+in, func(t *testing.T) {
			_, err := ParseSize(in)
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseSize(%q) err = %v; want ErrInvalid", in, err)
			}
			if !strings.Contains(err.Error(), "64MiB") {
				t.Errorf("error %q does not say what is accepted", err)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	for n, want := range map[int64]string{512: "512B", 64 << 20: "64MiB", 3 << 29: "1.5GiB", 1 << 40: "1TiB"} {
		if got := FormatSize(n); got != want {
			t.Errorf("FormatSize(%d) = %q; want %q", n, got, want)
		}
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"64MiB", "1G", "1.5gib", "", "-1", "1e9", "9999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseSize(%q): error %v is not ErrInvalid", s, err)
			}
			return
		}
		if n < 1 {
			t.Fatalf("ParseSize(%q) = %d, want positive", s, n)
		}
	})
}

func TestCheckParameters(t *testing.T) {
	if err := CheckParameters(map[string]string{"type": "dir"}, "type", "fs"); err != nil {
		t.Fatal(err)
	}
	err := CheckParameters(map[string]string{"colour": "x", "type": "dir"}, "type", "fs")
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v; want ErrInvalid", err)
	}
	for _, want := range []string{`"colour"`, "fs, type"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
