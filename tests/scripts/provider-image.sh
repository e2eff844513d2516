#!/usr/bin/env bash
# provider-image.sh builds the image of the local provider without any
# registry: a rootfs tarball with /bin/stow-provider (static), mkfs.ext4 and
# mkfs.xfs with the shared libraries and the dynamic loader they need (as ldd
# lists them), /etc/passwd, /etc/group, /etc/mke2fs.conf, the directories /tmp,
# /dev, /proc, /sys, /run and /root, and busybox with a link per applet when
# the host has one (for debugging in the container). The bundled runtime
# imports it:
#
#   stow image import OUT.tar stowage-provider
#   stow run -d --privileged --net host \
#     --mount type=bind,source=/run/stowage/csi,target=/csi \
#     --mount type=bind,source=/srv/provider,target=/data \
#     --mount type=bind,source=/var/lib/stowage,target=/var/lib/stowage,propagation=rshared \
#     stowage-provider stow-provider local --endpoint unix:///csi/csi.sock --root /data
#
# Usage: provider-image.sh OUT.tar [STOW-PROVIDER]
# STOW-PROVIDER is a stow-provider built with CGO_ENABLED=0; without it the
# script builds ./cmd/stow-provider so. Needs e2fsprogs and xfsprogs (make deps
# installs them), not root. `make provider-image` writes bin/provider-image.tar.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 OUT.tar [STOW-PROVIDER]" >&2
	exit 2
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "$1")
provider=${2:+$(realpath "$2")}

work=$(mktemp -d /tmp/stowage-provider-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,dev,proc,sys,run,root}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"

if [ -z "$provider" ]; then
	provider=$work/stow-provider
	(cd "$repo" && CGO_ENABLED=0 go build -trimpath -o "$provider" ./cmd/stow-provider)
fi
# ldd fails on a static binary; a dynamic one would need the host's libc.
if ldd "$provider" >/dev/null 2>&1; then
	echo "provider-image: $provider is dynamically linked: build it with CGO_ENABLED=0" >&2
	exit 1
fi
install -m 0755 "$provider" "$rootfs/bin/stow-provider"

# find_program prints the path of a program on PATH or in the sbin
# directories, where Debian keeps mkfs.
find_program() {
	local p
	if p=$(command -v "$1"); then
		echo "$p"
		return
	fi
	for dir in /usr/local/sbin /usr/sbin /sbin; do
		if [ -x "$dir/$1" ]; then
			echo "$dir/$1"
			return
		fi
	done
	return 1
}

# copy_file copies a file (following links) to the same path in the rootfs.
copy_file() {
	mkdir -p "$rootfs$(dirname "$1")"
	cp -L "$1" "$rootfs$1"
}

# copy_program copies program $1 to $2 in the rootfs (its own path by
# default), with the libraries and the loader ldd lists for it. The copy keeps
# the name it was called by: mke2fs acts as mkfs.ext4 when called so.
copy_program() {
	local path dest
	if ! path=$(find_program "$1"); then
		echo "provider-image: $1 not found (install it: make deps)" >&2
		exit 1
	fi
	dest=${2:-$path}
	mkdir -p "$rootfs$(dirname "$dest")"
	cp -L "$path" "$rootfs$dest"
	chmod 0755 "$rootfs$dest"
	# A static program has no libraries: ldd fails on it.
	{ ldd "$path" 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' |
		while read -r lib; do
			[ -e "$rootfs$lib" ] || copy_file "$lib"
		done
}

copy_program mkfs.ext4
copy_program mkfs.xfs
if [ -e /etc/mke2fs.conf ]; then
	copy_file /etc/mke2fs.conf
fi
if find_program busybox >/dev/null; then
	copy_program busybox /bin/busybox
	for applet in $("$rootfs/bin/busybox" --list); do
		case $applet in */*) continue ;; esac
		[ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
	done
fi

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"

mkdir -p "$(dirname "$out")"
tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "provider-image: wrote $out ($(du -h "$out" | cut -f1)); import it with: stow image import $out stowage-provider"
