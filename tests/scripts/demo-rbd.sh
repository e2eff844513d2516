#!/usr/bin/env bash
# demo-rbd.sh shows stowage's Ceph RBD provider without Docker: it starts a
# one-node Ceph cluster on 127.0.0.1 (tests/scripts/ceph.sh) in a temporary
# directory, builds and starts stow-rbd on it, starts volumed with stow-rbd
# as its provider "rbd" (type csi), creates a 256 MiB volume, writes and
# reads it from containers of the bundled runtime, takes a snapshot and
# makes a volume from it, lists the volumes, and stops everything by PID.
# Run as root: make demo-rbd
set -euo pipefail
cd "$(dirname "$0")/../.."

[ "$(id -u)" -eq 0 ] || { echo "demo-rbd: run as root (it mounts file systems)" >&2; exit 1; }
tests/scripts/deps.sh ceph-mon ceph-osd ceph-common librados-dev librbd-dev gcc fuse e2fsprogs util-linux iproute2 busybox-static
make --no-print-directory build build-rbd

work=$(mktemp -d /tmp/stowage-demo-rbd.XXXXXX)
cluster=$work/ceph
root=$work/root
plugin=$work/plugin.sock
api=$work/api.sock
csi=$work/rbd.sock
rbd_pid=
volumed_pid=
demo=demo-rbd
# shellcheck source=lib/demo.sh
. tests/scripts/lib/demo.sh

# freeport PORT: the first port from PORT on that nothing listens on.
freeport() {
	local port=$1
	while ss -Hltn "sport = :$port" | grep -q .; do port=$((port + 1)); done
	echo "$port"
}

# stopPID PID NAME: SIGTERM, then wait for it.
stopPID() {
	kill -0 "$1" 2>/dev/null || return 0
	kill -TERM "$1"
	wait "$1" || { echo "demo-rbd: $2 exited with $?" >&2; return 1; }
}

cleanup() {
	status=$?
	# volumed first, then stow-rbd (which unstages what is left), then Ceph.
	[ -z "$volumed_pid" ] || stopPID "$volumed_pid" volumed || status=1
	[ -z "$rbd_pid" ] || stopPID "$rbd_pid" stow-rbd || status=1
	unmount_under "$work"
	[ ! -d "$cluster" ] || FAST=1 tests/scripts/ceph.sh stop "$cluster" || status=1
	rm -rf "$work"
	if [ $status -ne 0 ]; then echo "demo-rbd: failed (logs above)" >&2; fi
	exit $status
}
trap cleanup EXIT

# waitsock SOCKET PID NAME: wait until the unix socket answers.
waitsock() {
	for _ in $(seq 300); do
		[ -S "$1" ] && return 0
		kill -0 "$2" 2>/dev/null || { echo "demo-rbd: $3 exited" >&2; return 1; }
		sleep 0.1
	done
	echo "demo-rbd: $3 did not open $1" >&2
	return 1
}

step "start a one-node Ceph cluster in $cluster (one monitor, one memstore OSD, 127.0.0.1 only)"
v2=$(freeport 13300)
v1=$(freeport $((v2 + 1)))
MON_V2_PORT=$v2 MON_V1_PORT=$v1 POOL=rbd tests/scripts/ceph.sh start "$cluster"
echo "pools: $(CEPH_CONF=$cluster/ceph.conf ceph osd pool ls | tr "\n" " ")"

step "start stow-rbd (pool rbd, host ID demo-host) on $csi"
bin/stow-rbd --endpoint "unix://$csi" --ceph-conf "$cluster/ceph.conf" --keyring "$cluster/keyring" \
	--pool rbd --host-id demo-host --run-dir "$work/rbd-run" --log-level info &
rbd_pid=$!
waitsock "$csi" "$rbd_pid" stow-rbd

step "start volumed with stow-rbd as its provider rbd (type csi)"
cat >"$work/volumed.toml" <<EOF
[providers.rbd]
type = "csi"
endpoint = "unix://$csi"
EOF
cat "$work/volumed.toml"
bin/volumed --config "$work/volumed.toml" --root "$root" --plugin-socket "$plugin" --api-socket "$api" \
	--metrics-addr "" --log-level info &
volumed_pid=$!
wait_volumed "$volumed_pid" || { volumed_pid=; exit 1; }
for _ in $(seq 100); do
	stow provider ls | grep -q '^rbd .* up' && break
	sleep 0.1
done
stow provider ls

step "stow volume create -p rbd -o size=256MiB -o fs=ext4 pg"
stow volume create -p rbd -o size=256MiB -o fs=ext4 pg
CEPH_CONF=$cluster/ceph.conf rbd info rbd/pg | sed -n '1,6p'

step "import a busybox image into the bundled runtime"
import_busybox

step "write from one container (the first mount makes the file system), read from another"
stow run --rm -v pg:/data busybox sh -c 'echo "first version" > /data/notes.txt && df -h /data'
stow run --rm -v pg:/data:ro busybox cat /data/notes.txt

step "snapshot pg, change it, and make pg-copy from the snapshot"
stow volume snapshot pg s1
stow run --rm -v pg:/data busybox sh -c 'echo "second version" > /data/notes.txt'
stow volume create --from pg@s1 pg-copy
stow volume snapshot ls pg
echo "pg:      $(stow run --rm -v pg:/data:ro busybox cat /data/notes.txt)"
echo "pg-copy: $(stow run --rm -v pg-copy:/data:ro busybox cat /data/notes.txt)"

step "stow volume ls"
stow volume ls
CEPH_CONF=$cluster/ceph.conf rbd ls -l rbd

step "stop volumed ($volumed_pid), stow-rbd ($rbd_pid) and the cluster"
stopPID "$volumed_pid" volumed
volumed_pid=
stopPID "$rbd_pid" stow-rbd
rbd_pid=
echo "demo-rbd: ok"
