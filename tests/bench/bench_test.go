// Package bench_test holds stowage's benchmarks. They drive the built
// binaries against a real dockerd and report medians and ratios against a
// baseline measured in the same run; `make bench` runs them and writes
// BENCHMARKS.md. They are never run as tests and assert nothing about time.
package bench_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/tests/e2e/harness"
)

var (
	out    = flag.String("out", "", "append the markdown report to this file")
	runs   = flag.Int("runs", 20, "pairs of docker runs")
	cycles = flag.Int("cycles", 200, "create+mount+unmount+remove cycles")
	scale  = flag.Int("volumes", 10000, "volumes for the scale benchmark")
)

func TestMain(m *testing.M) { harness.Main(m) }

// report appends a markdown section to -out (and the log).
func report(b *testing.B, section string) {
	b.Helper()
	b.Log("\n" + section)
	if *out == "" {
		return
	}
	f, err := os.OpenFile(*out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintln(f, section)
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	if n == 0 {
		return 0
	}
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func minMax(xs []float64) (float64, float64) {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[0], s[len(s)-1]
}

func ms(s float64) string { return strconv.FormatFloat(s*1000, 'f', 1, 64) + " ms" }

// timed runs f and returns its wall time in seconds.
func timed(b *testing.B, f func() error) float64 {
	b.Helper()
	start := time.Now()
	if err := f(); err != nil {
		b.Fatal(err)
	}
	return time.Since(start).Seconds()
}

// BenchmarkDockerRun compares `docker run --rm -v V:/d IMAGE true` with a
// stowage volume of the local provider run in process by volumed and run as
// a CSI sidecar container (dir and fs types each) against Docker's built-in
// local driver, all alternating run by run.
func BenchmarkDockerRun(b *testing.B) {
	testenv.Require(b, "root", "dockerd", "busybox", "loop", "mkfs.ext4", "mkfs.xfs", "ldd", "tar")
	v := startSidecarVolumed(b, harness.BuildBinaries(b), "--log-level", "info")
	d := harness.StartDockerd(b)
	image := harness.ImportBusybox(b, d.Host)
	d.Must("volume", "create", "base")
	d.Must("volume", "create", "-d", v.Driver, "sdir")
	d.Must("volume", "create", "-d", v.Driver, "-o", "size=64MiB", "sfs")
	d.Must("volume", "create", "-d", v.Driver, "-o", "provider="+sidecarProvider, "cdir")
	d.Must("volume", "create", "-d", v.Driver, "-o", "provider="+sidecarProvider, "-o", "size=64MiB", "cfs")
	kinds := []struct {
		name, vol string
		inProcess int // for a sidecar volume, the index of its in-process twin; else -1
	}{
		{"Docker local driver", "base", -1},
		{"stowage local in process, type=dir", "sdir", -1},
		{"stowage local as a CSI sidecar, type=dir", "cdir", 1},
		{"stowage local in process, type=fs 64MiB (ext4 on loop)", "sfs", -1},
		{"stowage local as a CSI sidecar, type=fs 64MiB (ext4 on loop)", "cfs", 3},
	}
	docker := func(vol string) func() error {
		return func() error {
			r := d.Run("run", "--rm", "--network", "none", "-v", vol+":/d", image, "true")
			if r.Code != 0 {
				return fmt.Errorf("docker run -v %s: %s", vol, r)
			}
			return nil
		}
	}
	for _, k := range kinds { // warm-up
		timed(b, docker(k.vol))
	}
	times := make([][]float64, len(kinds))
	for i := 0; i < *runs; i++ {
		for j := range kinds {
			k := (i + j) % len(kinds) // rotate who goes first
			times[k] = append(times[k], timed(b, docker(kinds[k].vol)))
		}
	}
	// pairRatio is the median (min-max) of times[k][i] / times[base][i].
	pairRatio := func(k, base int) string {
		rs := make([]float64, len(times[k]))
		for i := range rs {
			rs[i] = times[k][i] / times[base][i]
		}
		lo, hi := minMax(rs)
		return fmt.Sprintf("**%.3f** (%.2f-%.2f)", median(rs), lo, hi)
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "### `docker run --rm -v V:/d IMAGE true` (%d runs each, alternating)\n\n", *runs)
	sb.WriteString("The sidecar is volumed's provider of type sidecar: `stow-provider local` in a container of the bundled runtime, over CSI.\n\n")
	sb.WriteString("| volume | wall median (min-max) | ratio to Docker's local driver, median of pairs (min-max) | sidecar / in process, median of pairs (min-max); goal ≤ 1.1 |\n|---|---|---|---|\n")
	for k, kind := range kinds {
		lo, hi := minMax(times[k])
		ratio, side := "1 (baseline)", ""
		if k > 0 {
			ratio = pairRatio(k, 0)
		}
		if kind.inProcess >= 0 {
			side = pairRatio(k, kind.inProcess)
		}
		fmt.Fprintf(&sb, "| %s | %s (%s-%s) | %s | %s |\n", kind.name, ms(median(times[k])), ms(lo), ms(hi), ratio, side)
	}
	report(b, sb.String())
}

// pluginClient speaks the volume plugin protocol as dockerd does.
type pluginClient struct{ c *http.Client }

func newPluginClient(socket string) *pluginClient {
	return &pluginClient{c: &http.Client{Transport: &http.Transport{
		MaxIdleConnsPerHost: 8,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		}}}}
}

func (p *pluginClient) call(method, body string) error {
	resp, err := p.c.Post("http://plugin/VolumeDriver."+method, "application/json", strings.NewReader(body))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: %s %s", method, body, resp.Status, b)
	}
	return nil
}

