#!/usr/bin/env bash
# What the console's browser test (tests/ui/test_console.py) needs: Debian's chromium, Node and npm, and
# Playwright from the npm registry, at the version pinned in tests/ui/package-lock.json (`npm ci`).
# Playwright's own browser download is disabled: only the package registries are reachable, and the test
# drives Debian's chromium through `executablePath`. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if [ "${#need[@]}" -gt 0 ]; then
  echo "install-ui-test-deps: apt-get install ${need[*]}"
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends install "${need[@]}" >/dev/null
fi
want=$(python3 -c 'import json; print(json.load(open("tests/ui/package-lock.json"))["packages"]["node_modules/playwright"]["version"])')
have=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["version"])' \
  tests/ui/node_modules/playwright/package.json 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  (cd tests/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
fi
echo "install-ui-test-deps: playwright $want, $(chromium --version 2>/dev/null || echo 'chromium ?')"
