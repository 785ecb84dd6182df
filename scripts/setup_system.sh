#!/usr/bin/env bash
# System packages the project needs beyond Python (idempotent: each is installed only when missing).
# Debian wallpaper packages: real photographs and illustrations at native resolution, used by
# scripts/calibrate_quality.py and the best-copy tests (pipelines/configs/calibration_images.yaml).
set -euo pipefail
need() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || MISSING+=("$1"); }
MISSING=()
for pkg in mate-backgrounds ukui-wallpapers plasma-workspace-wallpapers gnome-backgrounds \
           lomiri-wallpapers lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 sway-backgrounds; do
  need "$pkg"
done
if [ ${#MISSING[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${MISSING[@]}"
fi
