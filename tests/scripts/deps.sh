#!/usr/bin/env bash
# deps.sh installs what the tests need: Debian packages (as root) and the Go
# modules. It is idempotent and quick when everything is present.
#
# Usage: tests/scripts/deps.sh [PACKAGE...]   (default: every package below)
set -euo pipefail

default_pkgs=(
	docker.io      # dockerd, containerd, runc for the e2e tests
	busybox-static # the rootfs of the test image
	e2fsprogs      # mkfs.ext4
	xfsprogs       # mkfs.xfs
	util-linux     # losetup, mount, umount
	prometheus     # promtool
	iproute2       # ss
	procps         # ps, pgrep
	curl           # the demo talks to the plugin socket
	crun           # a baseline of the runtime benchmark
	ceph-mon       # the one-node Ceph cluster of the RBD tests (tests/scripts/ceph.sh)
	ceph-osd
	ceph-common    # ceph, rbd, monmaptool, ceph-authtool
	librados-dev   # go-ceph (cgo) for plugins/rbd and stow-rbd
	librbd-dev
	gcc            # cgo: stow-rbd and the RBD provider's tests
	uuid-runtime   # uuidgen
	fuse           # fusermount for the RBD provider's FUSE files
	fio            # RBD benchmarks
	openssh-server # sshd of the migration's target hosts (network namespaces)
	openssh-client # ssh, ssh-keygen
	acl            # getfacl, setfacl: migration fidelity checks
	attr           # getfattr, setfattr: migration fidelity checks
	rsync          # the migration benchmark's baseline
)
pkgs=("$@")
if [ ${#pkgs[@]} -eq 0 ]; then
	pkgs=("${default_pkgs[@]}")
fi

die() { echo "deps: $*" >&2; exit 1; }

missing=()
for p in "${pkgs[@]}"; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
	[ "$(id -u)" -eq 0 ] || die "missing packages (${missing[*]}); run as root to install them"
	echo "deps: installing ${missing[*]}"
	# Keep package scripts from starting services (the system dockerd): the
	# tests start their own daemons.
	policy=/usr/sbin/policy-rc.d
	own_policy=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy"
		chmod 0755 "$policy"
		own_policy=1
	fi
	cleanup() { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; }
	trap cleanup EXIT
	log=$(mktemp)
	export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1
	if ! apt-get update -q >"$log" 2>&1; then
		cat "$log" >&2; rm -f "$log"; die "apt-get update failed"
	fi
	if ! apt-get install -y -q "${missing[@]}" >"$log" 2>&1; then
		tail -n 40 "$log" >&2; rm -f "$log"; die "apt-get install ${missing[*]} failed"
	fi
	rm -f "$log"
fi

if [ -f "$(dirname "$0")/../../go.mod" ]; then
	command -v go >/dev/null || die "go is not on PATH"
	(cd "$(dirname "$0")/../.." && go mod download) || die "go mod download failed"
fi

# csi-sanity, the CSI conformance suite the e2e tests run against
# `stow provider serve`.
csi_sanity=github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@v5.6.0
if ! command -v csi-sanity >/dev/null && [ ! -x /usr/local/bin/csi-sanity ]; then
	[ "$(id -u)" -eq 0 ] || die "csi-sanity is missing; run as root to install it into /usr/local/bin"
	command -v go >/dev/null || die "go is not on PATH (needed to install csi-sanity)"
	echo "deps: installing $csi_sanity"
	log=$(mktemp)
	if ! GOBIN=/usr/local/bin go install "$csi_sanity" >"$log" 2>&1; then
		tail -n 40 "$log" >&2; rm -f "$log"
		die "go install $csi_sanity failed (it needs the Go module proxy or a module cache that has it)"
	fi
	rm -f "$log"
fi
echo "deps: ok"
