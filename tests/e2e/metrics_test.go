package e2e_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/tests/e2e/harness"
)

// TestPrometheusScrapesVolumed runs a real Prometheus server against
// volumed and reads a mounted volume's figures back through its query API.
func TestPrometheusScrapesVolumed(t *testing.T) {
	testenv.Require(t, "root", "loop", "mkfs.ext4", "prometheus")
	v := harness.StartVolumed(t, harness.BuildBinaries(t))
	v.MustStow("volume", "create", "-o", "size=64MiB", "scraped")
	plugin := pluginClient(v.PluginSocket)
	if err := plugin("Mount", `{"Name":"scraped","ID":"prom"}`); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := plugin("Unmount", `{"Name":"scraped","ID":"prom"}`); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})

	promAddr := startPrometheus(t, v.MetricsAddr)
	query := func(q string) (float64, error) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		var body struct {
			Status string
			Data   struct {
				Result []struct {
					Value [2]any
				}
			}
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return 0, err
		}
		if body.Status != "success" || len(body.Data.Result) != 1 {
			return 0, fmt.Errorf("query %s: status %s, %d results", q, body.Status, len(body.Data.Result))
		}
		s, _ := body.Data.Result[0].Value[1].(string)
		return strconv.ParseFloat(s, 64)
	}
	var capacity float64
	err := harness.Poll(60*time.Second, func() error {
		up, err := query(`up{job="stowage"}`)
		if err != nil {
			return err
		}
		if up != 1 {
			return fmt.Errorf("volumed not up in Prometheus")
		}
		capacity, err = query(`stowage_volume_stats_capacity_bytes{volume="scraped",provider="local"}`)
		return err
	})
	if err != nil {
		t.Fatalf("Prometheus has no stowage figures: %v", err)
	}
	if capacity <= 32<<20 || capacity > 64<<20 {
		t.Errorf("capacity of a 64MiB volume as Prometheus saw it: %.0f bytes", capacity)
	}
	if mounts, err := query(`stowage_volume_mounts_active{volume="scraped"}`); err != nil || mounts != 1 {
		t.Errorf("stowage_volume_mounts_active = %v, %v; want 1", mounts, err)
	}
}

// startPrometheus runs a Prometheus server that scrapes target every second
// and returns its address. A cleanup stops it by PID.
func startPrometheus(t *testing.T, target string) string {
	t.Helper()
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	cfg := fmt.Sprintf("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: stowage\n    static_configs:\n      - targets: [%q]\n", target)
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	bin, err := testenv.LookPath("prometheus")
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file", filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path", filepath.Join(dir, "data"), "--web.listen-address", addr)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("prometheus log:\n%s", b)
		}
	})
	return addr
}

// pluginClient returns a function that sends one volume plugin request as
// dockerd does and fails unless it succeeds.
func pluginClient(socket string) func(method, body string) error {
	c := &http.Client{Transport: &http.Transport{Dial: func(_, _ string) (net.Conn, error) {
		return net.Dial("unix", socket)
	}}}
	return func(method, body string) error {
		resp, err := c.Post("http://plugin/VolumeDriver."+method, "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s %s", method, resp.Status, b)
		}
		return nil
	}
}
