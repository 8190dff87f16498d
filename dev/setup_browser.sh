#!/usr/bin/env bash
# Headless Chromium (Debian's package) and Python playwright (driving it; no browser download) for the
# browser tests, plus the newest comfyui-frontend-package in a cache folder for --front-end-root.
# Idempotent. Where Chromium cannot be installed it says so loudly and the browser tests skip.
set -uo pipefail

HOST="${ANYI2V_HOST:-$HOME/.cache/comfyui-anyi2v/host}"
VPY="$HOST/venv/bin/python"
PLAYWRIGHT_VERSION="1.65.2"
NEW_FRONTEND_DIR="$HOST/frontend-newest"

if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[anyi2v] WARNING: could not install Chromium; the browser tests will be SKIPPED" >&2
  else
    echo "[anyi2v] WARNING: Chromium is missing and cannot be installed here (need root + apt); browser tests will be SKIPPED" >&2
  fi
fi

"$VPY" -c "import playwright" 2>/dev/null || "$VPY" -m pip install -q "playwright==$PLAYWRIGHT_VERSION" >&2

# The newest frontend from PyPI, next to the pinned one the host ships (1.32.9).
if [ ! -f "$NEW_FRONTEND_DIR/.ready" ]; then
  rm -rf "$NEW_FRONTEND_DIR"
  if "$VPY" -m pip install -q --no-deps --target "$NEW_FRONTEND_DIR/pkg" comfyui-frontend-package >&2; then
    touch "$NEW_FRONTEND_DIR/.ready"
  else
    echo "[anyi2v] WARNING: could not fetch the newest comfyui-frontend-package; only 1.32.9 is tested" >&2
  fi
fi
exit 0
