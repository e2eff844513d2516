package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/control"
	"github.com/stowage/stowage/volumed/control/controltest"
)

// stow runs the command line in-process with env as its environment.
func stow(t *testing.T, env map[string]string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(t.Context(), args, &out, &errb, func(k string) string { return env[k] })
	return out.String(), errb.String(), code
}

// serve starts volumed's control server over a manager with fake providers
// of the given names (default "local") and two volumes: web, mounted twice,
// and db of 64 MiB. It returns the manager's Env and the server's host.
func serve(t *testing.T, providers ...string) (*controltest.Env, string) {
	t.Helper()
	e := controltest.New(t, providers...)
	ctx := t.Context()
	if _, err := e.Manager.Create(ctx, "web", nil); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b"} {
		if _, err := e.Manager.Mount(ctx, "web", id); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.Manager.Create(ctx, "db", map[string]string{"size": "64MiB"}); err != nil {
		t.Fatal(err)
	}
	info := control.Info{
		Version: "1.2.3", PID: 42, StartedAt: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Root: "/var/lib/stowage", PluginSocket: "/run/docker/plugins/stowage.sock",
		APISocket: "/run/stowage/volumed.sock", MetricsAddr: "127.0.0.1:9163",
	}
	return e, "unix://" + e.Serve(t, info)
}

func TestTables(t *testing.T) {
	e, host := serve(t, "local", "ceph")
	e.Fakes["ceph"].Fail(errors.New("connect: refused"))
	e.Manager.ProbeAll(t.Context())
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"volume", "ls"}, `
NAME   PROVIDER   SIZE    STATE   MOUNTS   MOUNTPOINT
db     local      64MiB   ready   0        -
web    local      -       ready   2        $WEB
`},
		{[]string{"provider", "ls"}, `
NAME    KIND      DRIVER         STATE   RESTARTS   VOLUMES   LAST ERROR
ceph    builtin   stowage.fake   down    -          0         provider "ceph": probe: Info: connect: refused
local   builtin   stowage.fake   up      -          2         -
`},
		{[]string{"status"}, `
version:         1.2.3
pid:             42
started:         2025-01-02T03:04:05Z
root:            /var/lib/stowage
plugin socket:   /run/docker/plugins/stowage.sock
api socket:      /run/stowage/volumed.sock
metrics address: 127.0.0.1:9163
volumes:         2
active mounts:   2
providers:       ceph (down), local (up)
`},
		{[]string{"version"}, "\nstow dev\n"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			out, errOut, code := stow(t, nil, append([]string{"--host", host}, tt.args...)...)
			if code != 0 || errOut != "" {
				t.Fatalf("exit %d, stderr %q", code, errOut)
			}
			want := strings.TrimPrefix(tt.want, "\n")
			want = strings.ReplaceAll(want, "$WEB", e.Manager.Mountpoint("web"))
			if out != want {
				t.Errorf("output:\n%s\nwant:\n%s", out, want)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	_, host := serve(t)
	env := map[string]string{"STOW_HOST": host}
	check := func(t *testing.T, out string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("output %q: %v", out, err)
		}
	}
	t.Run("volume ls", func(t *testing.T) {
		out, _, code := stow(t, env, "--format", "json", "volume", "ls")
		var vols []api.Volume
		check(t, out, &vols)
		if code != 0 || len(vols) != 2 || vols[0].Name != "db" || vols[1].MountIDs["a"] != 1 {
			t.Errorf("exit %d, %+v", code, vols)
		}
	})
	t.Run("provider ls", func(t *testing.T) {
		out, _, code := stow(t, env, "provider", "ls", "--format=json")
		var ps []api.Provider
		check(t, out, &ps)
		if code != 0 || len(ps) != 1 || ps[0].Volumes != 2 {
			t.Errorf("exit %d, %+v", code, ps)
		}
	})
	t.Run("status", func(t *testing.T) {
		out, _, code := stow(t, env, "status", "--format=json")
		var st api.Status
		check(t, out, &st)
		if code != 0 || st.PID != 42 || st.MountsActive != 2 || len(st.Providers) != 1 {
			t.Errorf("exit %d, %+v", code, st)
		}
	})
	t.Run("inspect", func(t *testing.T) {
		// inspect prints JSON whatever --format says.
		out, _, code := stow(t, env, "volume", "inspect", "web", "db")
		var vols []api.Volume
		check(t, out, &vols)
		if code != 0 || len(vols) != 2 || vols[0].Name != "web" || vols[1].CapacityBytes != 64<<20 {
			t.Errorf("exit %d, %+v", code, vols)
		}
	})
	t.Run("inspect missing", func(t *testing.T) {
		out, errOut, code := stow(t, env, "volume", "inspect", "nope", "web")
		var vols []api.Volume
		check(t, out, &vols)
		if code != 1 || len(vols) != 1 || errOut != "stow: volume \"nope\": not found\n" {
			t.Errorf("exit %d, %+v, stderr %q", code, vols, errOut)
		}
	})
	t.Run("create", func(t *testing.T) {
		out, _, code := stow(t, env, "--format", "json", "volume", "create", "-o", "size=1G", "big")
		var v api.Volume
		check(t, out, &v)
		if code != 0 || v.Name != "big" || v.CapacityBytes != 1<<30 {
			t.Errorf("exit %d, %+v", code, v)
		}
	})
	t.Run("version", func(t *testing.T) {
		out, _, code := stow(t, nil, "version", "--format", "json")
		var v map[string]string
		check(t, out, &v)
		if code != 0 || v["version"] != "dev" {
			t.Errorf("exit %d, %+v", code, v)
		}
	})
}

