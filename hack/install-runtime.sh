#!/usr/bin/env bash
# Builds the pinned containerd, ctr, containerd-shim-runc-v2, runc and crictl
# from Go modules into a cache directory, unless it already holds them at the
# pinned versions (recorded in a stamp file, or read from the binaries' build
# info). It also builds an older containerd and its shim
# (CONTAINERD_OLD_VERSION) into CACHE_DIR/containerd-old, for the tests of
# releases that send no image config digest, and, with hack/install-kubelet.sh
# (its own stamp, its own build, in the background beside these), the kubelet
# (KUBELET_VERSION) into CACHE_DIR/kubelet. Used by .ci/run and by
# test/harness.
#
# With --base it builds only containerd, ctr, the shim, runc and crictl:
# what `make demo` and `make bench` run. The kubelet and the older
# containerd are for the tests alone, and the kubelet is most of a fresh
# machine's build time (issue 19).
#
# Usage: hack/install-runtime.sh [--base] [CACHE_DIR]
#   CACHE_DIR defaults to $NRI_VOLUMES_TEST_CACHE or /var/cache/nri-volumes-test/bin.
# runc needs cgo and libseccomp-dev (pkg-config finds it).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

base=0
if [[ "${1:-}" == "--base" ]]; then
	base=1
	shift
fi
cache="${1:-${NRI_VOLUMES_TEST_CACHE:-/var/cache/nri-volumes-test/bin}}"
mkdir -p "$cache"

# The kubelet is the longest build (about 9 minutes on 2 cores); it starts
# first and is waited for at the end. When it is cached this is quick.
kubelet_pid=
if [[ $base -eq 0 ]]; then
	bash "$here/install-kubelet.sh" "$cache" &
	kubelet_pid=$!
fi
wait_kubelet() {
	[[ -n "$kubelet_pid" ]] || return 0
	wait "$kubelet_pid" || { echo "install-runtime: the kubelet build failed" >&2; exit 1; }
}

stamp="$cache/versions.stamp"
want="containerd=$CONTAINERD_VERSION runc=$RUNC_VERSION+seccomp crictl=$CRICTL_VERSION"

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
		go version -m "$cache/runc" | grep -q -- '-tags=.*seccomp' &&
		[[ "$(module_version "$cache/crictl" sigs.k8s.io/cri-tools)" == "$CRICTL_VERSION" ]]
}

need_main=1
if all_present; then
	if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		need_main=0
	elif built_versions_match; then
		echo "$want" >"$stamp"
		need_main=0
	fi
fi

old_dir="$cache/containerd-old"
old_stamp="$old_dir/versions.stamp"
old_want="containerd=$CONTAINERD_OLD_VERSION"
need_old=1
if [[ $base -eq 1 ]]; then
	need_old=0
elif [[ -x "$old_dir/containerd" && -x "$old_dir/containerd-shim-runc-v2" ]]; then
	if [[ -f "$old_stamp" && "$(cat "$old_stamp")" == "$old_want" ]]; then
		need_old=0
	elif [[ "$(module_version "$old_dir/containerd" github.com/containerd/containerd/v2)" == "$CONTAINERD_OLD_VERSION" &&
		"$(module_version "$old_dir/containerd-shim-runc-v2" github.com/containerd/containerd/v2)" == "$CONTAINERD_OLD_VERSION" ]]; then
		echo "$old_want" >"$old_stamp"
		need_old=0
	fi
fi

if [[ $need_main -eq 0 && $need_old -eq 0 ]]; then
	wait_kubelet
	exit 0
fi

# Build in a scratch module-less directory so this repo's go.mod is not involved.
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod CGO_ENABLED=1

pids=()
if [[ $need_main -eq 1 ]]; then
	echo "install-runtime: building $want into $cache" >&2
	rm -f "$stamp"
	(cd "$work" && GOBIN="$cache" go install -tags no_btrfs \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION") &
	pids+=($!)
	(cd "$work" && GOBIN="$cache" go install -tags seccomp "github.com/opencontainers/runc@$RUNC_VERSION") &
	pids+=($!)
	(cd "$work" && GOBIN="$cache" go install "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION") &
	pids+=($!)
fi
if [[ $need_old -eq 1 ]]; then
	echo "install-runtime: building $old_want into $old_dir" >&2
	mkdir -p "$old_dir"
	rm -f "$old_stamp"
	(cd "$work" && GOBIN="$old_dir" go install -tags no_btrfs \
		"github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_OLD_VERSION" \
		"github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_OLD_VERSION") &
	pids+=($!)
fi

rc=0
for p in "${pids[@]}"; do
	wait "$p" || rc=1
done
if [[ $rc -ne 0 ]]; then
	echo "install-runtime: a build failed" >&2
	exit 1
fi
if [[ $need_main -eq 1 ]]; then
	all_present || { echo "install-runtime: binaries missing after build" >&2; exit 1; }
	echo "$want" >"$stamp"
fi
if [[ $need_old -eq 1 ]]; then
	[[ -x "$old_dir/containerd" && -x "$old_dir/containerd-shim-runc-v2" ]] ||
		{ echo "install-runtime: old containerd missing after build" >&2; exit 1; }
	echo "$old_want" >"$old_stamp"
fi
wait_kubelet
echo "install-runtime: done" >&2
