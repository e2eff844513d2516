package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stowage/stowage/volumed/api"
	"github.com/stowage/stowage/volumed/control/controltest"
)

// TestVolumeSnapshots runs the snapshot, copy, resize and unlock commands
// against the real manager with a fake "rbd" provider that has these
// abilities and a "local" one that has none.
func TestVolumeSnapshots(t *testing.T) {
	e, host := serve(t, "rbd", "local"+controltest.BasicSuffix)
	env := map[string]string{"STOW_HOST": host}
	steps := []struct {
		args   []string
		code   int
		stdout string // exact, when set
		want   string // in stdout or stderr
	}{
		{args: []string{"volume", "snapshot", "db", "s1"}, stdout: "db@s1\n"},
		{args: []string{"volume", "snapshot", "create", "db", "s1"}, stdout: "db@s1\n"},
		{args: []string{"volume", "snapshot", "ls"}, want: "db@s1      rbd        64MiB   ready"},
		{args: []string{"volume", "snapshots", "db"}, want: "db@s1"},
		{args: []string{"volume", "snapshot", "ls", "web"}, stdout: "SNAPSHOT   PROVIDER   SIZE   STATE   CREATED\n"},
		{args: []string{"volume", "snapshot", "ls", "nope"}, code: 1, want: `stow: volume "nope": not found`},
		{args: []string{"volume", "snapshot", "db", "bad/name"}, code: 1, want: "snapshot name \"bad/name\" has characters that are not allowed"},
		{args: []string{"volume", "create", "--from", "db@s1", "copy"}, stdout: "copy\n"},
		{args: []string{"volume", "create", "--from", "db@s1", "-o", "from=web", "copy2"}, code: 1, want: "source given twice"},
		{args: []string{"volume", "create", "--from", "db@nope", "copy2"}, code: 1, want: `volume "db" has no snapshot "nope"`},
		{args: []string{"volume", "rm", "db"}, code: 1, want: "the volume has 1 snapshot (db@s1)"},
		{args: []string{"volume", "resize", "db", "128MiB"}, stdout: "db 128MiB\n"},
		{args: []string{"volume", "resize", "db", "1MiB"}, code: 1, want: "volumes only grow"},
		{args: []string{"volume", "resize", "db", "huge"}, code: 1, want: `size "huge"`},
		{args: []string{"volume", "unlock", "db"}, code: 1, want: "repeat with force (stow volume unlock --force db)"},
		{args: []string{"volume", "unlock", "--force", "db"}, stdout: "db: not locked\n"},
		{args: []string{"volume", "snapshot", "rm", "db@s1", "db@nope"}, code: 1, stdout: "db@s1\n", want: `volume "db" has no snapshot "nope"`},
		{args: []string{"volume", "snapshot", "rm", "db"}, code: 1, want: `invalid snapshot "db": use VOLUME@SNAPSHOT`},
		{args: []string{"volume", "snapshot", "db", "s2"}, stdout: "db@s2\n"},
		{args: []string{"volume", "rm", "--snapshots", "db"}, stdout: "db\n"},
		{args: []string{"volume", "create", "-p", "local", "plain"}, stdout: "plain\n"},
		{args: []string{"volume", "snapshot", "plain", "s"}, code: 1, want: "stow: snapshot volume \"plain\": not supported: provider local cannot take snapshots\n"},
		{args: []string{"volume", "resize", "plain", "1G"}, code: 1, want: "provider local cannot resize volumes"},
		{args: []string{"volume", "create", "--from", "plain", "c3"}, code: 1, want: "provider local cannot create volumes from snapshots or copies"},
	}
	for _, st := range steps {
		out, errOut, code := stow(t, env, st.args...)
		if code != st.code {
			t.Fatalf("stow %s: exit %d, want %d; stdout %q, stderr %q", strings.Join(st.args, " "), code, st.code, out, errOut)
		}
		if st.stdout != "" && out != st.stdout {
			t.Errorf("stow %s: stdout %q, want %q", strings.Join(st.args, " "), out, st.stdout)
		}
		if st.want != "" && !strings.Contains(out+errOut, st.want) {
			t.Errorf("stow %s: output %q %q does not say %q", strings.Join(st.args, " "), out, errOut, st.want)
		}
	}

	if _, err := e.Manager.Create(t.Context(), "pg", nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Fakes["rbd"].SetLockHolder("pg", "host-b"); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := stow(t, env, "--format", "json", "volume", "unlock", "--force", "pg")
	var res api.UnlockResult
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.Holder != "host-b" {
		t.Errorf("unlock: exit %d, %q %q", code, out, errOut)
	}
	if _, err := e.Manager.Snapshot(t.Context(), "pg", "j"); err != nil {
		t.Fatal(err)
	}
	out, _, code = stow(t, env, "--format", "json", "volume", "snapshot", "ls")
	var snaps []api.Snapshot
	if err := json.Unmarshal([]byte(out), &snaps); code != 0 || err != nil || len(snaps) != 1 || snaps[0].Name != "j" {
		t.Errorf("snapshot ls as JSON: exit %d, %q", code, out)
	}
}