func TestVolumeCreate(t *testing.T) {
	e, host := serve(t)
	tests := []struct {
		name    string
		args    []string
		out     string
		errOut  string
		created bool
	}{
		{"plain", []string{"data"}, "data\n", "", true},
		{"options", []string{"-o", "size=64MiB", "--opt", "label=fs", "-p", "local", "sized"}, "sized\n", "", true},
		{"value with = and ,", []string{"-o", "label=a=b,c", "labelled"}, "labelled\n", "", true},
		{"no =", []string{"-o", "size", "x"}, "", "stow: invalid option \"size\": use KEY=VALUE\n", false},
		{"empty key", []string{"-o", "=1G", "x"}, "", "stow: invalid option \"=1G\": the key is empty\n", false},
		{"duplicate", []string{"-o", "a=1", "-o", "a=2", "x"}, "", "stow: option \"a\" given twice\n", false},
		{"provider twice", []string{"-p", "local", "-o", "provider=ceph", "x"}, "",
			"stow: provider given twice: -p local and -o provider=ceph\n", false},
		{"server rejects", []string{"-p", "nope", "x"}, "", "stow: create volume \"x\": invalid argument: unknown provider \"nope\" (configured providers: local)\n", false},
		{"no name", nil, "", "stow: accepts 1 arg(s), received 0\nRun 'stow volume create --help' for usage.\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := stow(t, nil, append([]string{"--host", host, "volume", "create"}, tt.args...)...)
			if out != tt.out || errOut != tt.errOut || (code == 0) != (tt.errOut == "") {
				t.Errorf("got exit %d, stdout %q, stderr %q; want stdout %q, stderr %q", code, out, errOut, tt.out, tt.errOut)
			}
			if len(tt.args) == 0 {
				return
			}
			name := tt.args[len(tt.args)-1]
			if _, err := e.Manager.Get(t.Context(), name); (err == nil) != tt.created {
				t.Errorf("volume %s created: %v, want %v", name, err == nil, tt.created)
			}
		})
	}
	v, err := e.Manager.Get(t.Context(), "labelled")
	if err != nil || v.Options["label"] != "a=b,c" {
		t.Errorf("labelled: %+v %v", v, err)
	}
}

// TestOptionsBeforeContact checks that bad options fail without volumed.
func TestOptionsBeforeContact(t *testing.T) {
	_, errOut, code := stow(t, nil, "--host", "unix:///nonexistent/volumed.sock", "volume", "create", "-o", "bad", "x")
	if code != 1 || errOut != "stow: invalid option \"bad\": use KEY=VALUE\n" {
		t.Errorf("exit %d, stderr %q", code, errOut)
	}
}

func TestVolumeRemove(t *testing.T) {
	e, host := serve(t)
	if _, err := e.Manager.Create(t.Context(), "old", nil); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := stow(t, nil, "--host", host, "volume", "rm", "db", "web", "nope", "old")
	if code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	if out != "db\nold\n" {
		t.Errorf("stdout %q, want the removed names", out)
	}
	if want := "stow: remove volume \"web\": in use by 2 mounts\nstow: remove volume \"nope\": not found\n"; errOut != want {
		t.Errorf("stderr %q, want %q", errOut, want)
	}
	vols, _ := e.Manager.List(t.Context())
	if len(vols) != 1 || vols[0].Name != "web" {
		t.Errorf("left %+v, want web only", vols)
	}

	out, errOut, code = stow(t, nil, "--host", host, "volume", "rm", "web")
	if code != 1 || out != "" || errOut == "" {
		t.Errorf("rm in use: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestErrors(t *testing.T) {
	_, host := serve(t)
	tests := []struct {
		name   string
		env    map[string]string
		args   []string
		errOut string
	}{
		{"bad format", nil, []string{"--host", host, "--format", "yaml", "volume", "ls"},
			"stow: invalid --format \"yaml\": use table or json\nRun 'stow volume ls --help' for usage.\n"},
		{"bad host", nil, []string{"--host", "tcp://localhost:1", "status"},
			"stow: invalid host \"tcp://localhost:1\": use unix:///PATH or an absolute socket path\n"},
		{"bad env host", map[string]string{"STOW_HOST": "volumed.sock"}, []string{"status"},
			"stow: invalid host \"volumed.sock\": use unix:///PATH or an absolute socket path\n"},
		{"not reachable", map[string]string{"STOW_HOST": "unix:///nonexistent/v.sock"}, []string{"volume", "ls"},
			"stow: volumed is not reachable at /nonexistent/v.sock: connect: no such file or directory (start volumed, or give its API socket with --host)\n"},
		{"flag beats env", map[string]string{"STOW_HOST": "unix:///nonexistent/v.sock"}, []string{"--host", host, "volume", "inspect", "x"},
			"stow: volume \"x\": not found\n"},
		{"unknown command", nil, []string{"volume", "frob"},
			"stow: unknown command \"frob\" for \"stow volume\"\nRun 'stow volume --help' for usage.\n"},
		{"unknown flag", nil, []string{"status", "--frob"},
			"stow: unknown flag: --frob\nRun 'stow status --help' for usage.\n"},
		{"extra args", nil, []string{"volume", "ls", "x"},
			"stow: unknown command \"x\" for \"stow volume ls\"\nRun 'stow volume ls --help' for usage.\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, errOut, code := stow(t, tt.env, tt.args...)
			if code != 1 || errOut != tt.errOut {
				t.Errorf("exit %d, stderr %q\nwant exit 1, stderr %q", code, errOut, tt.errOut)
			}
		})
	}
}
