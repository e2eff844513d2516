#!/usr/bin/env bash
# ceph.sh starts and stops a throwaway one-node Ceph cluster (one mon, one
# memstore OSD, no mgr) for tests and demos. Every daemon binds to 127.0.0.1
# only, runs in its own session and is stopped by the PID recorded in
# DIR/pids; nothing outside DIR is touched.
#
# Usage:
#   tests/scripts/ceph.sh start DIR   # DIR must not hold a running cluster
#   tests/scripts/ceph.sh stop DIR    # stop the daemons by PID, remove DIR
#
# start writes DIR/ceph.conf (which clients pass as --ceph-conf or
# CEPH_CONF) and, with cephx, DIR/keyring (client.admin). It creates the
# pool POOL and initialises it for RBD, then prints "ceph: ready".
#
# Environment:
#   AUTH=cephx|none        authentication (default cephx)
#   POOL=rbd               the RBD pool to create (empty: none)
#   MON_V2_PORT=3300       the monitor's msgr2 port
#   MON_V1_PORT=6789       the monitor's legacy port
#   PORT_MIN=6800 PORT_MAX=7300   the range the OSD binds in
#   MEMSTORE_BYTES=2147483648     the OSD's size (memstore keeps it in RAM)
#   TIMEOUT=60             seconds to wait for each step
#   FAST=1                 (stop) SIGKILL at once instead of SIGTERM first
set -euo pipefail

die() { echo "ceph: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 start|stop DIR"
cmd=$1
DIR=$2
case "$DIR" in /*) ;; *) DIR=$PWD/$DIR ;; esac

# waitfor SECONDS CMD...: run CMD every 0.2s until it succeeds.
waitfor() {
	local end=$(($(date +%s) + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		[ "$(date +%s)" -lt "$end" ] || return 1
		sleep 0.2
	done
}

stop() {
	[ -f "$DIR/pids" ] || { rm -rf "${DIR:?}"; return 0; }
	local sig=TERM
	[ "${FAST:-0}" = 1 ] && sig=KILL
	# Reverse order: OSD before mon.
	tac "$DIR/pids" | while read -r pid name; do
		if kill -0 "$pid" 2>/dev/null; then kill "-$sig" "$pid" 2>/dev/null || true; fi
	done
	local alive
	for _ in $(seq 50); do
		alive=0
		while read -r pid _; do kill -0 "$pid" 2>/dev/null && alive=1; done <"$DIR/pids"
		[ $alive = 0 ] && break
		sleep 0.2
	done
	while read -r pid name; do
		if kill -0 "$pid" 2>/dev/null; then
			echo "ceph: $name ($pid) ignored SIG$sig; killing it" >&2
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done <"$DIR/pids"
	rm -rf "${DIR:?}"
}

start() {
	local auth=${AUTH:-cephx} pool=${POOL-rbd} timeout=${TIMEOUT:-60}
	local v2=${MON_V2_PORT:-3300} v1=${MON_V1_PORT:-6789}
	local monaddr="[v2:127.0.0.1:$v2,v1:127.0.0.1:$v1]"
	case "$auth" in cephx | none) ;; *) die "AUTH=$auth: use cephx or none" ;; esac
	for tool in ceph-mon ceph-osd ceph monmaptool ceph-authtool uuidgen; do
		command -v "$tool" >/dev/null || die "$tool not found (tests/scripts/deps.sh installs ceph-mon ceph-osd ceph-common)"
	done
	[ ! -e "$DIR/pids" ] || die "a cluster may run in $DIR; stop it first: $0 stop $DIR"
	rm -rf "${DIR:?}"
	mkdir -p "$DIR"/{log,run,mon,osd,crash}
	# On failure, stop what started and keep the logs for the caller.
	trap 'rc=$?; if [ $rc -ne 0 ]; then tail -n 20 "$DIR"/log/*.log >&2 2>/dev/null || true; FAST=1 stop; fi' EXIT

	local fsid
	fsid=$(uuidgen)
	export CEPH_CONF=$DIR/ceph.conf
	cat >"$CEPH_CONF" <<EOF
[global]
fsid = $fsid
mon host = $monaddr
ms bind port min = ${PORT_MIN:-6800}
ms bind port max = ${PORT_MAX:-7300}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
run dir = $DIR/run
crash dir = $DIR/crash
keyring = $DIR/keyring
auth cluster required = $auth
auth service required = $auth
auth client required = $auth
auth allow insecure global id reclaim = false
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 2
mon data avail crit = 1

[mon]
log file = $DIR/log/\$name.log
mon cluster log file = $DIR/log/cluster.log
mon data = $DIR/mon
mon mgr mkfs grace = 86400

[osd]
log file = $DIR/log/\$name.log
osd data = $DIR/osd
osd objectstore = memstore
memstore device bytes = ${MEMSTORE_BYTES:-2147483648}
osd class load list = *
osd class default list = *

[client]
client mount timeout = 15
EOF

	# launch NAME CMD...: run a daemon in the foreground of its own session
	# (so a signal to our process group misses it) and record its PID.
	launch() {
		local name=$1
		shift
		setsid "$@" -f >>"$DIR/log/$name.stdout" 2>&1 </dev/null &
		echo "$! $name" >>"$DIR/pids"
	}

	local keyring=/dev/null
	if [ "$auth" = cephx ]; then
		ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
		ceph-authtool "$DIR/keyring" --gen-key -n client.admin \
			--cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
		chmod 600 "$DIR/keyring"
		keyring=$DIR/keyring
	fi
	monmaptool --create --fsid "$fsid" --addv a "$monaddr" "$DIR/monmap" >/dev/null
	ceph-mon --id a --mkfs --monmap "$DIR/monmap" --keyring "$keyring" >>"$DIR/log/mon-mkfs.log" 2>&1
	[ "$auth" = cephx ] || touch "$DIR/mon/keyring"
	launch mon.a ceph-mon --id a
	waitfor "$timeout" ceph -s --connect-timeout 2 || die "the monitor did not answer within ${timeout}s"

	local id osdkey=()
	id=$(ceph osd create)
	ceph osd crush add "osd.$id" 1 root=default >/dev/null 2>&1
	if [ "$auth" = cephx ]; then
		ceph auth get-or-create "osd.$id" mon 'allow profile osd' mgr 'allow profile osd' osd 'allow *' \
			-o "$DIR/osd/keyring" >/dev/null 2>&1
		osdkey=(--keyring "$DIR/osd/keyring")
	fi
	ceph-osd --id "$id" --mkfs "${osdkey[@]}" >>"$DIR/log/osd-mkfs.log" 2>&1
	launch "osd.$id" ceph-osd --id "$id" "${osdkey[@]}"
	waitfor "$timeout" sh -c "ceph osd dump | grep -q '^osd.$id up'" || die "osd.$id did not come up within ${timeout}s"

	if [ -n "$pool" ]; then
		ceph osd pool create "$pool" 8 >/dev/null 2>&1
		# rbd pool init waits until the placement groups are active.
		timeout "$timeout" rbd pool init "$pool" || die "rbd pool init $pool did not finish within ${timeout}s"
	fi
	waitfor "$timeout" sh -c "ceph health | grep -q HEALTH_OK" || die "not healthy within ${timeout}s: $(ceph health detail 2>&1)"
	trap - EXIT
	echo "ceph: ready ($DIR/ceph.conf, auth $auth, pool ${pool:-none})"
}

case "$cmd" in
start) start ;;
stop) stop ;;
*) die "unknown command $cmd: use start or stop" ;;
esac
