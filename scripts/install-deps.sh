#!/usr/bin/env bash
# Installs the Debian packages Switchyard needs, only those missing. Idempotent and quiet
# when everything is present (one dpkg-query, no apt-get).
set -euo pipefail
pkgs=(cmake g++ ninja-build pkg-config make
      libhwloc-dev hwloc libucx-dev ucx-utils libgflags-dev libgtest-dev libgmock-dev
      libopenblas-dev libopenmpi-dev openmpi-bin libnuma-dev iproute2 nlohmann-json3-dev
      python3 python3-torch bible-kjv bible-kjv-text
      python3-dev pybind11-dev libtorch-dev)
missing=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $st == "install ok installed" ]] || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0
echo "make deps: installing ${missing[*]}"
sudo=""
((EUID != 0)) && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "make deps: done"
