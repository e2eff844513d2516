package container

import (
	"context"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stowage/stowage/internal/testenv"
)

func TestFindInit(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]os.FileMode // below the temporary directory
		want  string                 // relative to it, or selfExe
	}{
		{"none", nil, selfExe},
		{"beside", map[string]os.FileMode{"bin/stow-init": 0o755}, "bin/stow-init"},
		{"libexec", map[string]os.FileMode{"libexec/stowage/stow-init": 0o755}, "libexec/stowage/stow-init"},
		{"beside first", map[string]os.FileMode{"bin/stow-init": 0o755, "libexec/stowage/stow-init": 0o755}, "bin/stow-init"},
		{"not executable", map[string]os.FileMode{"bin/stow-init": 0o644}, selfExe},
		{"a directory", map[string]os.FileMode{"bin/stow-init/x": 0o755}, selfExe},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, mode := range tt.files {
				p := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(p, nil, mode); err != nil {
					t.Fatal(err)
				}
			}
			want := tt.want
			if want != selfExe {
				want = filepath.Join(dir, "bin", "..", want)
				want = filepath.Clean(want)
			}
			if got := filepath.Clean(findInit(filepath.Join(dir, "bin", "stow"))); got != want {
				t.Errorf("findInit = %q, want %q", got, want)
			}
		})
	}
	if _, err := initProgram(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("initProgram of a missing file succeeded")
	}
}

// stowInit is cmd/stow-init, built once.
var stowInit struct {
	once sync.Once
	path string
	err  error
}

// buildStowInit builds cmd/stow-init as the container init program.
func buildStowInit(t *testing.T) string {
	t.Helper()
	testenv.Require(t, "go")
	stowInit.once.Do(func() {
		dir, err := os.MkdirTemp("", "stowage-init-")
		if err != nil {
			stowInit.err = err
			return
		}
		stowInit.path = filepath.Join(dir, initName)
		cmd := exec.Command("go", "build", "-o", stowInit.path, "github.com/stowage/stowage/cmd/stow-init")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			stowInit.err = fmt.Errorf("%w\n%s", err, out)
		}
	})
	if stowInit.err != nil {
		t.Fatalf("build stow-init: %v", stowInit.err)
	}
	return stowInit.path
}

// initEngines returns an engine that re-executes this test binary as the
// container init, and one that runs cmd/stow-init.
func initEngines(t *testing.T) map[string]*Engine {
	t.Helper()
	reexec, _ := testEngine(t)
	helper, _ := testEngine(t)
	helper.init = buildStowInit(t)
	return map[string]*Engine{"re-executed": reexec, "stow-init": helper}
}

func TestInitProgram(t *testing.T) {
	for name, e := range initEngines(t) {
		t.Run(name, func(t *testing.T) {
			if got := mustRun(t, e, Config{}, "echo $$; id -u"); got != "1\n0" {
				t.Errorf("$$ and uid = %q, want 1 and 0", got)
			}
			_, _, st, err := run(t, e, Config{}, "/bin/nope")
			if exitCodeOf(err) != 127 || st.ExitCode != 127 {
				t.Errorf("missing command: %v, exit %d", err, st.ExitCode)
			}
			if e.init == selfExe {
				return // the rest needs Init, and so a static binary
			}
			// A detached container's monitor starts the same program, which
			// stays as PID 1 with Init.
			c := newContainer(t, e, Config{Detach: true, Init: true}, "sleep", "1000")
			if err := e.Start(t.Context(), c.ID()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { e.Remove(context.Background(), c.ID(), true) })
			got, err := e.Get(t.Context(), c.ID())
			if err != nil {
				t.Fatal(err)
			}
			if exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", got.State.PID)); err != nil || exe != e.init {
				t.Errorf("PID 1 runs %q (%v), want %q", exe, err, e.init)
			}
			// The init forwards stop's SIGTERM to sleep, which is not PID 1
			// and dies of it: no need to wait for the kill.
			if err := e.Stop(t.Context(), c.ID(), time.Minute); err != nil {
				t.Fatal(err)
			}
			if got, err := e.Get(t.Context(), c.ID()); err != nil || got.State.ExitCode != 128+int(unix.SIGTERM) {
				t.Errorf("after stop: %+v %v, want exit %d", got.State, err, 128+int(unix.SIGTERM))
			}
		})
	}
}

