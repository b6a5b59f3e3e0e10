#!/usr/bin/env bash
# Fetches htmx (pinned, checked against the npm registry's sha512 integrity) into master/ui/static/vendor/,
# which the master serves at /ui/static/vendor/htmx.min.js. The library is not committed: it comes from the
# npm registry at setup, never from a CDN at page load. Needs only curl, tar and python3 (no Node).
# The console works without it (plain forms and links); htmx only adds the periodic partial refreshes.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.0.4
INTEGRITY="sha512-HLxMCdfXDOJirs3vBZl/ZLoY+c7PfM4Ahr2Ad4YXh6d22T5ltbTXFFkpx9Tgb2vvmWFMbIc3LqN2ToNkZJvyYQ=="
DEST=master/ui/static/vendor
STAMP="$DEST/.htmx-$VERSION"
[ -f "$STAMP" ] && [ -f "$DEST/htmx.min.js" ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 -o "$tmp/htmx.tgz" "https://registry.npmjs.org/htmx.org/-/htmx.org-$VERSION.tgz"
got=$(python3 -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$tmp/htmx.tgz")
if [ "$got" != "$INTEGRITY" ]; then
  echo "install-htmx: htmx.org-$VERSION.tgz does not match its pinned integrity ($got)" >&2
  exit 1
fi
tar -xzf "$tmp/htmx.tgz" -C "$tmp" package/dist/htmx.min.js package/LICENSE
mkdir -p "$DEST"
cp "$tmp/package/dist/htmx.min.js" "$DEST/htmx.min.js"
cp "$tmp/package/LICENSE" "$DEST/htmx.LICENSE"
rm -f "$DEST"/.htmx-*
touch "$STAMP"
echo "install-htmx: htmx $VERSION in $DEST"
