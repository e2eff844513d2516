// Package security confines a container process just before it executes
// its program: it reduces the capability sets to Docker's default, sets
// no_new_privs, and installs the seccomp filter that package seccomp
// compiles, which denies the system calls Docker's default profile
// denies. All of it acts on the calling thread (seccomp on every thread of
// the process), so a caller locks its OS thread, calls NoNewPrivileges,
// DropCapabilities(DefaultCapabilities()) and LoadSeccomp in that order,
// and executes from the same thread.
//
// Errors wrap the classes of plugins/volume: ErrInvalid for an unknown
// capability name, ErrNotSupported where the system lacks a feature.
package security

import (
	"fmt"
	"strings"

	"github.com/moby/sys/capability"

	"github.com/stowage/stowage/plugins/volume"
)

// defaultCapabilities is Docker's default set for containers.
var defaultCapabilities = []string{
	"CAP_CHOWN",
	"CAP_DAC_OVERRIDE",
	"CAP_FSETID",
	"CAP_FOWNER",
	"CAP_MKNOD",
	"CAP_NET_RAW",
	"CAP_SETGID",
	"CAP_SETUID",
	"CAP_SETFCAP",
	"CAP_SETPCAP",
	"CAP_NET_BIND_SERVICE",
	"CAP_SYS_CHROOT",
	"CAP_KILL",
	"CAP_AUDIT_WRITE",
}

// DefaultCapabilities returns the capabilities a container keeps, Docker's
// default set, as "CAP_" names.
func DefaultCapabilities() []string {
	return append([]string(nil), defaultCapabilities...)
}

// parseCapabilities maps "CAP_" names (case-insensitive, the prefix
// optional) to capabilities, or fails with ErrInvalid naming the unknown.
func parseCapabilities(names []string) ([]capability.Cap, error) {
	known := make(map[string]capability.Cap)
	for _, c := range capability.ListKnown() {
		known["CAP_"+strings.ToUpper(c.String())] = c
	}
	caps := make([]capability.Cap, 0, len(names))
	var unknown []string
	for _, n := range names {
		key := strings.ToUpper(n)
		if !strings.HasPrefix(key, "CAP_") {
			key = "CAP_" + key
		}
		c, ok := known[key]
		if !ok {
			unknown = append(unknown, fmt.Sprintf("%q", n))
			continue
		}
		caps = append(caps, c)
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown capabilities %s: %w", strings.Join(unknown, ", "), volume.ErrInvalid)
	}
	return caps, nil
}
