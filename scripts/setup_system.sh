#!/usr/bin/env bash
# System packages the project needs beyond the Python venv; idempotent, called by `make setup`.
#   chromium: the headless browser the report tests render the HTML report with.
#   Debian wallpaper packages: real photographs and illustrations at native resolution, used by
#   scripts/calibrate_quality.py and the best-copy tests (pipelines/configs/calibration_images.yaml).
# Each package is installed only when missing; apt-get runs only as root (else a hint is printed).
set -euo pipefail

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
MISSING=()
command -v chromium >/dev/null 2>&1 || MISSING+=(chromium)
for pkg in mate-backgrounds ukui-wallpapers plasma-workspace-wallpapers gnome-backgrounds \
           lomiri-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 sway-backgrounds; do
  installed "$pkg" || MISSING+=("$pkg")
done
[ ${#MISSING[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}" >/dev/null
else
  echo "setup_system: missing ${MISSING[*]}; install them (e.g. sudo apt-get install -y ${MISSING[*]})." \
       "Tests that need them are skipped." >&2
fi
