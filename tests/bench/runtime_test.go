package bench_test

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// BenchmarkRuntimeStart compares `stow run --rm IMAGE /bin/true` with
// `runc run` and `crun run` of an OCI bundle holding the same busybox rootfs,
// the three alternating run by run. Debian's crun refuses this machine's
// hybrid cgroup layout, so it runs in a private mount namespace without the
// empty cgroup2 mount, as measured in the project's notes.
func BenchmarkRuntimeStart(b *testing.B) {
	testenv.Require(b, "root", "busybox", "runc", "crun", "unshare")
	bins := harness.BuildBinaries(b)
	dir := b.TempDir()
	tarball := filepath.Join(dir, "rootfs.tar")
	if err := os.WriteFile(tarball, harness.BusyboxTar(b), 0o644); err != nil {
		b.Fatal(err)
	}
	bundle := makeBundle(b, dir, tarball)

	stowRoot := filepath.Join(dir, "stow")
	stow := func(args ...string) *exec.Cmd {
		return exec.Command(bins.Stow, append([]string{"--root", stowRoot}, args...)...)
	}
	if out, err := stow("image", "import", tarball, "bb").CombinedOutput(); err != nil {
		b.Fatalf("stow image import: %v\n%s", err, out)
	}
	seq := 0
	id := func() string { seq++; return fmt.Sprintf("stowage-bench-%d-%d", os.Getpid(), seq) }
	kinds := []struct {
		name string
		cmd  func() *exec.Cmd
	}{
		{"crun 1.8 (private mount namespace wrapper)", func() *exec.Cmd {
			return exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
				`umount /sys/fs/cgroup/unified && exec crun run -b "$0" "$1"`, bundle, id())
		}},
		{"runc", func() *exec.Cmd { return exec.Command("runc", "run", "-b", bundle, id()) }},
		{"stow run --rm", func() *exec.Cmd { return stow("run", "--rm", "bb", "/bin/true") }},
	}
	// run returns the wall time of one start and its CPU time (user and
	// system, of the command and the processes it waited for: the
	// container's too), which other work on the machine disturbs less.
	run := func(k int) (wall, cpu float64) {
		cmd := kinds[k].cmd()
		wall = timed(b, func() error {
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %v\n%s", kinds[k].name, err, out)
			}
			return nil
		})
		return wall, (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	for k := range kinds { // warm-up
		run(k)
	}
	n := *runs * 2
	times := make([][]float64, len(kinds))
	cpus := make([][]float64, len(kinds))
	for i := 0; i < n; i++ {
		for j := range kinds {
			k := (i + j) % len(kinds)
			wall, cpu := run(k)
			times[k] = append(times[k], wall)
			cpus[k] = append(cpus[k], cpu)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "### Container start: run `/bin/true` in a busybox rootfs (%d runs each, alternating)\n\n", n)
	sb.WriteString("| runtime | wall median (min-max) | stow run / this, median of pairs (min-max) | CPU median | stow run / this, CPU |\n|---|---|---|---|---|\n")
	stowIdx := len(kinds) - 1
	pairs := func(xs [][]float64, k int) []float64 {
		rs := make([]float64, n)
		for i := range rs {
			rs[i] = xs[stowIdx][i] / xs[k][i]
		}
		return rs
	}
	for k, kind := range kinds {
		lo, hi := minMax(times[k])
		ratio, cpuRatio := "-", "-"
		if k != stowIdx {
			rs := pairs(times, k)
			rlo, rhi := minMax(rs)
			ratio = fmt.Sprintf("**%.2f** (%.2f-%.2f)", median(rs), rlo, rhi)
			cpuRatio = fmt.Sprintf("%.2f", median(pairs(cpus, k)))
		}
		fmt.Fprintf(&sb, "| %s | %s (%s-%s) | %s | %s | %s |\n", kind.name, ms(median(times[k])), ms(lo), ms(hi), ratio, ms(median(cpus[k])), cpuRatio)
	}
	sb.WriteString("\nThe crun row includes its wrapper (unshare, sh and umount, about 3 ms here). CPU is user and\n" +
		"system time of the command and of what it waited for, the container included.\n")
	report(b, sb.String())
}

// makeBundle makes an OCI bundle under dir with the rootfs of tarball and a
// `runc spec` config that runs /bin/true on a read-only root.
func makeBundle(b *testing.B, dir, tarball string) string {
	b.Helper()
	bundle := filepath.Join(dir, "bundle")
	rootfs := filepath.Join(bundle, "rootfs")
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		b.Fatal(err)
	}
	for _, c := range [][]string{{"tar", "-xf", tarball, "-C", rootfs}, {"runc", "spec", "-b", bundle}} {
		if out, err := exec.Command(c[0], c[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	path := filepath.Join(bundle, "config.json")
	raw, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	var spec map[string]any
	if err := json.Unmarshal(raw, &spec); err != nil {
		b.Fatal(err)
	}
	proc := spec["process"].(map[string]any)
	proc["args"] = []string{"/bin/true"}
	proc["terminal"] = false
	spec["root"].(map[string]any)["readonly"] = true
	if raw, err = json.Marshal(spec); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		b.Fatal(err)
	}
	return bundle
}

// BenchmarkDiff times `stow diff` against `docker diff` for a container
// that made 10 changes in an image of 100,000 files.
func BenchmarkDiff(b *testing.B) {
	testenv.Require(b, "root", "dockerd", "busybox")
	bins := harness.BuildBinaries(b)
	d := harness.StartDockerd(b)
	dir := b.TempDir()
	tarball := filepath.Join(dir, "big.tar")
	writeBigImage(b, tarball, harness.BusyboxTar(b), 100, 1000)

	stowRoot := filepath.Join(dir, "stow")
	stow := func(args ...string) (string, error) {
		out, err := exec.Command(bins.Stow, append([]string{"--root", stowRoot}, args...)...).CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("stow %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out), nil
	}
	ops := `echo x > /data/d000/f0000; rm /data/d001/f0001; echo y >> /data/d002/f0002; mkdir /new; ` +
		`echo z > /new/f; chmod 600 /data/d003/f0003; ln -s /data/d004 /link; rm -r /data/d005; ` +
		`ln /data/d006/f0006 /hard; touch /data/d007/f9999`
	if _, err := stow("image", "import", tarball, "big"); err != nil {
		b.Fatal(err)
	}
	if _, err := stow("run", "--name", "bigc", "big", "sh", "-c", ops); err != nil {
		b.Fatal(err)
	}
	d.Must("import", tarball, "stowage-big")
	d.Must("run", "--name", "bigd", "--network", "none", "stowage-big", "sh", "-c", ops)

	var stowOut, dockerOut string
	kinds := []struct {
		name string
		f    func() error
	}{
		{"docker diff (overlay2)", func() error {
			r := d.Run("diff", "bigd")
			if r.Code != 0 {
				return fmt.Errorf("docker diff: %s", r)
			}
			dockerOut = r.Stdout
			return nil
		}},
		{"stow diff", func() (err error) { stowOut, err = stow("diff", "bigc"); return err }},
	}
	for _, k := range kinds {
		timed(b, k.f)
	}
	if got, want := sortedLines(stowOut), sortedLines(dockerOut); got != want {
		b.Fatalf("stow diff and docker diff differ:\nstow:\n%s\ndocker:\n%s", got, want)
	}
	n := 10
	times := make([][]float64, len(kinds))
	for i := 0; i < n; i++ {
		for j := range kinds {
			k := (i + j) % len(kinds)
			times[k] = append(times[k], timed(b, kinds[k].f))
		}
	}
	rs := make([]float64, n)
	for i := range rs {
		rs[i] = times[1][i] / times[0][i]
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "### `diff` of a container with 10 changes in an image of 100,000 files (%d runs each, alternating)\n\n", n)
	sb.WriteString("| command | wall median (min-max) |\n|---|---|\n")
	for k, kind := range kinds {
		lo, hi := minMax(times[k])
		fmt.Fprintf(&sb, "| %s | %s (%s-%s) |\n", kind.name, ms(median(times[k])), ms(lo), ms(hi))
	}
	rlo, rhi := minMax(rs)
	fmt.Fprintf(&sb, "\nstow diff / docker diff, median of pairs: **%.3f** (%.3f-%.3f). Both print the same %d lines.\n",
		median(rs), rlo, rhi, strings.Count(stowOut, "\n"))
	report(b, sb.String())
}

// writeBigImage writes a rootfs tarball: the busybox rootfs base plus dirs
// directories of files small files each under /data.
func writeBigImage(b *testing.B, path string, base []byte, dirs, files int) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	tw := tar.NewWriter(f)
	tr := tar.NewReader(bytes.NewReader(base))
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if err := tw.WriteHeader(hdr); err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			b.Fatal(err)
		}
	}
	now := time.Now()
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "data/", Mode: 0o755, ModTime: now}))
	for i := 0; i < dirs; i++ {
		must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: fmt.Sprintf("data/d%03d/", i), Mode: 0o755, ModTime: now}))
		for j := 0; j < files; j++ {
			body := []byte(fmt.Sprintf("file %d of dir %d\n", j, i))
			must(tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("data/d%03d/f%04d", i, j), Mode: 0o644, Size: int64(len(body)), ModTime: now}))
			_, err := tw.Write(body)
			must(err)
		}
	}
	must(tw.Close())
}

func sortedLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// BenchmarkContainerMemory compares what the runtime keeps resident for
// each running container: stow's monitor process against containerd's shim
// for a Docker container running the same command.
func BenchmarkContainerMemory(b *testing.B) {
	testenv.Require(b, "root", "dockerd", "busybox")
	bins := harness.BuildBinaries(b)
	d := harness.StartDockerd(b)
	image := harness.ImportBusybox(b, d.Host)
	dir := b.TempDir()
	tarball := filepath.Join(dir, "rootfs.tar")
	if err := os.WriteFile(tarball, harness.BusyboxTar(b), 0o644); err != nil {
		b.Fatal(err)
	}
	stowRoot := filepath.Join(dir, "stow")
	stow := func(args ...string) string {
		out, err := exec.Command(bins.Stow, append([]string{"--root", stowRoot}, args...)...).Output()
		if err != nil {
			b.Fatalf("stow %s: %v", strings.Join(args, " "), err)
		}
		return strings.TrimSpace(string(out))
	}
	stow("image", "import", tarball, "bb")
	stow("run", "-d", "--name", "mem", "bb", "sleep", "600")
	b.Cleanup(func() { exec.Command(bins.Stow, "--root", stowRoot, "rm", "-f", "mem").Run() })
	var inspected []struct {
		State struct {
			MonitorPID int `json:"monitor_pid"`
		} `json:"state"`
	}
	if err := json.Unmarshal([]byte(stow("inspect", "mem")), &inspected); err != nil || len(inspected) != 1 {
		b.Fatalf("stow inspect: %v", err)
	}
	monitor := inspected[0].State.MonitorPID

	d.Must("run", "-d", "--name", "mem", "--network", "none", image, "sleep", "600")
	pid, err := strconv.Atoi(d.Must("inspect", "-f", "{{.State.Pid}}", "mem"))
	if err != nil {
		b.Fatal(err)
	}
	shim := parentPID(b, pid)

	var sb strings.Builder
	sb.WriteString("### Resident memory per running container (`sleep 600`)\n\n")
	sb.WriteString("| process | VmRSS | VmHWM (peak) |\n|---|---|---|\n")
	for _, p := range []struct {
		name string
		pid  int
	}{{"stow monitor (`stow run -d`)", monitor}, {"containerd-shim-runc-v2 (`docker run -d`)", shim}} {
		fmt.Fprintf(&sb, "| %s | %.1f MiB | %.1f MiB |\n", p.name, statusMiB(b, p.pid, "VmRSS:"), statusMiB(b, p.pid, "VmHWM:"))
	}
	report(b, sb.String())
}

// statusMiB reads a kB field of /proc/PID/status in MiB.
func statusMiB(b *testing.B, pid int, field string) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func parentPID(b *testing.B, pid int) int {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The command name may hold spaces; fields after its ')' are fixed.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+1:]))
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		b.Fatal(err)
	}
	return ppid
}
