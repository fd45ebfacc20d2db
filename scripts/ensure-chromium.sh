#!/usr/bin/env bash
# Install Debian's Chromium for the example app's browser test if it is
# missing and this shell may install packages (root with apt-get). Playwright
# drives /usr/bin/chromium; its own browser download is never used.
# Exits non-zero only when an install was attempted and failed.
set -euo pipefail
[ -x /usr/bin/chromium ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "chromium is missing; install it (apt-get install chromium) to run the browser test" >&2
  exit 0
fi
echo "installing chromium for the browser test" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
