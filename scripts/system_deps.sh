#!/usr/bin/env bash
# Install the Debian packages the test suite needs, if missing (root on Debian; no-op otherwise).
set -euo pipefail
packages=()
command -v chromium >/dev/null || packages+=(chromium)
[ ${#packages[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    echo "system_deps: please install ${packages[*]} (needs root and apt-get)" >&2
    exit 1
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
