package main

import (
	"strings"
	"testing"

	"github.com/stowage/stowage/migrate"
)

// TestMigrateBadInput: bad arguments are refused with what is accepted,
// before anything is contacted (the host socket does not exist).
func TestMigrateBadInput(t *testing.T) {
	host := "unix://" + t.TempDir() + "/none.sock"
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"migrate", "db"}, "accepts 2 arg(s)"},
		{[]string{"migrate", "db", "hostb"}, "use ssh://[user@]host[:port][/?volume=NAME]"},
		{[]string{"migrate", "db", "ssh://u:pw@hostb"}, "passwords are not accepted"},
		{[]string{"migrate", "db", "ssh://hostb", "--live", "--after", "later"}, "invalid --after \"later\": use resume or stop"},
		{[]string{"migrate", "db", "ssh://hostb", "--after", "stop"}, "--after goes with --live only"},
		{[]string{"migrate", "db", "ssh://hostb", "--bwlimit", "fast"}, "invalid --bwlimit"},
		{[]string{"migrate", "db", "ssh://hostb", "--bwlimit", "0"}, "at least 1 byte"},
		{[]string{"migrate", "db", "ssh://hostb", "-p", "a", "-o", "provider=b"}, "provider given twice"},
		{[]string{"migrate", "db", "ssh://hostb", "-o", "size"}, "use KEY=VALUE"},
		{[]string{"migrate", "db", "ssh://hostb", "--remote-host", "/x"}, "use unix:///PATH"},
		{[]string{"migrate", "agent", "a", "b"}, "accepts 2 arg(s)"},
		{[]string{"migrate", "db", "ssh://hostb", "--abort", "--resume"}, "--abort does not go with --live, --dry-run or --resume"},
		{[]string{"migrate", "db", "ssh://hostb", "--abort", "--dry-run"}, "--abort does not go with"},
		{[]string{"migrate", "db", "ssh://hostb"}, "volumed is not reachable"},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, stderr, code := stow(t, nil, append([]string{"--host", host}, tc.args...)...)
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr, tc.want)
			}
			if strings.Contains(stderr, "pw") && strings.Contains(tc.args[2], "pw") {
				t.Errorf("stderr repeats the password: %q", stderr)
			}
		})
	}
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		e    migrate.Event
		want string
	}{
		{migrate.Event{Phase: migrate.PhaseConnect, Message: "connecting to ssh://b"}, "connect: connecting to ssh://b"},
		{migrate.Event{Phase: migrate.PhasePrecopy, Round: 2, Files: 3, FilesTotal: 10, Bytes: 3 << 20, BytesTotal: 10 << 20, Rate: 1 << 20, Changes: 12},
			"precopy round 2: 3/10 files, 3MiB/10MiB, 1MiB/s, 12 changes"},
		{migrate.Event{Phase: migrate.PhaseFinal, Round: 3}, "final round 3: 0/0 files, 0B/0B"},
		{migrate.Event{Phase: migrate.PhasePrecopy, Round: 1, Files: 1, FilesTotal: 1, Bytes: 1 << 20, BytesTotal: 100 << 20, Matched: 99 << 20},
			"precopy round 1: 1/1 files, 1MiB/100MiB, 99MiB unchanged by delta"},
	}
	for _, tc := range tests {
		if got := progressLine(tc.e); got != tc.want {
			t.Errorf("progressLine(%+v) = %q, want %q", tc.e, got, tc.want)
		}
	}
}
