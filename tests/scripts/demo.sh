#!/usr/bin/env bash
# demo.sh shows stowage without Docker: it starts volumed with the local
# provider on a temporary root and private sockets, creates a 64 MiB
# filesystem volume, imports a busybox image into the bundled runtime, writes
# a file into the volume from one container and reads it from another,
# mounts it the way dockerd would through the plugin socket, shows the
# metrics, and cleans up.
# Run as root: make demo
set -euo pipefail
cd "$(dirname "$0")/../.."

[ "$(id -u)" -eq 0 ] || { echo "demo: run as root (it mounts a filesystem)" >&2; exit 1; }
tests/scripts/deps.sh curl e2fsprogs util-linux iproute2 busybox-static
make --no-print-directory build

work=$(mktemp -d /tmp/stowage-demo.XXXXXX)
root=$work/root
plugin=$work/plugin.sock
api=$work/api.sock
port=19163
while ss -Hltn "sport = :$port" | grep -q .; do port=$((port + 1)); done
metrics=127.0.0.1:$port
pid=
demo=demo
# shellcheck source=lib/demo.sh
. tests/scripts/lib/demo.sh

cleanup() {
	status=$?
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid"
		wait "$pid" || status=1
	fi
	# Mounts stay in place when volumed stops; unmount what the demo left.
	unmount_under "$root"
	rm -rf "$work"
	if [ $status -ne 0 ]; then echo "demo: failed (volumed log above)" >&2; fi
	exit $status
}
trap cleanup EXIT

plugin() { # plugin ENDPOINT JSON: a request as dockerd sends it
	curl -sS --fail-with-body --unix-socket "$plugin" -H 'Content-Type: application/json' \
		-X POST "http://plugin/VolumeDriver.$1" -d "$2"
	echo
}

step "start volumed (root $root)"
bin/volumed --root "$root" --plugin-socket "$plugin" --api-socket "$api" --metrics-addr "$metrics" \
	--log-level info &
pid=$!
wait_volumed "$pid" || { pid=; exit 1; }
stow status

step "stow volume create -o type=fs -o size=64MiB demo"
stow volume create -o type=fs -o size=64MiB demo

step "import a busybox image into the bundled runtime"
import_busybox
stow images

step "write from one container, read from another"
stow run --rm -v demo:/data busybox sh -c 'echo "written by container $(hostname)" > /data/from-container.txt'
stow run --rm -v demo:/data:ro busybox cat /data/from-container.txt

step "mount it as dockerd would (VolumeDriver.Mount, ID demo-1)"
reply=$(plugin Mount '{"Name":"demo","ID":"demo-1"}')
echo "$reply"
mp=$(printf '%s' "$reply" | sed -n 's/.*"Mountpoint": *"\([^"]*\)".*/\1/p')
[ -n "$mp" ] || { echo "demo: no Mountpoint in the reply" >&2; exit 1; }

step "write and read through $mp"
echo "hello from the host" >"$mp/hello.txt"
cat "$mp/hello.txt" "$mp/from-container.txt"
df -h "$mp"

step "stow volume ls"
stow volume ls

step "metrics (stowage_*)"
curl -sS "http://$metrics/metrics" | grep '^stowage_' || echo "(no stowage_ series)"

step "unmount (VolumeDriver.Unmount) and remove"
plugin Unmount '{"Name":"demo","ID":"demo-1"}'
stow volume rm demo
stow volume ls

step "stop volumed (SIGTERM to $pid)"
kill -TERM "$pid"
wait "$pid"
pid=
echo "demo: ok"
