#!/bin/sh
# A fake stow for the supervisor's tests: `stow --root R run|inspect|rm|logs`
# with a process of the test binary (FAKE_SIDECAR, serving CSI on the
# socket in the directory bound at /csi) as the container. It keeps its
# state in STOWAGE_FAKE_STOW_DIR: the calls it got (calls), the container's
# PID (pid; every PID ever in pids) and config (config), and fails `run`
# while the file fail-run exists.
set -eu
dir=$STOWAGE_FAKE_STOW_DIR
echo "$*" >>"$dir/calls"
[ "$1" = --root ] || { echo "fake stow: want --root R COMMAND" >&2; exit 1; }
sub=$3
shift 3
alive() { [ -r "/proc/$1/stat" ] && ! sed 's/.*) //' "/proc/$1/stat" | grep -q '^[ZX]'; }
case $sub in
inspect)
	if [ ! -f "$dir/pid" ]; then
		echo '[]'
		echo "stow: container \"$1\": not found" >&2
		exit 1
	fi
	pid=$(cat "$dir/pid")
	if alive "$pid"; then
		state="\"status\":\"running\",\"pid\":$pid"
	else
		state='"status":"exited","exit_code":137'
	fi
	echo "[{\"config\":$(cat "$dir/config"),\"state\":{$state}}]"
	;;
rm)
	if [ -f "$dir/pid" ]; then kill -9 "$(cat "$dir/pid")" 2>/dev/null || true; fi
	rm -f "$dir/pid" "$dir/config"
	;;
logs)
	echo "fake sidecar says bye"
	;;
run)
	if [ -e "$dir/fail-run" ]; then echo 'stow: image "stowage-provider": not found' >&2; exit 125; fi
	if [ -e "$dir/pid" ]; then echo 'stow: a container has that name already' >&2; exit 125; fi
	sock=
	while [ $# -gt 0 ]; do
		case $1 in
		-d | --privileged) shift ;;
		--mount)
			case $2 in *,target=/csi) sock=${2#type=bind,source=}; sock=${sock%%,*}/csi.sock ;; esac
			shift 2 ;;
		-*) shift 2 ;;
		*) break ;;
		esac
	done
	image=$1
	shift
	args=
	for a in "$@"; do args="$args${args:+,}\"$a\""; done
	case $image in *:*) ;; *) image=$image:latest ;; esac # as stow records it
	echo "{\"image\":\"$image\",\"args\":[$args]}" >"$dir/config"
	STOWAGE_FAKE_SIDECAR_SOCKET=$sock setsid "$FAKE_SIDECAR" </dev/null >/dev/null 2>&1 &
	echo $! >"$dir/pid"
	echo $! >>"$dir/pids"
	echo 0123456789ab
	;;
*)
	echo "fake stow: unknown command $sub" >&2
	exit 1
	;;
esac
