package bench_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/plugins/rbd/rbdtest"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// rbdRuns is how often each RBD measurement repeats by default,
// alternating between the container and rbd bench; RBD_RUNS overrides it.
const rbdRuns = 3

// rbdSize is the size of the fio file and of rbd bench's image, both
// written in full before the runs, so that every run finds allocated
// objects; rbdMoved is what each sequential run moves, wrapping around
// (long enough that rbd bench's start-up weighs little), and rbdRandTotal
// what each 4KiB random run writes. Modest, as the test cluster keeps its
// data in RAM.
const (
	rbdSize      = 256 << 20
	rbdMoved     = 1 << 30
	rbdRandTotal = 32 << 20
)

// rbdThreads is the number of requests in flight, for fio (iodepth) and
// rbd bench (--io-threads) alike.
const rbdThreads = 16

// rbdSpeed matches the summary line of rbd bench, e.g.
// "elapsed: 2   ops: 64   ops/sec: 27.1   bytes/sec: 108 MiB/s".
var rbdSpeed = regexp.MustCompile(`ops/sec: ([0-9.]+)\s+bytes/sec: ([0-9.]+) ?([KMGT]i?B)?/s`)

// run is one measurement: its speed, and the CPU time the client (the
// provider serving the container, or rbd bench) and the OSD took, in
// seconds.
type run struct {
	bw, iops    float64
	client, osd float64
}

