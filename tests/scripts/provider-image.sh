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

repo=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=lib/image.sh
. "$repo/tests/scripts/lib/image.sh"
image_start provider-image STOW-PROVIDER "$@"

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

copy_program mkfs.ext4
copy_program mkfs.xfs
finish_rootfs
write_image "$out" stowage-provider
