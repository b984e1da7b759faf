#!/usr/bin/env bash
# Builds the pinned containerd, ctr, containerd-shim-runc-v2, runc and crictl
# from Go modules into a cache directory, unless it already holds them at the
# pinned versions (recorded in a stamp file, or read from the binaries' build
# info). Used by .ci/run and by test/harness.
#
# Usage: hack/install-runtime.sh [CACHE_DIR]
#   CACHE_DIR defaults to $NRI_VOLUMES_TEST_CACHE or /var/cache/nri-volumes-test/bin.
# runc needs cgo and libseccomp-dev (pkg-config finds it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${1:-${NRI_VOLUMES_TEST_CACHE:-/var/cache/nri-volumes-test/bin}}"
mkdir -p "$cache"
stamp="$cache/versions.stamp"
want="containerd=$CONTAINERD_VERSION runc=$RUNC_VERSION crictl=$CRICTL_VERSION"

bins=(containerd ctr containerd-shim-runc-v2 runc crictl)

all_present() {
	local b
	for b in "${bins[@]}"; do
		[[ -x "$cache/$b" ]] || return 1
	done
}

# module_version BINARY MODULE prints the version of MODULE that BINARY was built from.
module_version() {
	go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 }'
}

built_versions_match() {
	[[ "$(module_version "$cache/containerd" github.com/containerd/containerd/v2)" == "$CONTAINERD_VERSION" ]] &&
		[[ "$(module_version "$cache/containerd-shim-runc-v2" github.com/containerd/containerd/v2)" == "$CONTAINERD_VERSION" ]] &&
		[[ "$(module_version "$cache/ctr" github.com/containerd/containerd/v2)" == "$CONTAINERD_VERSION" ]] &&
		[[ "$(module_version "$cache/runc" github.com/opencontainers/runc)" == "$RUNC_VERSION" ]] &&
		[[ "$(module_version "$cache/crictl" sigs.k8s.io/cri-tools)" == "$CRICTL_VERSION" ]]
}

if all_present; then
	if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		exit 0
	fi
	if built_versions_match; then
		echo "$want" >"$stamp"
		exit 0
	fi
fi

echo "install-runtime: building $want into $cache" >&2
rm -f "$stamp"

# Build in a scratch module-less directory so this repo's go.mod is not involved.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOBIN="$cache" GOFLAGS=-mod=mod CGO_ENABLED=1

pids=()
(cd "$work" && go install -tags no_btrfs \
	"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
	"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" \
	"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION") &
pids+=($!)
(cd "$work" && go install "github.com/opencontainers/runc@$RUNC_VERSION") &
pids+=($!)
(cd "$work" && go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION") &
pids+=($!)

rc=0
for p in "${pids[@]}"; do
	wait "$p" || rc=1
done
if [[ $rc -ne 0 ]]; then
	echo "install-runtime: a build failed" >&2
	exit 1
fi
all_present || { echo "install-runtime: binaries missing after build" >&2; exit 1; }
echo "$want" >"$stamp"
echo "install-runtime: done" >&2
