# image.sh holds the functions the image scripts (provider-image.sh,
# rbd-image.sh) share to build a rootfs tarball for the bundled runtime. Source
# it, then call image_start.

# image_start NAME PROGRAM ARGS... takes the script's arguments ARGS, OUT.tar
# [PROGRAM], and sets image_name (NAME, for messages), out, provider (PROGRAM's
# path, "" to build it), work (a directory removed on exit) and rootfs (the
# image's skeleton in it).
image_start() {
	image_name=$1
	local program=$2
	shift 2
	if [ $# -lt 1 ] || [ $# -gt 2 ]; then
		echo "usage: $0 OUT.tar [$program]" >&2
		exit 2
	fi
	out=$(realpath -m "$1")
	provider=${2:+$(realpath "$2")}
	work=$(mktemp -d "/tmp/stowage-$image_name.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	rootfs=$work/rootfs
	mkdir -p "$rootfs"/{bin,etc,tmp,dev,proc,sys,run,root}
	chmod 1777 "$rootfs/tmp"
	chmod 0700 "$rootfs/root"
}

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
		echo "$image_name: $1 not found (install it: make deps)" >&2
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

# finish_rootfs adds /etc/mke2fs.conf, busybox with a link per applet (when
# the host has them), /etc/passwd and /etc/group.
finish_rootfs() {
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
}

# write_image writes the rootfs as tarball $1 (atomically) and names image $2
# in the import hint.
write_image() {
	mkdir -p "$(dirname "$1")"
	tar --numeric-owner --owner=0 --group=0 -C "$rootfs" -cf "$1.tmp" .
	mv "$1.tmp" "$1"
	echo "$image_name: wrote $1 ($(du -h "$1" | cut -f1)); import it with: stow image import $1 $2"
}
