package volume

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize parses a size such as "64MiB", "1G", "512m", "1.5GiB" or "4096".
// Units are binary, as in Docker's --memory: k, m, g, t and p (any case),
// each optionally followed by "i" and/or "b"; a bare number is bytes. The
// result must be positive and fit in an int64. Errors are ErrInvalid and say
// what is accepted.
func ParseSize(s string) (int64, error) {
	in := strings.TrimSpace(s)
	bad := func(why string) (int64, error) {
		return 0, fmt.Errorf("%w: size %q %s (use a number with an optional unit k, m, g, t, p, e.g. 64MiB or 1G)", ErrInvalid, s, why)
	}
	if in == "" {
		return bad("is empty")
	}
	i := 0
	for i < len(in) && (in[i] >= '0' && in[i] <= '9' || in[i] == '.') {
		i++
	}
	num, unit := in[:i], strings.ToLower(strings.TrimSpace(in[i:]))
	if num == "" {
		return bad("has no number")
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return bad("is not a number")
	}
	unit = strings.TrimSuffix(unit, "b")
	unit = strings.TrimSuffix(unit, "i")
	var mult float64
	switch unit {
	case "":
		mult = 1
	case "k":
		mult = 1 << 10
	case "m":
		mult = 1 << 20
	case "g":
		mult = 1 << 30
	case "t":
		mult = 1 << 40
	case "p":
		mult = 1 << 50
	default:
		return bad("has an unknown unit")
	}
	v := f * mult
	if v < 1 {
		return bad("must be at least 1 byte")
	}
	if v >= math.MaxInt64 {
		return bad("is too large")
	}
	return int64(v), nil
}

// FormatSize formats n bytes with the largest binary unit that keeps it
// exact to one decimal, e.g. "64MiB" or "1.5GiB".
func FormatSize(n int64) string {
	units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	f := float64(n)
	u := 0
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	if f == math.Trunc(f) {
		return fmt.Sprintf("%d%s", int64(f), units[u])
	}
	return fmt.Sprintf("%.1f%s", f, units[u])
}