// BenchmarkLifecycle measures Create+Mount+Unmount+Remove cycles through
// the plugin socket, as dockerd sends them.
func BenchmarkLifecycle(b *testing.B) {
	testenv.Require(b, "root", "loop", "mkfs.ext4")
	v := harness.StartVolumed(b, harness.BuildBinaries(b), "--log-level", "warn")
	p := newPluginClient(v.PluginSocket)
	var sb strings.Builder
	sb.WriteString("### Create+Mount+Unmount+Remove through the plugin socket\n\n")
	sb.WriteString("| volume | cycles | cycle median (min-max) | cycles/s |\n|---|---|---|---|\n")
	for _, tc := range []struct {
		name, opts string
		n          int
	}{
		{"type=dir", `{}`, *cycles},
		{"type=fs 64MiB (mkfs.ext4 each time)", `{"size":"64MiB"}`, max(*cycles/10, 5)},
	} {
		var ts []float64
		total := time.Now()
		for i := 0; i < tc.n; i++ {
			name := fmt.Sprintf("c%d", i)
			ts = append(ts, timed(b, func() error {
				for _, c := range [][2]string{
					{"Create", fmt.Sprintf(`{"Name":%q,"Opts":%s}`, name, tc.opts)},
					{"Mount", fmt.Sprintf(`{"Name":%q,"ID":"m"}`, name)},
					{"Unmount", fmt.Sprintf(`{"Name":%q,"ID":"m"}`, name)},
					{"Remove", fmt.Sprintf(`{"Name":%q}`, name)},
				} {
					if err := p.call(c[0], c[1]); err != nil {
						return err
					}
				}
				return nil
			}))
		}
		lo, hi := minMax(ts)
		fmt.Fprintf(&sb, "| %s | %d | %s (%s-%s) | %.1f |\n", tc.name, tc.n, ms(median(ts)), ms(lo), ms(hi),
			float64(tc.n)/time.Since(total).Seconds())
	}
	report(b, sb.String())
}

// BenchmarkScale creates many volumes, mounts 100 of them, and measures
// List through the plugin socket and the control API, a metrics scrape and
// volumed's resident memory.
func BenchmarkScale(b *testing.B) {
	testenv.Require(b, "root")
	v := harness.StartVolumed(b, harness.BuildBinaries(b), "--log-level", "warn")
	p := newPluginClient(v.PluginSocket)
	n := *scale
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				if err := p.call("Create", fmt.Sprintf(`{"Name":"s%05d"}`, i)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	createS := time.Since(start).Seconds()
	mounted := min(100, n)
	for i := 0; i < mounted; i++ {
		if err := p.call("Mount", fmt.Sprintf(`{"Name":"s%05d","ID":"m"}`, i)); err != nil {
			b.Fatal(err)
		}
	}
	b.Cleanup(func() {
		for i := 0; i < mounted; i++ {
			p.call("Unmount", fmt.Sprintf(`{"Name":"s%05d","ID":"m"}`, i))
		}
	})
	api := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", v.APISocket)
	}}}
	get := func(c *http.Client, url string) func() error {
		return func() error {
			resp, err := c.Get(url)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				return err
			}
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("GET %s: %s", url, resp.Status)
			}
			return nil
		}
	}
	measure := func(f func() error) []float64 {
		timed(b, f) // warm-up
		var ts []float64
		for i := 0; i < 20; i++ {
			ts = append(ts, timed(b, f))
		}
		return ts
	}
	pluginList := measure(func() error { return p.call("List", `{}`) })
	apiList := measure(get(api, "http://volumed/v1/volumes"))
	scrape := measure(get(http.DefaultClient, "http://"+v.MetricsAddr+"/metrics"))
	rss := statusMiB(b, v.PID(), "VmRSS:")

	var sb strings.Builder
	fmt.Fprintf(&sb, "### %d volumes (type=dir), %d of them mounted\n\n", n, mounted)
	fmt.Fprintf(&sb, "Created in %.1f s (%.0f creates/s, 4 clients).\n\n", createS, float64(n)/createS)
	sb.WriteString("| measure | median (min-max), 20 runs | goal |\n|---|---|---|\n")
	row := func(name string, ts []float64, goal string) {
		lo, hi := minMax(ts)
		fmt.Fprintf(&sb, "| %s | %s (%s-%s) | %s |\n", name, ms(median(ts)), ms(lo), ms(hi), goal)
	}
	row("VolumeDriver.List (plugin socket)", pluginList, "≤ 50 ms")
	row("GET /v1/volumes (control API, stow volume ls)", apiList, "")
	row("GET /metrics (scrape)", scrape, "≤ 100 ms")
	fmt.Fprintf(&sb, "| volumed RSS after the above | %.1f MiB | ≤ 64 MiB |\n", rss)
	report(b, sb.String())
}
