package harness

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
)

// sanitySummary matches Ginkgo's summary line, e.g.
// "SUCCESS! -- 60 Passed | 0 Failed | 0 Pending | 31 Skipped".
var sanitySummary = regexp.MustCompile(`(?m)^.*?(\d+) Passed \| (\d+) Failed \| (\d+) Pending \| (\d+) Skipped.*$`)

// SanityOptions tune a CSISanity run.
type SanityOptions struct {
	// Dir is where the run's directory, Dir/sanity, is made (csi-sanity
	// makes only the last element of its mount and staging paths).
	Dir string
	// VolumeSize is the size of the volumes csi-sanity creates; ExpandSize,
	// when set, the size it expands them to.
	VolumeSize, ExpandSize int
	// Timeout bounds the run.
	Timeout time.Duration
	// Log, when set, is the driver's log file, whose tail a failure shows.
	Log string
}

// SanityResult is what a CSISanity run saw.
type SanityResult struct {
	Work   string // the run's directory: mount and staging paths live under it
	Output []byte // csi-sanity's combined output
	Passed int
	Failed int
	// Skips counts the skipped specs by reason.
	Skips map[string]int
}

// CSISanity runs the CSI conformance suite, csi-sanity, against the CSI
// endpoint (a socket path). It fails the test (and goes on) when a spec
// failed, none passed or csi-sanity exited non-zero, and stops the test when
// csi-sanity could not run or printed no summary.
func CSISanity(t *testing.T, endpoint string, opts SanityOptions) SanityResult {
	t.Helper()
	sanity, err := testenv.LookPath("csi-sanity")
	if err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(opts.Dir, "sanity")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), opts.Timeout)
	defer cancel()
	args := []string{
		"--csi.endpoint", endpoint,
		"--csi.mountdir", filepath.Join(work, "mnt"),
		"--csi.stagingdir", filepath.Join(work, "stage"),
		"--csi.testvolumesize", strconv.Itoa(opts.VolumeSize),
	}
	if opts.ExpandSize != 0 {
		args = append(args, "--csi.testvolumeexpandsize", strconv.Itoa(opts.ExpandSize))
	}
	args = append(args, "--ginkgo.json-report", filepath.Join(work, "report.json"), "--ginkgo.no-color")
	out, err := exec.CommandContext(ctx, sanity, args...).CombinedOutput()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("run csi-sanity: %v\n%s", err, out)
	}
	m := sanitySummary.FindSubmatch(out)
	if m == nil {
		t.Fatalf("csi-sanity printed no summary (%v):\n%s", err, out)
	}
	t.Logf("csi-sanity: %s", strings.TrimSpace(string(m[0])))
	r := SanityResult{Work: work, Output: out}
	r.Passed, _ = strconv.Atoi(string(m[1]))
	r.Failed, _ = strconv.Atoi(string(m[2]))
	if err != nil || r.Failed != 0 || r.Passed == 0 {
		msg := ""
		if opts.Log != "" {
			log, _ := os.ReadFile(opts.Log)
			msg = "\ndriver log (tail):\n" + tail(log, 80)
		}
		t.Errorf("csi-sanity: %v, %d passed, %d failed:\n%s%s", err, r.Passed, r.Failed, out, msg)
	}
	r.Skips = sanitySkips(t, filepath.Join(work, "report.json"))
	return r
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// sanitySkips reads a Ginkgo JSON report and counts the skipped specs by
// reason.
func sanitySkips(t *testing.T, path string) map[string]int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read csi-sanity report: %v", err)
	}
	var suites []struct {
		SpecReports []struct {
			State   string
			Failure struct{ Message string }
		}
	}
	if err := json.Unmarshal(b, &suites); err != nil {
		t.Fatalf("decode csi-sanity report %s: %v", path, err)
	}
	skips := map[string]int{}
	for _, s := range suites {
		for _, r := range s.SpecReports {
			if r.State == "skipped" {
				skips[r.Failure.Message]++
			}
		}
	}
	return skips
}
