# demo.sh holds the functions the demos (demo.sh, demo-rbd.sh) share. Source
# it from the repository's root after setting demo (the demo's name in
# messages), work (its temporary directory), api and plugin (volumed's
# sockets).

# step prints a step's title.
step() { printf '\n== %s\n' "$*"; }

# stow runs bin/stow on the demo's volumed and on a runtime root in $work.
stow() { bin/stow --host "unix://$api" --plugin-socket "$plugin" --root "$work/runtime" "$@"; }

# unmount_under DIR lazily unmounts whatever is mounted below DIR, deepest
# first: mounts stay in place when volumed stops.
unmount_under() {
	[ -d "$1" ] || return 0
	awk -v r="$1/" 'index($5, r) == 1 {print $5}' /proc/self/mountinfo | sort -r |
		while read -r m; do umount -l "$m" || true; done
}

# wait_volumed PID: wait until volumed (process PID) answers stow status;
# fails when it exits first.
wait_volumed() {
	for _ in $(seq 100); do
		stow status >/dev/null 2>&1 && return 0
		kill -0 "$1" 2>/dev/null || { echo "$demo: volumed exited" >&2; return 1; }
		sleep 0.1
	done
}

# import_busybox imports the host's static busybox, with a link per applet,
# into the bundled runtime as the image busybox.
import_busybox() {
	mkdir -p "$work/rootfs/bin" "$work/rootfs/tmp"
	cp /bin/busybox "$work/rootfs/bin/busybox"
	for applet in $(/bin/busybox --list); do
		[ "$applet" = busybox ] || ln -s busybox "$work/rootfs/bin/$applet"
	done
	tar -C "$work/rootfs" -cf "$work/busybox.tar" .
	stow image import "$work/busybox.tar" busybox
}
