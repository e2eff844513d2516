package bench_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
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

// rbdTotal is what each sequential run moves, and rbdRandTotal what each
// 4KiB random run writes: modest, as the test cluster keeps it in RAM.
const (
	rbdTotal     = 256 << 20
	rbdRandTotal = 32 << 20
)

// rbdThreads is the number of requests in flight, for fio (iodepth) and
// rbd bench (--io-threads) alike.
const rbdThreads = 16

// rbdSpeed matches the summary line of rbd bench, e.g.
// "elapsed: 2   ops: 64   ops/sec: 27.1   bytes/sec: 108 MiB/s".
var rbdSpeed = regexp.MustCompile(`ops/sec: ([0-9.]+)\s+bytes/sec: ([0-9.]+) ?([KMGT]i?B)?/s`)

// BenchmarkRBD compares fio inside a Docker container on an RBD volume of
// stow-rbd (FUSE file, loop device with direct I/O, ext4) with rbd bench
// against an image of the same one-node cluster, in the same run: 4MiB
// sequential write and read, and 4KiB random write IOPS; and times
// `docker run` of a fresh volume, whose first mount makes the file system.
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
	c.Run(b, "rbd", "create", "--pool", c.Pool, "--size", "1G", "bench")
	d.Must("volume", "create", "-d", v.Driver, "-o", "provider=rbd", "-o", "size=1GiB", "data")

	// fio runs from the host's /usr in the busybox container (Debian's
	// /lib and /lib64 lead into /usr).
	fio := func(name, rw, bs string, total int64) (bw, iops float64) {
		b.Helper()
		args := []string{"run", "--rm", "--network", "none", "-v", "data:/data",
			"-v", "/usr:/usr:ro", "-v", "/lib:/lib:ro", "-v", "/lib64:/lib64:ro", image,
			"/usr/bin/fio", "--name", name, "--filename", "/data/fio", "--rw", rw, "--bs", bs,
			"--size", strconv.Itoa(rbdTotal), "--io_size", strconv.FormatInt(total, 10),
			"--ioengine", "libaio", "--iodepth", strconv.Itoa(rbdThreads), "--direct", "1",
			"--randrepeat", "0", "--output-format", "json"}
		if strings.Contains(rw, "write") {
			// Writes count once the cluster has them all, as rbd bench
			// ends with a flush: librbd acknowledges some early.
			args = append(args, "--end_fsync", "1")
		}
		out := d.Must(args...)
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
			return res.Jobs[0].Read.BW, res.Jobs[0].Read.IOPS
		}
		return res.Jobs[0].Write.BW, res.Jobs[0].Write.IOPS
	}
	bench := func(ioType, pattern, size string, total int64) (bw, iops float64) {
		b.Helper()
		out := c.Run(b, "rbd", "bench", "--pool", c.Pool, "--io-type", ioType, "--io-pattern", pattern,
			"--io-size", size, "--io-total", strconv.FormatInt(total, 10), "--io-threads", strconv.Itoa(rbdThreads), "bench")
		m := rbdSpeed.FindAllStringSubmatch(out, -1)
		if m == nil {
			b.Fatalf("rbd bench printed no summary:\n%s", out)
		}
		last := m[len(m)-1]
		iops, _ = strconv.ParseFloat(last[1], 64)
		bw, _ = strconv.ParseFloat(last[2], 64)
		switch strings.TrimSuffix(strings.TrimSuffix(last[3], "B"), "i") {
		case "K":
			bw *= 1 << 10
		case "M":
			bw *= 1 << 20
		case "G":
			bw *= 1 << 30
		case "T":
			bw *= 1 << 40
		}
		return bw, iops
	}
	// The files and image are written in full once, so that reads and
	// rewrites find allocated objects on both sides.
	fio("fill", "write", "4M", rbdTotal)
	bench("write", "seq", "4M", rbdTotal)

	type pair struct{ vol, rbd []float64 }
	var seqW, seqR, randW pair
	for range rounds {
		bw, _ := fio("seqwrite", "write", "4M", rbdTotal)
		seqW.vol = append(seqW.vol, bw)
		bw, _ = bench("write", "seq", "4M", rbdTotal)
		seqW.rbd = append(seqW.rbd, bw)
		bw, _ = fio("seqread", "read", "4M", rbdTotal)
		seqR.vol = append(seqR.vol, bw)
		bw, _ = bench("read", "seq", "4M", rbdTotal)
		seqR.rbd = append(seqR.rbd, bw)
		_, iops := fio("randwrite", "randwrite", "4k", rbdRandTotal)
		randW.vol = append(randW.vol, iops)
		_, iops = bench("write", "rand", "4K", rbdRandTotal)
		randW.rbd = append(randW.rbd, iops)
	}

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
		"fio in a Docker container on the volume (libaio, iodepth %d, direct I/O, a %d MiB file; a write job ends with an fsync) against `rbd bench --io-threads %d` (which ends with a flush) on an image of the same pool. "+
		"Sequential runs move %d MiB, random ones write %d MiB.\n\n",
		rbdThreads, rbdTotal>>20, rbdThreads, rbdTotal>>20, rbdRandTotal>>20)
	sb.WriteString("| workload | container on the volume, median (min-max) | rbd bench, median (min-max) | ratio of medians; goal ≥ 0.8 |\n|---|---|---|---|\n")
	for _, row := range []struct {
		name string
		p    pair
		unit func(float64) string
	}{
		{"sequential write, 4MiB", seqW, mib},
		{"sequential read, 4MiB", seqR, mib},
		{"random write, 4KiB (IOPS)", randW, num},
	} {
		vlo, vhi := minMax(row.p.vol)
		rlo, rhi := minMax(row.p.rbd)
		fmt.Fprintf(&sb, "| %s | %s (%s-%s) | %s (%s-%s) | **%.2f** |\n", row.name,
			row.unit(median(row.p.vol)), row.unit(vlo), row.unit(vhi),
			row.unit(median(row.p.rbd)), row.unit(rlo), row.unit(rhi),
			median(row.p.vol)/median(row.p.rbd))
	}
	flo, fhi := minMax(fresh)
	ulo, uhi := minMax(used)
	fmt.Fprintf(&sb, "\n| `docker run --rm -v V:/data IMAGE true` on a 1GiB RBD volume | wall median (min-max) |\n|---|---|\n")
	fmt.Fprintf(&sb, "| fresh volume (first mount makes the ext4) | %s (%s-%s) |\n", ms(median(fresh)), ms(flo), ms(fhi))
	fmt.Fprintf(&sb, "| the same volume again | %s (%s-%s) |\n", ms(median(used)), ms(ulo), ms(uhi))
	report(b, sb.String())
}
