#!/usr/bin/env bash
# Builds the command CMD of Go module MODULE at VERSION into CACHE_DIR/NAME,
# unless it already holds that version (read from the binary's build info).
# install-registry.sh and install-crane.sh call it with their pinned versions.
#
# Usage: hack/install-gotool.sh NAME MODULE CMD VERSION [CACHE_DIR]
#   CACHE_DIR defaults to $NRI_VOLUMES_TEST_CACHE or /var/cache/nri-volumes-test/bin.
set -euo pipefail

name="$1" mod="$2" cmd="$3" version="$4"
cache="${5:-${NRI_VOLUMES_TEST_CACHE:-/var/cache/nri-volumes-test/bin}}"
mkdir -p "$cache"
bin="$cache/$name"

if [[ -x "$bin" ]] &&
	[[ "$(go version -m "$bin" 2>/dev/null | awk -v m="$mod" '$1 == "mod" && $2 == m { print $3 }')" == "$version" ]]; then
	exit 0
fi

echo "install-$name: building $name $version into $cache" >&2
start=$SECONDS
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Built into a scratch GOBIN and moved, so a failed build leaves no half binary.
GOWORK=off GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="$tmp" \
	go install "$mod/$cmd@$version"
mv "$tmp/$name" "$bin"
echo "install-$name: done in $((SECONDS - start))s" >&2
