package volume

import (
	"regexp"
	"testing"
)

// FuzzValidName checks ValidName against the regular expression of
// NameRule.
func FuzzValidName(f *testing.F) {
	rule := regexp.MustCompile("^" + NameRule + "$")
	for _, s := range []string{
		"", "a", "Z9", "0", "pg", "pg-data_1.x", "Web_1.x-y", "a..b", "a/b", ".", "..", ".hidden", "_x",
		"-x", "x-", "a b", "a@b", "a:b", "é", "a\x00", "a\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidName(s), rule.MatchString(s); got != want {
			t.Errorf("ValidName(%q) = %v, want %v (the rule %s)", s, got, want, NameRule)
		}
	})
}
