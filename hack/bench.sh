#!/usr/bin/env bash
# Runs every benchmark of nri-volumes (see BENCHMARKS.md): the in-process Go
# benchmarks, then test/bench, which starts its own containerds and drives
# them with crictl. The report goes to stdout and to bin/bench-results.md.
# Needs root. Arguments are passed to test/bench (e.g. -n 10, -only ls).
# BENCHTIME sets -benchtime for the Go benchmarks (default 1s).
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
export GOFLAGS=${GOFLAGS:--mod=mod}
mkdir -p bin

pkgs=$($GO list ./... | grep -v '/test/')
gocmd="go test -run '^\$' -bench . -benchmem -benchtime ${BENCHTIME:-1s} <every package outside test/>"
echo "+ $gocmd" >&2
# shellcheck disable=SC2086 # pkgs is a word list
$GO test -run '^$' -bench . -benchmem -benchtime "${BENCHTIME:-1s}" -timeout 30m $pkgs 2>&1 | tee bin/gobench.txt

echo "+ go run ./test/bench $*" >&2
$GO run ./test/bench -gobench bin/gobench.txt -gobench-cmd "$gocmd" -out bin/bench-results.md "$@"