// TestRunInitDynamic checks that --init without stow-init fails clearly
// when the runtime's binary needs a dynamic loader (as a test binary built
// with -race does), which the container does not have.
func TestRunInitDynamic(t *testing.T) {
	e, _ := testEngine(t)
	if e.init != selfExe {
		t.Fatalf("the test binary's directory has a %s", initName)
	}
	out, _, st, err := run(t, e, Config{Init: true}, "sh", "-c", "echo $$")
	if dynamicSelf(t) {
		if st.ExitCode != 125 || err == nil || !strings.Contains(err.Error(), "no stow-init is installed") {
			t.Errorf("--init from a dynamic binary: exit %d, %v", st.ExitCode, err)
		}
	} else if err != nil || out == "1\n" {
		t.Errorf("--init from a static binary: %q %v", out, err)
	}
}

// dynamicSelf says whether this test binary has an ELF interpreter.
func dynamicSelf(t *testing.T) bool {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}

// TestRunInit runs containers with Init through stow-init, which is static
// like a stow built by `make build`.
func TestRunInit(t *testing.T) {
	e, _ := testEngine(t)
	e.init = buildStowInit(t)
	withInit := Config{Init: true}
	t.Run("PID", func(t *testing.T) {
		if got := mustRun(t, e, withInit, "echo $$; cat /proc/1/comm"); got == "1" || !strings.HasSuffix(got, "\nstow-init") {
			t.Errorf("$$ and PID 1's name = %q, want a PID other than 1 under stow-init", got)
		}
	})
	t.Run("no zombies", func(t *testing.T) {
		// The inner shell leaves its background child to PID 1, which
		// must reap it when it ends.
		got := mustRun(t, e, withInit, `sh -c 'sleep 0.1 & echo $! > /tmp/orphan'
			pid=$(cat /tmp/orphan); i=0
			while [ -e /proc/$pid ] && [ $i -lt 1000 ]; do i=$((i+1)); sleep 0.01; done
			for f in /proc/[0-9]*/stat; do
				s=$(cat $f 2>/dev/null) || continue
				s=${s##*) }; [ "${s%% *}" = Z ] && echo "zombie: $f"
			done
			[ -e /proc/$pid ] && echo "orphan $pid left" || echo ok`)
		if got != "ok" {
			t.Errorf("got %q, want no zombie", got)
		}
	})
	t.Run("exit codes", func(t *testing.T) {
		tests := []struct {
			args []string
			code int
		}{
			{[]string{"sh", "-c", "exit 7"}, 7},
			{[]string{"sh", "-c", "kill -TERM $$"}, 128 + int(unix.SIGTERM)},
			{[]string{"/etc/passwd"}, 126},
			{[]string{"nope"}, 127},
		}
		for _, tt := range tests {
			if _, _, st, _ := run(t, e, withInit, tt.args...); st.ExitCode != tt.code {
				t.Errorf("%q: exit %d, want %d", tt.args, st.ExitCode, tt.code)
			}
		}
	})
	t.Run("privileges", func(t *testing.T) {
		// PID 1 holds no more than its child and cannot be reached
		// through /proc.
		got := mustRun(t, e, Config{Init: true, User: "nobody"}, `for p in 1 self; do grep -E "^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):" /proc/$p/status; done
			readlink /proc/1/exe >/dev/null 2>&1 && echo exe readable || echo exe hidden`)
		lines := strings.Split(got, "\n")
		if len(lines) != 11 || strings.Join(lines[:5], "\n") != strings.Join(lines[5:10], "\n") || lines[10] != "exe hidden" {
			t.Errorf("PID 1 and the command:\n%s", got)
		}
	})
	t.Run("signals", func(t *testing.T) { checkSignals(t, e, withInit) })
}
