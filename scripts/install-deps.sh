#!/usr/bin/env bash
# Installs what dap needs from Debian's archive, only what is missing. Needs root
# (or sudo) the first time; afterwards it is a quick check.
set -euo pipefail
pkgs=(gcc g++ libc6-dev make libopenblas-openmp-dev libopenblas-dev libpng-dev libjpeg-dev zlib1g-dev
      dataset-fashion-mnist)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: need root to install ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
