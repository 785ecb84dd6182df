#!/usr/bin/env bash
# System packages the project needs beyond the Python venv; idempotent, called by `make setup`.
#   chromium: the headless browser the report tests render the HTML report with.
# Each package is skipped when already present; apt-get runs only as root (else a hint is printed).
set -euo pipefail

need() {  # need COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    echo "setup_system: '$1' is missing; install the '$2' package (e.g. sudo apt-get install -y $2)." \
         "Tests that need it are skipped." >&2
  fi
}

need chromium chromium
