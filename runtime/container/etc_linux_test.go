package container

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stowage/stowage/runtime/container/initproc"
)

// TestEtcFiles checks the /etc files a container gets, as Docker gives
// them: its host name, a hosts table that resolves it and localhost, and
// the host's resolver configuration on the host's network only. They are
// not changes of the container.
func TestEtcFiles(t *testing.T) {
	e, _ := testEngine(t)
	got := mustRun(t, e, Config{Hostname: "web1"}, `cat /etc/hostname
		grep -E "^127.0.0.1\s+localhost$" /etc/hosts
		grep -E "^127.0.1.1\s+web1$" /etc/hosts
		ping -c 1 -W 2 web1 >/dev/null && echo resolved
		grep -c nameserver /etc/resolv.conf || true`)
	if want := "web1\n127.0.0.1\tlocalhost\n127.0.1.1\tweb1\nresolved\n0"; got != want {
		t.Errorf("--net none:\n%s\nwant:\n%s", got, want)
	}
	host, err := os.ReadFile(hostResolvConf)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	if got := mustRun(t, e, Config{Network: NetHost}, "cat /etc/resolv.conf"); got != strings.TrimSpace(string(host)) {
		t.Errorf("--net host resolv.conf = %q, want the host's %q", got, host)
	}
	// Writes go to the container's files, not to its layer.
	c := newContainer(t, e, Config{}, "sh", "-c", "echo 10.0.0.1 db >> /etc/hosts")
	if st, err := e.Run(t.Context(), c.ID(), Stdio{}, nil); err != nil || st.ExitCode != 0 {
		t.Fatalf("run: %+v %v", st, err)
	}
	ents, err := os.ReadDir(filepath.Join(c.Dir, "upper"))
	if err != nil || len(ents) != 0 {
		t.Errorf("the container's layer holds %v (%v), want nothing", ents, err)
	}
	if b, err := os.ReadFile(filepath.Join(c.Dir, "hosts")); err != nil || !strings.HasSuffix(string(b), "10.0.0.1 db\n") {
		t.Errorf("the container's hosts file = %q, %v", b, err)
	}
}

func TestCovered(t *testing.T) {
	tests := []struct {
		targets []string
		want    bool
	}{
		{nil, false},
		{[]string{"/data", "/etcetera", "/etc/hostsx"}, false},
		{[]string{"/etc/hosts"}, true},
		{[]string{"/etc/"}, true},
		{[]string{"/etc"}, true},
		{[]string{"/"}, true},
	}
	for _, tt := range tests {
		var mounts []initproc.BindMount
		for _, tg := range tt.targets {
			mounts = append(mounts, initproc.BindMount{Target: tg})
		}
		if got := covered("/etc/hosts", mounts); got != tt.want {
			t.Errorf("covered(/etc/hosts, %q) = %v, want %v", tt.targets, got, tt.want)
		}
	}
}
