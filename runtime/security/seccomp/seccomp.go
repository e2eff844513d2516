// Package seccomp serves the seccomp filter of a container: a
// default-allow filter that makes the system calls Docker's default
// profile denies fail with EPERM (see internal/compile for the policy).
// The container's init, which should start fast, only loads the programs
// (security.LoadSeccomp) and links no filter compiler. On linux/amd64 the
// programs are compiled at build time, in zprograms_linux_amd64.go, which
// the package's golden test checks and rewrites with -update; elsewhere
// they are compiled when first asked for.
package seccomp
