#!/usr/bin/env bash
# bench.sh runs stowage's benchmarks (tests/bench) and writes BENCHMARKS.md:
# the machine, then each benchmark's medians and ratios from this one run.
# Run as root: make bench. RUNS, CYCLES and VOLUMES scale the work.
# MIGRATE_SIZE (1GiB), MIGRATE_FILES (100000) and MIGRATE_RUNS (3) scale the
# migration benchmark (tests/bench/migrate_test.go), read from the environment.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" -eq 0 ] || { echo "bench: run as root" >&2; exit 1; }
tests/scripts/deps.sh

body=$(mktemp)
trap 'rm -f "$body"' EXIT
go test -run '^$' -bench . -benchtime 1x -timeout 90m ./tests/bench/ \
	-args -out "$body" -runs "${RUNS:-20}" -cycles "${CYCLES:-200}" -volumes "${VOLUMES:-10000}"

cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
# Before BENCHMARKS.md is rewritten, which would make the tree dirty.
rev=$(git describe --always --dirty 2>/dev/null || echo dev)
{
	echo "# Benchmarks"
	echo
	echo "Written by \`make bench\` (tests/bench). Every figure comes from one run on one machine;"
	echo "ratios are taken pair by pair against a baseline measured alternately in the same run."
	echo
	echo "- Machine: $(nproc) cores ($cpu), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(. /etc/os-release; echo "$PRETTY_NAME")"
	echo "- dockerd $(dockerd --version | sed 's/Docker version //; s/,.*//'), $(go version | awk '{print $3}'), stowage $rev"
	echo "- Date: $(date -u +%Y-%m-%d)"
	echo
	cat "$body"
} >BENCHMARKS.md
echo "wrote BENCHMARKS.md"
