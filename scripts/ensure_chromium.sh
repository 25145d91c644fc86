#!/usr/bin/env bash
# The browser tests drive Debian's Chromium with Playwright (Playwright's own browser download cannot be used here).
# Install it when it is missing and we may (root with apt-get); otherwise say how, and let the tests skip (or, under
# JOURNY_REQUIRE_SERVICES=1, fail) with that reason.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests (apt-get)"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "chromium is not installed: the browser tests will skip. Install it with: sudo apt-get install chromium" >&2
fi
