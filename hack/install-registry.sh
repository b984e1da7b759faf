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

exec bash "$here/install-gotool.sh" registry github.com/distribution/distribution/v3 cmd/registry "$REGISTRY_VERSION" "$@"
