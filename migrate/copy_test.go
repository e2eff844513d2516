package migrate

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/pkg/sftp"

	"github.com/stowage/stowage/internal/testenv"
	"github.com/stowage/stowage/migrate/agent"
	"github.com/stowage/stowage/migrate/migratetest"
)

// pipeRun returns a run that copies src to dst through an in-process agent
// and an in-process SFTP server, as over SSH.
func pipeRun(t testing.TB, src, dst string) *run {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	// Agent.
	reqR, reqW := io.Pipe()
	resR, resW := io.Pipe()
	agentDone := make(chan error, 1)
	go func() {
		agentDone <- agent.Serve(ctx, reqR, resW, agent.Config{Log: slog.New(slog.DiscardHandler), SessionDir: t.TempDir()})
	}()
	ac := agent.NewClient(resR, reqW)
	// SFTP.
	c2sR, c2sW := io.Pipe()
	s2cR, s2cW := io.Pipe()
	srv, err := sftp.NewServer(struct {
		io.Reader
		io.WriteCloser
	}{c2sR, s2cW})
	if err != nil {
		t.Fatal(err)
	}
	srvDone := make(chan error, 1)
	go func() { srvDone <- srv.Serve() }()
	sc, err := sftp.NewClientPipe(s2cR, c2sW, sftp.UseConcurrentWrites(true), sftp.MaxConcurrentRequestsPerFile(16))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c2sW.Close()
		<-srvDone
		s2cW.Close()
		sc.Close()
		reqW.Close()
		<-agentDone
		resR.Close()
		cancel()
	})
	if err := ac.Hello(dst); err != nil {
		t.Fatal(err)
	}
	opts := Options{Workers: 4}
	opts.defaults()
	return &run{opts: opts, srcRoot: src, dstRoot: dst, agent: ac, sftp: sc, lim: &limiter{}}
}

func TestCopyRounds(t *testing.T) {
	testenv.Require(t, "sha256sum", "getfattr", "getfacl", "setfacl", "du", "stat")
	src, dst := t.TempDir(), t.TempDir()
	tr := migratetest.BuildTree(t, src, os.Geteuid() == 0)
	r := pipeRun(t, src, dst)
	ctx := t.Context()

	p, srcM, err := r.round(ctx, PhasePrecopy, 1, nil)
	if err != nil {
		t.Fatalf("round 1: %v", err)
	}
	if len(p.Send) == 0 {
		t.Fatal("round 1 sent no files")
	}
	p, _, err = r.round(ctx, PhasePrecopy, 2, srcM)
	if err != nil {
		t.Fatalf("round 2: %v", err)
	}
	if !p.Empty() {
		t.Errorf("round 2 after a complete round: plan has %d changes (send %d, apply %d, remove %q, link %d, finish %d), want none",
			p.Changes(), len(p.Send), len(p.Apply), p.Remove, len(p.Link), len(p.Finish))
	}
	if err := r.verify(ctx, nil); err != nil {
		t.Fatal(err)
	}
	migratetest.Compare(t, src, dst, tr)
	if _, err := os.Stat(filepath.Join(dst, agent.TempDir)); !os.IsNotExist(err) {
		t.Errorf("temporary directory left on the target: %v", err)
	}

	t.Run("changes", func(t *testing.T) {
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		// Same size, other content in the middle.
		f, err := os.OpenFile(filepath.Join(src, "big.bin"), os.O_WRONLY, 0)
		must(err)
		_, err = f.WriteAt([]byte("changed"), 1<<20)
		must(err)
		must(f.Close())
		must(os.Remove(filepath.Join(src, "empty.txt")))
		must(os.WriteFile(filepath.Join(src, "new.txt"), []byte("new"), 0o600))
		// A file becomes a directory, a directory a file.
		must(os.Remove(filepath.Join(src, "plain.txt")))
		must(os.Mkdir(filepath.Join(src, "plain.txt"), 0o750))
		must(os.RemoveAll(filepath.Join(src, "empty")))
		must(os.WriteFile(filepath.Join(src, "empty"), []byte("now a file"), 0o644))
		must(os.Remove(filepath.Join(src, "link")))
		must(os.Symlink("big.bin", filepath.Join(src, "link")))
		// The target has a half-written file and leftovers of an
		// interrupted round.
		must(os.Truncate(filepath.Join(dst, "hl1"), 3))
		must(os.MkdirAll(filepath.Join(dst, agent.TempDir), 0o700))
		must(os.WriteFile(filepath.Join(dst, agent.TempDir, "f0"), []byte("partial"), 0o600))

		p, _, err := r.round(ctx, PhasePrecopy, 3, srcM)
		if err != nil {
			t.Fatalf("round 3: %v", err)
		}
		if p.SendBytes >= tr.SparseAllocated+3<<20 {
			t.Errorf("round 3 sent %d bytes: more than the changed files", p.SendBytes)
		}
		if err := r.verify(ctx, nil); err != nil {
			t.Fatal(err)
		}
		paths := func(dir string) string {
			return migratetest.Run(t, dir, "find", ".", "-printf", "%P %y %m\n")
		}
		if a, b := paths(src), paths(dst); a != b {
			t.Errorf("trees differ after changes:\n%s\n%s", a, b)
		}
		if a, b := migratetest.Run(t, src, "sha256sum", "big.bin", "hl1", "empty"), migratetest.Run(t, dst, "sha256sum", "big.bin", "hl1", "empty"); a != b {
			t.Errorf("content differs:\n%s\n%s", a, b)
		}
	})
}
