#!/usr/bin/env bash
# Installs the Debian packages the end-to-end tests and the demo need, if any
# is missing: busybox-static (the images are built from it), libseccomp-dev and
# pkg-config (runc is built with cgo), make, e2fsprogs (sized volumes: mkfs.ext4,
# resize2fs), btrfs-progs (the tests make a btrfs to put a store on) and
# xfsprogs (the snapshot tests make an xfs with reflinks). Needs root and apt.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
packages=(busybox-static libseccomp-dev pkg-config make e2fsprogs btrfs-progs xfsprogs)
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "install-deps: apt-get install ${missing[*]}" >&2
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
