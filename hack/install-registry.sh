#!/usr/bin/env bash
# Builds the pinned CNCF distribution registry (REGISTRY_VERSION in
# versions.env) from Go modules into a cache directory, unless it already
# holds it (read from the binary's build info). The push/pull tests start it
# on localhost with TLS and htpasswd auth (test/harness/registry.go).
#
# Usage: hack/install-registry.sh [CACHE_DIR]
#   CACHE_DIR defaults to $NRI_VOLUMES_TEST_CACHE or /var/cache/nri-volumes-test/bin.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${1:-${NRI_VOLUMES_TEST_CACHE:-/var/cache/nri-volumes-test/bin}}"
mkdir -p "$cache"
mod=github.com/distribution/distribution/v3
bin="$cache/registry"

if [[ -x "$bin" ]] &&
	[[ "$(go version -m "$bin" 2>/dev/null | awk -v m="$mod" '$1 == "mod" && $2 == m { print $3 }')" == "$REGISTRY_VERSION" ]]; then
	exit 0
fi

echo "install-registry: building registry $REGISTRY_VERSION into $cache" >&2
start=$SECONDS
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Built into a scratch GOBIN and moved, so a failed build leaves no half binary.
GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$tmp" \
	go install "$mod/cmd/registry@$REGISTRY_VERSION"
mv "$tmp/registry" "$bin"
echo "install-registry: done in $((SECONDS - start))s" >&2
