#!/usr/bin/env bash
# Re-vendor Swagger UI (GET /api/v1/docs) from npm: bump the version in
# package.json, then run this; commit the two files, the lock and LICENSE.
set -euo pipefail
cd "$(dirname "$0")"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp package.json package-lock.json "$work"/
(cd "$work" && npm install --no-audit --no-fund --ignore-scripts >/dev/null)
dist="$work/node_modules/swagger-ui-dist"
cp "$dist/swagger-ui-bundle.js" "$dist/swagger-ui.css" .
cp "$dist/LICENSE" LICENSE.swagger-ui
cp "$work/package-lock.json" .
