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

exec bash "$here/install-gotool.sh" crane github.com/google/go-containerregistry cmd/crane "$CRANE_VERSION" "$@"
