// Command stow-init is what stow starts inside a new container: it builds
// the container's root, drops privileges and executes the command, or
// stays as its PID 1 with `stow run --init`. It links only that code
// (runtime/container/initproc), so it starts in about a millisecond where
// re-executing stow takes several.
//
// stow looks for it beside its own executable, then in
// ../libexec/stowage/ from that directory; without it, stow re-executes
// itself. It is not run by hand.
package main

import (
	"os"

	"github.com/stowage/stowage/runtime/container/initproc"
)

func main() {
	initproc.Main(os.Getenv(initproc.EnvMode))
}
