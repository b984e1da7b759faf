#!/usr/bin/env bash
# Builds the pinned kubelet (KUBELET_VERSION in versions.env) into a cache
# directory, unless it already holds it (recorded in CACHE_DIR/kubelet.stamp,
# or read from `kubelet --version`). Run by hack/install-runtime.sh beside
# its other builds; about 9 minutes on 2 cores, once.
#
# `go install k8s.io/kubernetes/cmd/kubelet@VERSION` does not work: the
# module's go.mod replaces the k8s.io/* staging modules by directories that
# are not in the module zip. So the module is copied to a scratch directory,
# those replace directives are dropped and the published staging modules of
# the same release (v0.MINOR.PATCH) are required instead.
#
# Usage: hack/install-kubelet.sh [CACHE_DIR]
#   CACHE_DIR defaults to $NRI_VOLUMES_TEST_CACHE or /var/cache/nri-volumes-test/bin.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

cache="${1:-${NRI_VOLUMES_TEST_CACHE:-/var/cache/nri-volumes-test/bin}}"
mkdir -p "$cache"
stamp="$cache/kubelet.stamp"
want="kubelet=$KUBELET_VERSION"
bin="$cache/kubelet"

if [[ -x "$bin" ]]; then
	if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
		exit 0
	fi
	if [[ "$("$bin" --version 2>/dev/null)" == "Kubernetes $KUBELET_VERSION" ]]; then
		echo "$want" >"$stamp"
		exit 0
	fi
fi

echo "install-kubelet: building $want into $cache" >&2
start=$SECONDS
rm -f "$stamp"
work="$(mktemp -d)"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# v1.34.12 -> staging modules v0.34.12
staging="v0.${KUBELET_VERSION#v1.}"
major_minor="${KUBELET_VERSION#v}"
major="${major_minor%%.*}"
minor="${major_minor#*.}"
minor="${minor%%.*}"

export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
dir="$(cd "$work" && go mod download -json "k8s.io/kubernetes@$KUBELET_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
[[ -n "$dir" && -f "$dir/go.mod" ]] || { echo "install-kubelet: download of k8s.io/kubernetes@$KUBELET_VERSION failed" >&2; exit 1; }
src="$work/kubernetes"
cp -r "$dir" "$src"
chmod -R u+w "$src"

cd "$src"
edits=()
while read -r mod; do
	edits+=("-dropreplace=$mod" "-require=$mod@$staging")
done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// { print $1 }' go.mod)
[[ ${#edits[@]} -gt 0 ]] || { echo "install-kubelet: no staging replace directives found in go.mod" >&2; exit 1; }
go mod edit "${edits[@]}"

pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$KUBELET_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
go build -trimpath -ldflags "$ldflags" -o "$work/kubelet" ./cmd/kubelet

got="$("$work/kubelet" --version)"
[[ "$got" == "Kubernetes $KUBELET_VERSION" ]] ||
	{ echo "install-kubelet: built kubelet says \"$got\", want Kubernetes $KUBELET_VERSION" >&2; exit 1; }
mv -f "$work/kubelet" "$bin"
echo "$want" >"$stamp"
echo "install-kubelet: $want built in $((SECONDS - start))s" >&2
