#!/usr/bin/env bash
# Refresh the web UI's vendored JavaScript (src/cellpipe/ui/static/vendor/): the UI works offline
# and loads nothing from a CDN, so every asset ships in the wheel. Chart.js (MIT) draws the
# compare page's metric charts: its UMD build and its license are copied from the npm package.
#
#   scripts/vendor-ui-assets.sh [VERSION]     (default: the newest 4.x)
#
# Needs npm (it uses the registry npm is configured with). Commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-4}"
DEST=src/cellpipe/ui/static/vendor
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "chart.js@$VERSION" >/dev/null && tar -xzf chart.js-*.tgz)
mkdir -p "$DEST"
cp "$TMP/package/dist/chart.umd.min.js" "$DEST/chart.umd.min.js"
cp "$TMP/package/LICENSE.md" "$DEST/chart.js-LICENSE.md"
PACKAGE_VERSION=$(node -p "require('$TMP/package/package.json').version" 2>/dev/null ||
  sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$TMP/package/package.json" | head -1)
printf 'chart.js %s (dist/chart.umd.min.js, MIT: chart.js-LICENSE.md)\n' "$PACKAGE_VERSION" \
  >"$DEST/VERSIONS.txt"
echo "vendored chart.js $PACKAGE_VERSION into $DEST"
