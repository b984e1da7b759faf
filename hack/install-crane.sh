#!/usr/bin/env bash
# Builds crane, the go-containerregistry CLI (CRANE_VERSION in versions.env),
# from Go modules into a cache directory, unless it already holds it (read
# from the binary's build info). The registry benchmark (test/bench, -only
# registry) runs it as the well-known OCI client that `volume push` and
# `volume pull` are compared with; the bench calls this script itself.
#
# Usage: hack/install-crane.sh [CACHE_DIR]
#   CACHE_DIR defaults to $NRI_VOLUMES_TEST_CACHE or /var/cache/nri-volumes-test/bin.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${1:-${NRI_VOLUMES_TEST_CACHE:-/var/cache/nri-volumes-test/bin}}"
mkdir -p "$cache"
mod=github.com/google/go-containerregistry
bin="$cache/crane"

if [[ -x "$bin" ]] &&
	[[ "$(go version -m "$bin" 2>/dev/null | awk -v m="$mod" '$1 == "mod" && $2 == m { print $3 }')" == "$CRANE_VERSION" ]]; then
	exit 0
fi

echo "install-crane: building crane $CRANE_VERSION into $cache" >&2
start=$SECONDS
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Built into a scratch GOBIN and moved, so a failed build leaves no half binary.
GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$tmp" \
	go install "$mod/cmd/crane@$CRANE_VERSION"
mv "$tmp/crane" "$bin"
echo "install-crane: done in $((SECONDS - start))s" >&2
