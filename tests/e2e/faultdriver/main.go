// Command faultdriver is a CSI driver for the end-to-end tests that can be
// told to stop answering or to fail: it serves volumetest.Fake (volumes as
// directories under --root, published as symbolic links) over CSI on a unix
// socket until SIGTERM or SIGINT.
//
//	faultdriver --endpoint unix:///PATH --root DIR --state FILE [--mode ok|hang|fail] [--fail-message MSG] [--stage]
//
// Its mode says how every CSI call (Identity, Controller and Node alike)
// behaves: ok serves normally, hang blocks until the caller gives up, fail
// returns an INTERNAL error with --fail-message. Signals switch the mode
// while it runs: SIGUSR1 to hang, SIGUSR2 to fail, SIGHUP back to ok.
// After each switch the new mode is written to --state, so a test knows
// when it holds.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/stowage/stowage/plugins/csi"
	"github.com/stowage/stowage/plugins/volume/volumetest"
)

// Name is the CSI driver name the driver reports.
const Name = "stowage.fault"

// Modes of the driver.
const (
	modeOK   = "ok"
	modeHang = "hang"
	modeFail = "fail"
)

func main() {
	var (
		endpoint = flag.String("endpoint", "", "CSI socket as unix:///PATH (required)")
		root     = flag.String("root", "", "directory that holds the volumes (required)")
		state    = flag.String("state", "", "file the current mode is written to (required)")
		mode     = flag.String("mode", modeOK, "ok, hang or fail")
		message  = flag.String("fail-message", "injected failure", "the error message in mode fail")
		stage    = flag.Bool("stage", false, "advertise STAGE_UNSTAGE_VOLUME")
	)
	flag.Parse()
	if *endpoint == "" || *root == "" || *state == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "faultdriver: --endpoint, --root and --state are required, and nothing else")
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if err := run(*endpoint, *root, *state, *mode, *message, *stage, log); err != nil {
		fmt.Fprintf(os.Stderr, "faultdriver: %v\n", err)
		os.Exit(1)
	}
}

// run serves until SIGTERM or SIGINT, switching modes on the other signals.
func run(endpoint, root, state, mode, message string, stage bool, log *slog.Logger) error {
	fake := volumetest.NewFake(root, stage)
	failure := errors.New(message)
	set := func(m string) error {
		switch m {
		case modeOK:
			fake.Hang(false)
			fake.Fail(nil)
		case modeHang:
			fake.Fail(nil)
			fake.Hang(true)
		case modeFail:
			fake.Hang(false)
			fake.Fail(failure)
		default:
			return fmt.Errorf("mode %q: use ok, hang or fail", m)
		}
		tmp := state + ".tmp"
		if err := os.WriteFile(tmp, []byte(m+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, state); err != nil {
			return err
		}
		log.Info("mode", "mode", m)
		return nil
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(state), 0o755); err != nil {
		return err
	}
	if err := set(mode); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	switches := make(chan os.Signal, 4)
	signal.Notify(switches, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP)
	defer signal.Stop(switches)

	l, err := csi.Listen(endpoint)
	if err != nil {
		return err
	}
	srv := csi.NewServer(fake, csi.ServerOptions{Name: Name, NodeID: "e2e", Logger: log})
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ctx, l) }()
	log.Info("serving", "endpoint", endpoint, "root", root)
	for {
		select {
		case err := <-errc:
			return err
		case sig := <-switches:
			m := map[os.Signal]string{syscall.SIGUSR1: modeHang, syscall.SIGUSR2: modeFail, syscall.SIGHUP: modeOK}[sig]
			if err := set(m); err != nil {
				log.Error("switch mode", "mode", m, "err", err)
			}
		}
	}
}