// BenchmarkRBD compares fio inside a Docker container on an RBD volume of
// stow-rbd (FUSE file, loop device with direct I/O, ext4) with rbd bench
// against an image of the same one-node cluster, in the same run: 4MiB
// sequential write and read, and 4KiB random write IOPS, with the CPU time
// each took; and times `docker run` of a fresh volume, whose first mount
// makes the file system.
//
// Environment:
//
//	RBD_RUNS  how often each measurement repeats (default 3)
func BenchmarkRBD(b *testing.B) {
	testenv.Require(b, "root", "dockerd", "busybox", "fio", "mkfs.ext4", "fusermount")
	rounds := envCount(b, "RBD_RUNS", rbdRuns)
	c := rbdtest.Start(b, rbdtest.Options{})
	bins := harness.BuildBinaries(b)
	p := harness.StartStowRBD(b, harness.BuildStowRBD(b), c, "bench", "--log-level", "info")
	config := filepath.Join(b.TempDir(), "volumed.toml")
	if err := os.WriteFile(config, fmt.Appendf(nil, "[providers.rbd]\ntype = \"csi\"\nendpoint = %q\n", p.Endpoint()), 0o644); err != nil {
		b.Fatal(err)
	}
	v := harness.StartVolumed(b, bins, "--config", config, "--log-level", "info")
	d := harness.StartDockerd(b)
	image := harness.ImportBusybox(b, d.Host)
	osd := c.Pid(b, "osd.0")
	c.Run(b, "rbd", "create", "--pool", c.Pool, "--size", strconv.Itoa(rbdSize>>20)+"M", "bench")
	d.Must("volume", "create", "-d", v.Driver, "-o", "provider=rbd", "-o", "size=1GiB", "data")
	// A container keeps the volume mounted, so that each fio run (docker
	// exec) measures I/O and not the mount; fio runs from the host's /usr
	// (Debian's /lib and /lib64 lead into /usr).
	holder := strings.TrimSpace(d.Must("run", "-d", "--network", "none", "-v", "data:/data",
		"-v", "/usr:/usr:ro", "-v", "/lib:/lib:ro", "-v", "/lib64:/lib64:ro", image, "sleep", "3600"))

	fio := func(name, rw, bs string, total int64) run {
		b.Helper()
		args := []string{"exec", holder,
			"/usr/bin/fio", "--name", name, "--filename", "/data/fio", "--rw", rw, "--bs", bs,
			"--size", strconv.Itoa(rbdSize), "--io_size", strconv.FormatInt(total, 10),
			"--ioengine", "libaio", "--iodepth", strconv.Itoa(rbdThreads), "--direct", "1",
			"--randrepeat", "0", "--output-format", "json"}
		if strings.Contains(rw, "write") {
			// Writes count once the cluster has them all, as rbd bench
			// ends with a flush: librbd acknowledges some early.
			args = append(args, "--end_fsync", "1")
		}
		client, server := cpuSeconds(b, p.Pid()), cpuSeconds(b, osd)
		out := d.Must(args...)
		r := run{client: cpuSeconds(b, p.Pid()) - client, osd: cpuSeconds(b, osd) - server}
		var res struct {
			Jobs []struct {
				Read, Write struct {
					BW   float64 `json:"bw_bytes"`
					IOPS float64 `json:"iops"`
				}
			} `json:"jobs"`
		}
		if err := json.Unmarshal([]byte(out[strings.Index(out, "{"):]), &res); err != nil || len(res.Jobs) != 1 {
			b.Fatalf("fio %s: %v\n%s", name, err, out)
		}
		if strings.Contains(rw, "read") {
			r.bw, r.iops = res.Jobs[0].Read.BW, res.Jobs[0].Read.IOPS
		} else {
			r.bw, r.iops = res.Jobs[0].Write.BW, res.Jobs[0].Write.IOPS
		}
		return r
	}
	// rbd runs rbd bench and returns its output and the CPU time of its
	// process.
	rbd := func(ioType, pattern string, size, total int64) (string, float64) {
		b.Helper()
		cmd := exec.Command("rbd", "bench", "--pool", c.Pool, "--io-type", ioType, "--io-pattern", pattern,
			"--io-size", strconv.FormatInt(size, 10), "--io-total", strconv.FormatInt(total, 10),
			"--io-threads", strconv.Itoa(rbdThreads), "bench")
		cmd.Env = c.Env()
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("rbd bench: %v\n%s", err, out)
		}
		return string(out), (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	}
	bench := func(ioType, pattern string, size, total int64) run {
		b.Helper()
		// What a run of one request takes is rbd's start-up (connecting,
		// opening the image), not moving data.
		_, startup := rbd(ioType, pattern, size, size)
		server := cpuSeconds(b, osd)
		out, client := rbd(ioType, pattern, size, total)
		if client < startup {
			b.Fatalf("rbd bench %s %s took %.3fs of CPU, less than a run of one request (%.3fs)", ioType, pattern, client, startup)
		}
		r := run{client: client - startup, osd: cpuSeconds(b, osd) - server}
		m := rbdSpeed.FindAllStringSubmatch(out, -1)
		if m == nil {
			b.Fatalf("rbd bench printed no summary:\n%s", out)
		}
		last := m[len(m)-1]
		r.iops, _ = strconv.ParseFloat(last[1], 64)
		r.bw, _ = strconv.ParseFloat(last[2], 64)
		switch strings.TrimSuffix(strings.TrimSuffix(last[3], "B"), "i") {
		case "K":
			r.bw *= 1 << 10
		case "M":
			r.bw *= 1 << 20
		case "G":
			r.bw *= 1 << 30
		case "T":
			r.bw *= 1 << 40
		}
		return r
	}
	// The file and the image are written in full once, so that reads and
	// rewrites find allocated objects on both sides.
	fio("fill", "write", "4M", rbdSize)
	bench("write", "seq", 4<<20, rbdSize)

	type pair struct{ vol, rbd []run }
	var seqW, seqR, randW pair
	for range rounds {
		seqW.vol = append(seqW.vol, fio("seqwrite", "write", "4M", rbdMoved))
		seqW.rbd = append(seqW.rbd, bench("write", "seq", 4<<20, rbdMoved))
		seqR.vol = append(seqR.vol, fio("seqread", "read", "4M", rbdMoved))
		seqR.rbd = append(seqR.rbd, bench("read", "seq", 4<<20, rbdMoved))
		randW.vol = append(randW.vol, fio("randwrite", "randwrite", "4k", rbdRandTotal))
		randW.rbd = append(randW.rbd, bench("write", "rand", 4<<10, rbdRandTotal))
	}
	d.Must("rm", "-f", holder)

	// Time from docker run to the container running on a fresh volume,
	// whose first mount makes the file system, against a volume used
	// before.
	var fresh, used []float64
	for i := range rounds {
		name := fmt.Sprintf("fresh%d", i)
		d.Must("volume", "create", "-d", v.Driver, "-o", "provider=rbd", "-o", "size=1GiB", name)
		fresh = append(fresh, timed(b, func() error {
			if r := d.Run("run", "--rm", "--network", "none", "-v", name+":/data", image, "true"); r.Code != 0 {
				return fmt.Errorf("docker run -v %s: %s", name, r)
			}
			return nil
		}))
		used = append(used, timed(b, func() error {
			if r := d.Run("run", "--rm", "--network", "none", "-v", name+":/data", image, "true"); r.Code != 0 {
				return fmt.Errorf("docker run -v %s: %s", name, r)
			}
			return nil
		}))
		d.Must("volume", "rm", name)
	}

	mib := func(x float64) string { return fmt.Sprintf("%.0f MiB/s", x/(1<<20)) }
	num := func(x float64) string { return fmt.Sprintf("%.0f", x) }
	var sb strings.Builder
	fmt.Fprintf(&sb, "### Ceph RBD: a container on an RBD volume against `rbd bench` (%d runs each, alternating)\n\n", rounds)
	fmt.Fprintf(&sb, "One-node test cluster (tests/scripts/ceph.sh: one monitor, one memstore OSD, on 127.0.0.1) on the same machine. "+
		"The volume is mapped without kernel modules: stow-rbd serves the image as a FUSE file, attached to a loop device with direct I/O, ext4 on top. "+
		"fio in a Docker container on the volume (libaio, iodepth %d, direct I/O, a %d MiB file; a write job ends with an fsync) against `rbd bench --io-threads %d` (which ends with a flush) on a %d MiB image of the same pool. "+
		"Sequential runs move %d MiB (wrapping around), random ones write %d MiB.\n\n",
		rbdThreads, rbdSize>>20, rbdThreads, rbdSize>>20, rbdMoved>>20, rbdRandTotal>>20)
	sb.WriteString("| workload | container on the volume, median (min-max) | rbd bench, median (min-max) | ratio of medians; goal ≥ 0.8 |\n|---|---|---|---|\n")
	rows := []struct {
		name   string
		p      pair
		speed  func(run) float64
		unit   func(float64) string
		amount float64 // GiB moved, or thousands of writes
	}{
		{"sequential write, 4MiB", seqW, func(r run) float64 { return r.bw }, mib, float64(rbdMoved) / (1 << 30)},
		{"sequential read, 4MiB", seqR, func(r run) float64 { return r.bw }, mib, float64(rbdMoved) / (1 << 30)},
		{"random write, 4KiB (IOPS)", randW, func(r run) float64 { return r.iops }, num, float64(rbdRandTotal) / 4096 / 1000},
	}
	of := func(rs []run, f func(run) float64) []float64 {
		xs := make([]float64, len(rs))
		for i, r := range rs {
			xs[i] = f(r)
		}
		return xs
	}
	for _, row := range rows {
		vol, rb := of(row.p.vol, row.speed), of(row.p.rbd, row.speed)
		vlo, vhi := minMax(vol)
		rlo, rhi := minMax(rb)
		fmt.Fprintf(&sb, "| %s | %s (%s-%s) | %s (%s-%s) | **%.2f** |\n", row.name,
			row.unit(median(vol)), row.unit(vlo), row.unit(vhi),
			row.unit(median(rb)), row.unit(rlo), row.unit(rhi),
			median(vol)/median(rb))
	}
	sb.WriteString("\nCPU time per GiB moved (sequential) or per 1000 writes (random), medians: the provider's process serving the container (fio's own is not counted) " +
		"against rbd bench's process (less that of a run of one request, its start-up), and the OSD's during each. " +
		fmt.Sprintf("The machine's %d cores run all of them.\n\n", runtime.NumCPU()) +
		"| workload | stow-rbd | rbd bench | OSD, container runs | OSD, rbd bench runs |\n|---|---|---|---|---|\n")
	for _, row := range rows {
		per := func(rs []run, f func(run) float64) string {
			return fmt.Sprintf("%.3f s", median(of(rs, f))/row.amount)
		}
		client, server := func(r run) float64 { return r.client }, func(r run) float64 { return r.osd }
		fmt.Fprintf(&sb, "| %s | %s | %s | %s | %s |\n", strings.TrimSuffix(row.name, " (IOPS)"),
			per(row.p.vol, client), per(row.p.rbd, client), per(row.p.vol, server), per(row.p.rbd, server))
	}
	flo, fhi := minMax(fresh)
	ulo, uhi := minMax(used)
	fmt.Fprintf(&sb, "\n| `docker run --rm -v V:/data IMAGE true` on a 1GiB RBD volume | wall median (min-max) |\n|---|---|\n")
	fmt.Fprintf(&sb, "| fresh volume (first mount makes the ext4) | %s (%s-%s) |\n", ms(median(fresh)), ms(flo), ms(fhi))
	fmt.Fprintf(&sb, "| the same volume again | %s (%s-%s) |\n", ms(median(used)), ms(ulo), ms(uhi))
	report(b, sb.String())
}

// cpuSeconds returns the CPU time, user and system, that process pid and
// its threads have taken so far.
func cpuSeconds(b *testing.B, pid int) float64 {
	b.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which may hold spaces, start at
	// the third; utime and stime are the 14th and 15th, in clock ticks
	// (USER_HZ, 100 on Linux).
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		b.Fatalf("/proc/%d/stat: too few fields: %q", pid, s)
	}
	user, err1 := strconv.ParseFloat(f[11], 64)
	sys, err2 := strconv.ParseFloat(f[12], 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("/proc/%d/stat: %q", pid, s)
	}
	return (user + sys) / 100
}
