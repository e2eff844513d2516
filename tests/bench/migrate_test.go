package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/migrate"
	"github.com/stowage/stowage/migrate/migratetest"
	"github.com/stowage/stowage/plugins/volume"
	"github.com/stowage/stowage/tests/e2e/harness"
	"github.com/stowage/stowage/volumed/client"
)

// The migration benchmark's sizes come from the environment, so that
// bench.sh passes them without flags of their own:
//
//	MIGRATE_SIZE   the large file of cases (a) and (c); default 1GiB
//	MIGRATE_FILES  the small files of case (b); default 100000 (~400 MiB)
//	MIGRATE_RUNS   pairs per case; default 3
//	MIGRATE_PHASES when set, logs each stow migrate's phase times
//	MIGRATE_CASES  the cases to run, as letters (e.g. "c"); default all
func migrateEnv(b *testing.B) (size int64, files, runs int) {
	b.Helper()
	size = 1 << 30
	if s := os.Getenv("MIGRATE_SIZE"); s != "" {
		n, err := volume.ParseSize(s)
		if err != nil {
			b.Fatalf("MIGRATE_SIZE: %v", err)
		}
		size = n
	}
	return size, envCount(b, "MIGRATE_FILES", 100000), envCount(b, "MIGRATE_RUNS", 3)
}

// envCount returns the positive number in the environment variable name,
// def when it is unset.
func envCount(b *testing.B, name string, def int) int {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, s)
	}
	return n
}

// migBench is two hosts made of network namespaces: A runs stow migrate
// and rsync, B runs sshd; each has its volumed.
type migBench struct {
	b        *testing.B
	bins     harness.Binaries
	nsA, nsB *harness.Netns
	sshd     *harness.Sshd
	a, bv    *harness.Volumed
	state    string
	rsyncDir string
}

// sample is one timed copy.
type sample struct {
	secs float64
	wire int64 // bytes through A's end of the link, both directions
	res  migrate.Result
}

