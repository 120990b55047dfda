#!/usr/bin/env bash
# Headless Chromium + chromedriver from Debian, for the browser test of `meer serve`
# (tests/integration/test_serve.py). Playwright's own browser download is not used: Debian's
# packages install from the package mirror like everything else. Takes about a minute when
# missing; a no-op when both are installed. Needs root (or sudo) and apt.
set -euo pipefail

if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-liberation >/dev/null
chromium --version
