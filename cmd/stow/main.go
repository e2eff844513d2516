// Command stow is stowage's command line. It talks to volumed over its
// control API socket.
//
// Every failure prints "stow: <message>" on standard error and exits with
// status 1, usage errors included; run and exec exit with the container
// command's exit code.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/stowage/stowage/runtime/container"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	// A re-executed container init (when no stow-init is installed beside
	// stow) or monitor never returns.
	container.Init()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