// wire returns the bytes A's veth carried so far, both directions.
func (m *migBench) wire() int64 {
	m.b.Helper()
	out, err := m.nsA.Command("ip", "-s", "-j", "link", "show", "dev", m.nsA.Veth).Output()
	if err != nil {
		m.b.Fatalf("ip -s link show %s: %v", m.nsA.Veth, err)
	}
	var links []struct {
		Stats struct {
			RX struct{ Bytes int64 } `json:"rx"`
			TX struct{ Bytes int64 } `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		m.b.Fatalf("ip -s -j link show %s: %q: %v", m.nsA.Veth, out, err)
	}
	return links[0].Stats.RX.Bytes + links[0].Stats.TX.Bytes
}

// stow migrates vol to B's volume target and returns the engine's result.
func (m *migBench) stow(vol, target string, extra ...string) sample {
	m.b.Helper()
	args := append([]string{"--host", m.a.Host(), "--format", "json", "migrate", vol,
		fmt.Sprintf("ssh://root@%s/?volume=%s", m.sshd.Addr, target),
		"--identity", m.sshd.Identity, "--known-hosts", m.sshd.KnownHosts,
		"--remote-stow", m.bins.Stow, "--remote-host", m.bv.Host(), "--state-dir", m.state}, extra...)
	cmd := m.nsA.Command(m.bins.Stow, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	quiesce()
	w := m.wire()
	start := time.Now()
	if err := cmd.Run(); err != nil {
		m.b.Fatalf("stow migrate %s: %v\n%s", vol, err, stderr.String())
	}
	s := sample{secs: time.Since(start).Seconds(), wire: m.wire() - w}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var last struct{ Result migrate.Result }
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
		m.b.Fatalf("stow migrate result %q: %v", lines[len(lines)-1], err)
	}
	s.res = last.Result
	if os.Getenv("MIGRATE_PHASES") != "" {
		var ph []string
		for i, p := range s.res.Phases {
			end := start.Add(time.Duration(s.secs * float64(time.Second)))
			if i+1 < len(s.res.Phases) {
				end = s.res.Phases[i+1].At
			}
			ph = append(ph, fmt.Sprintf("%s %s", p.Phase, end.Sub(p.At).Round(time.Millisecond)))
		}
		m.b.Logf("stow migrate %s: %.3fs: %s; hashed %s", vol, s.secs, strings.Join(ph, ", "), volume.FormatSize(s.res.HashedBytes))
	}
	return s
}

// sshCmd is the ssh command line of the baseline tools, to the same sshd
// as stow migrate.
func (m *migBench) sshCmd() string {
	return fmt.Sprintf("ssh -i %s -o UserKnownHostsFile=%s -o StrictHostKeyChecking=yes -o BatchMode=yes -p %d",
		m.sshd.Identity, m.sshd.KnownHosts, m.sshd.Port)
}

// rsync copies the content of A's volume vol to dir on B with
// rsync -aHAXS --numeric-ids over ssh to the same sshd.
func (m *migBench) rsync(vol, dir string) sample {
	m.b.Helper()
	return m.timed(vol, "rsync", func(src string) *exec.Cmd {
		return m.nsA.Command("rsync", "-aHAXS", "--numeric-ids", "-e", m.sshCmd(), src+"/", fmt.Sprintf("root@%s:%s/", m.nsB.IP, dir))
	})
}

// tarFlags are GNU tar's for what rsync -aHAXS --numeric-ids keeps.
const tarFlags = "--numeric-owner --acls --xattrs --xattrs-include='*'"

// tarPipe streams the content of A's volume vol to dir on B, tar to tar
// over ssh to the same sshd: one stream, with no checksums, no
// verification and nothing to resume from, what a file-level copy over
// this link costs when it does nothing but copy.
func (m *migBench) tarPipe(vol, dir string) sample {
	m.b.Helper()
	return m.timed(vol, "tar over ssh", func(src string) *exec.Cmd {
		script := fmt.Sprintf("tar -C %s %s -S -cf - . | %s root@%s \"mkdir -p %s && tar -C %s %s -xpf -\"",
			src, tarFlags, m.sshCmd(), m.nsB.IP, dir, dir, tarFlags)
		return m.nsA.Command("bash", "-ec", "set -o pipefail; "+script)
	})
}

// timed runs the command that cmd makes for the mount point of A's volume
// vol, and returns its time and the bytes on the wire.
func (m *migBench) timed(vol, what string, cmd func(src string) *exec.Cmd) sample {
	m.b.Helper()
	var s sample
	m.withMount(vol, func(src string) {
		c := cmd(src)
		quiesce()
		w := m.wire()
		start := time.Now()
		if out, err := c.CombinedOutput(); err != nil {
			m.b.Fatalf("%s: %v\n%s", what, err, out)
		}
		s = sample{secs: time.Since(start).Seconds(), wire: m.wire() - w}
	})
	return s
}

// quiesce writes out what earlier runs and deletions left to the disks,
// so that a timed run does not pay for the run before it.
func quiesce() { syscall.Sync() }

// withMount mounts A's volume vol for the length of f.
func (m *migBench) withMount(vol string, f func(path string)) {
	m.b.Helper()
	p := client.NewPlugin(m.a.PluginSocket)
	path, err := p.Mount(context.Background(), vol, "bench")
	if err != nil {
		m.b.Fatalf("mount %s: %v", vol, err)
	}
	f(path)
	if err := p.Unmount(context.Background(), vol, "bench"); err != nil {
		m.b.Fatalf("unmount %s: %v", vol, err)
	}
}

// writeRandom writes size pseudo-random bytes to path.
func writeRandom(b *testing.B, path string, size int64, seed uint64) {
	b.Helper()
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.NewChaCha8([32]byte{byte(seed)})
	buf := make([]byte, 4<<20)
	for off := int64(0); off < size; off += int64(len(buf)) {
		rng.Read(buf)
		if _, err := f.Write(buf[:min(int64(len(buf)), size-off)]); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// changeRegions overwrites 1 % of the file at path, in random 64 KiB
// regions, keeping its size.
func changeRegions(b *testing.B, path string, seed uint64) {
	b.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	const region = 64 << 10
	rng := rand.New(rand.NewPCG(seed, 2))
	buf := make([]byte, region)
	regions := fi.Size() / region
	for i := int64(0); i < max(regions/100, 1); i++ {
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(buf, rng.Int64N(regions)*region); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// hostDisk makes a fresh ext4 file system of size bytes (sparse, on a loop
// device), mounts it for the rest of the benchmark and returns its mount
// point: the target host's own disk. Copies land there, and not in the
// machine's shared temporary directory, whose file system (without a
// journal) makes file creation far slower for minutes after many files
// were deleted, which the benchmark itself does between pairs.
func hostDisk(b *testing.B, size int64) string {
	b.Helper()
	dir := b.TempDir()
	img, mnt := filepath.Join(dir, "disk.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		b.Fatal(err)
	}
	f, err := os.Create(img)
	if err == nil {
		err = f.Truncate(size)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		b.Fatalf("make the disk image: %v", err)
	}
	// Inode tables and journal are written now, not by the kernel in the
	// background while the benchmark runs.
	for _, args := range [][]string{
		{"mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img},
		{"mount", "-o", "loop", img, mnt},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	b.Cleanup(func() {
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			b.Errorf("umount %s: %v\n%s", mnt, err, out)
		}
	})
	return mnt
}

// BenchmarkMigrate compares stow migrate with rsync -aHAXS --numeric-ids
// over the same ssh between two namespace hosts, alternating in pairs: (a)
// one large file cold, (b) many small files cold, (c) the large file with 1
// % of it changed after a first copy; and reports the downtime of (c) from
// the engine's own phase times (final pass start to target ready).
func BenchmarkMigrate(b *testing.B) {
	testenv.Require(b, "root", "ip", "nsenter", "sshd", "ssh", "rsync", "mkfs.ext4", "mount")
	size, nfiles, runs := migrateEnv(b)
	m := &migBench{b: b, bins: harness.BuildBinaries(b), state: b.TempDir()}
	m.nsA, m.nsB = harness.NetnsPair(b)
	m.sshd = harness.StartSshd(b, m.nsB)
	m.a = harness.StartVolumed(b, m.bins, "--log-level", "warn")
	// B writes to a disk of its own, which both tools' copies share.
	disk := hostDisk(b, 3*size+8<<30)
	m.bv = harness.StartVolumed(b, m.bins, "--log-level", "warn", "--root", filepath.Join(disk, "volumed"))
	rsyncRoot := filepath.Join(disk, "rsync")
	if err := os.Mkdir(rsyncRoot, 0o755); err != nil {
		b.Fatal(err)
	}

	// Sources on A: one large file; many small ones; the large file with
	// 1 % changed.
	var smallBytes int64
	for _, v := range []string{"large", "small", "changed"} {
		m.a.MustStow("volume", "create", v)
	}
	m.withMount("large", func(p string) { writeRandom(b, filepath.Join(p, "disk.img"), size, 1) })
	only := os.Getenv("MIGRATE_CASES")
	if only == "" || strings.ContainsRune(only, 'b') {
		m.withMount("small", func(p string) { smallBytes = migratetest.WriteSmall(b, p, nfiles) })
	}
	m.withMount("changed", func(p string) {
		writeRandom(b, filepath.Join(p, "disk.img"), size, 1)
		changeRegions(b, filepath.Join(p, "disk.img"), 9)
	})

	// Each case copies the volume src; one with before copies that volume
	// first, untimed, into the same target.
	type result struct {
		name, goal  string
		src, before string
		// floor runs tarPipe after each pair as well.
		floor         bool
		stow, rs, tar []sample
	}
	cases := []*result{
		{name: fmt.Sprintf("(a) one file of %s, cold", volume.FormatSize(size)), goal: "≤ 1.0", src: "large"},
		{name: fmt.Sprintf("(b) %d small files (%s), cold", nfiles, volume.FormatSize(smallBytes)), goal: "≤ 0.5", src: "small", floor: true},
		{name: fmt.Sprintf("(c) one file of %s, 1 %% changed in 64 KiB regions after a first copy", volume.FormatSize(size)), goal: "≤ 0.8",
			src: "changed", before: "large"},
	}
	seq := 0
	for i := range runs {
		for k, c := range cases {
			seq++
			if only != "" && !strings.ContainsRune(only, rune('a'+k)) {
				continue
			}
			name := fmt.Sprintf("m%d", seq)
			dir := filepath.Join(rsyncRoot, name)
			first := func() {
				var extra []string
				if c.before != "" {
					m.stow(c.before, name)
					extra = append(extra, "--force")
				}
				c.stow = append(c.stow, m.stow(c.src, name, extra...))
			}
			second := func() {
				if c.before != "" {
					m.rsync(c.before, dir)
				}
				c.rs = append(c.rs, m.rsync(c.src, dir))
			}
			if i%2 == 1 {
				first, second = second, first
			}
			first()
			second()
			m.bv.MustStow("volume", "rm", name)
			if err := os.RemoveAll(dir); err != nil {
				b.Fatal(err)
			}
			if c.floor {
				c.tar = append(c.tar, m.tarPipe(c.src, dir))
				if err := os.RemoveAll(dir); err != nil {
					b.Fatal(err)
				}
			}
		}
	}

	var sb strings.Builder
	sb.WriteString("### Migration: stow migrate against rsync -aHAXS --numeric-ids over the same ssh\n\n")
	fmt.Fprintf(&sb, "Two hosts made of network namespaces on one veth link, each with its volumed; B writes both tools' copies to a fresh ext4 file system of its own (a loop-mounted file). %d pairs per case, alternating which goes first. Bytes on the wire are the veth's counters (both directions).\n\n", runs)
	sb.WriteString("| case | stow migrate median (min-max) | rsync median (min-max) | ratio, median of pairs (min-max); goal | wire stow / rsync (medians) |\n|---|---|---|---|---|\n")
	for _, c := range cases {
		if len(c.stow) == 0 {
			continue
		}
		st, rs := secs(c.stow), secs(c.rs)
		ratios := make([]float64, len(st))
		for i := range st {
			ratios[i] = st[i] / rs[i]
		}
		slo, shi := minMax(st)
		rlo, rhi := minMax(rs)
		qlo, qhi := minMax(ratios)
		fmt.Fprintf(&sb, "| %s | %s (%s-%s) | %s (%s-%s) | **%.2f** (%.2f-%.2f); %s | %s / %s |\n", c.name,
			ms(median(st)), ms(slo), ms(shi), ms(median(rs)), ms(rlo), ms(rhi), median(ratios), qlo, qhi, c.goal,
			volume.FormatSize(int64(median(wires(c.stow)))), volume.FormatSize(int64(median(wires(c.rs)))))
	}
	for _, c := range cases {
		if len(c.tar) == 0 {
			continue
		}
		st, rs, tr := secs(c.stow), secs(c.rs), secs(c.tar)
		tarRs, stowTar := make([]float64, len(tr)), make([]float64, len(tr))
		for i := range tr {
			tarRs[i], stowTar[i] = tr[i]/rs[i], st[i]/tr[i]
		}
		lo, hi := minMax(tarRs)
		fmt.Fprintf(&sb, "\nFloor of %s: tar -c | ssh | tar -x over the same ssh to the same disk (%s; one stream, no checksums, no verification, nothing to resume from), run after each pair: median %s; against rsync **%.2f** (%.2f-%.2f), median of ratios in the same pairs; stow migrate against it %.2f.\n",
			c.name[:3], tarFlags, ms(median(tr)), median(tarRs), lo, hi, median(stowTar))
	}
	c := cases[2]
	if len(c.stow) == 0 {
		report(b, sb.String())
		return
	}
	var down, sent, sums []float64
	for _, s := range c.stow {
		down = append(down, s.res.Downtime.Seconds())
		sent = append(sent, float64(s.res.SentBytes))
		sums = append(sums, float64(s.res.ChecksumBytes))
	}
	lo, hi := minMax(down)
	fmt.Fprintf(&sb, "\nDowntime of (c), from the start of the final pass (the freeze point) to the target volume ready, from the engine's phase times: median **%s** (%s-%s); goal ≤ 1 s. Both sides hash every file afresh just before the freeze; the verification while frozen hashes again only what changed since. Content sent in (c): %s of %s, with %s of block checksums.\n",
		ms(median(down)), ms(lo), ms(hi), volume.FormatSize(int64(median(sent))), volume.FormatSize(size), volume.FormatSize(int64(median(sums))))
	report(b, sb.String())
}

func secs(s []sample) []float64 {
	out := make([]float64, len(s))
	for i := range s {
		out[i] = s[i].secs
	}
	return out
}

func wires(s []sample) []float64 {
	out := make([]float64, len(s))
	for i := range s {
		out[i] = float64(s[i].wire)
	}
	return out
}
