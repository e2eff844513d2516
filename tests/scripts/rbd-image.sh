#!/usr/bin/env bash
# rbd-image.sh builds the image of the Ceph RBD provider for the bundled
# runtime, without any registry: a rootfs tarball with /bin/stow-rbd (cgo:
# librados and librbd) and the shared libraries and dynamic loader it needs
# (as ldd lists them), librados's plugin directory (crypto and compressor
# plugins it loads at run time), mkfs.ext4, e2fsck, resize2fs, mkfs.xfs and
# xfs_growfs with their libraries, /etc/mke2fs.conf, /etc/passwd, /etc/group,
# the directories /tmp, /dev, /proc, /sys, /run, /root and /etc/ceph, and
# busybox with a link per applet when the host has one. The bundled runtime
# imports it; ceph.conf and the keyring come from a bind mount:
#
#   stow image import OUT.tar stowage-rbd
#   stow run -d --privileged --net host \
#     --mount type=bind,source=/run/stowage/csi,target=/csi \
#     --mount type=bind,source=/etc/ceph,target=/etc/ceph,readonly \
#     --mount type=bind,source=/var/lib/stowage,target=/var/lib/stowage,propagation=rshared \
#     stowage-rbd stow-rbd --endpoint unix:///csi/csi.sock --ceph-conf /etc/ceph/ceph.conf \
#       --keyring /etc/ceph/ceph.client.admin.keyring --pool rbd
#
# Usage: rbd-image.sh OUT.tar [STOW-RBD]
# STOW-RBD is a stow-rbd built by `make build-rbd`; without it the script
# builds one. Needs the Debian packages of tests/scripts/deps.sh (librbd-dev,
# e2fsprogs, xfsprogs), not root. `make rbd-image` writes bin/rbd-image.tar.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 OUT.tar [STOW-RBD]" >&2
	exit 2
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=$(realpath -m "$1")
provider=${2:+$(realpath "$2")}

work=$(mktemp -d /tmp/stowage-rbd-image.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc/ceph,tmp,dev,proc,sys,run,root}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"

if [ -z "$provider" ]; then
	provider=$work/stow-rbd
	(cd "$repo" && CGO_ENABLED=1 go build -tags ceph,pacific -trimpath -o "$provider" ./cmd/stow-rbd)
fi

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
		echo "rbd-image: $1 not found (install it: make deps)" >&2
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

copy_program "$provider" /bin/stow-rbd
# librados loads its crypto and compressor plugins from here at run time.
ceph_lib=$(dirname "$(ldd "$provider" | awk '$1 ~ /^libceph-common/ {print $3}')")
if [ -d "$ceph_lib" ]; then
	mkdir -p "$rootfs$ceph_lib"
	cp -a "$ceph_lib/." "$rootfs$ceph_lib/"
	for lib in "$ceph_lib"/*/*.so*; do
		{ ldd "$lib" 2>/dev/null || true; } | awk '$2 == "=>" && $3 ~ /^\// {print $3}' |
			while read -r dep; do
				[ -e "$rootfs$dep" ] || copy_file "$dep"
			done
	done
fi
for program in mkfs.ext4 e2fsck resize2fs mkfs.xfs xfs_growfs; do
	copy_program "$program"
done
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
echo "rbd-image: wrote $out ($(du -h "$out" | cut -f1)); import it with: stow image import $out stowage-rbd"
