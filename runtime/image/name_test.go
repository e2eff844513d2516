package image

import (
	"regexp"
	"testing"
)

// The name rules, as the regular expressions they are checked without.
var (
	nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]*(/[a-z0-9][a-z0-9_.-]*)*$`)
	tagRE  = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$`)
	hexRE  = regexp.MustCompile(`^[a-f0-9]{64}$`)
)

// FuzzNameRules checks validName, validTag and validHex against the
// regular expressions of the rules they implement.
func FuzzNameRules(f *testing.F) {
	for _, s := range []string{"busybox", "a/b", "a//b", "/a", "a/", "_x", "x_", "V1.0-rc_2", ".x", "-x", "Ab",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeF", "é", "a\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := validName(s), nameRE.MatchString(s); got != want {
			t.Errorf("validName(%q) = %v, want %v", s, got, want)
		}
		if got, want := validTag(s), tagRE.MatchString(s); got != want {
			t.Errorf("validTag(%q) = %v, want %v", s, got, want)
		}
		if got, want := validHex(s), hexRE.MatchString(s); got != want {
			t.Errorf("validHex(%q) = %v, want %v", s, got, want)
		}
	})
}
