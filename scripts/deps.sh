#!/usr/bin/env bash
# Installs the system packages the container tests use, where they are missing: crun (the
# OCI runtime noded drives for `sbatch --container`) and busybox-static (the tests build a
# bundle's root filesystem from it). Debian/Ubuntu, as root; idempotent. Elsewhere it says
# what it skipped, and those tests print SKIP.
set -euo pipefail

want=(crun busybox-static)
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null || ! command -v dpkg-query >/dev/null; then
  echo "deps: not root on a Debian-like system: not installing ${want[*]} (container tests will skip)"
  exit 0
fi
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "deps: ${want[*]} already installed"
  exit 0
fi
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
