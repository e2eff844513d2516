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

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=lib/image.sh
. "$repo/tests/scripts/lib/image.sh"
image_start rbd-image STOW-RBD "$@"
mkdir -p "$rootfs/etc/ceph"

if [ -z "$provider" ]; then
	provider=$work/stow-rbd
	(cd "$repo" && CGO_ENABLED=1 go build -tags ceph,pacific -trimpath -o "$provider" ./cmd/stow-rbd)
fi

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
finish_rootfs
write_image "$out" stowage-rbd
