#!/usr/bin/env bash
# The user guide's screenshots (docs/guide/img/<lang>/*.png), taken by the e2e test
# tests/e2e/test_user_guide_screenshots.py in Debian chromium against a real hub and a gateway's
# LAN page, in zh-CN and en. The test checks every screen before it takes its picture; here it
# writes them for the guide (palette PNGs, 1280x800) instead of into its temporary directory.
#   scripts/guide-screenshots.sh [PYTEST_ARGS...]      (or: make guide-screenshots)
# Needs the test peers (make peers: chromium, the CJK font). The guide's images are replaced only
# when every test passed. Commit docs/guide/img/ afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=docs/guide/img
LIMIT_KIB=3072
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

IMAGING_HUB_GUIDE_SCREENSHOTS="$work" "$PYTHON" -m pytest -q -p no:randomly \
  tests/e2e/test_user_guide_screenshots.py -k "not committed" "$@"

size=$(du -sk "$work" | cut -f1)
count=$(find "$work" -name '*.png' | wc -l)
if [ "$size" -gt "$LIMIT_KIB" ]; then
  echo "guide-screenshots: ${size} KiB of screenshots (limit ${LIMIT_KIB}); keep the guide's images small" >&2
  exit 1
fi
mkdir -p "$OUT"
for lang in zh-CN en; do
  rm -rf "${OUT:?}/$lang"
  cp -r "$work/$lang" "$OUT/$lang"
done
echo "guide-screenshots: $count PNG files in $OUT, ${size} KiB"
# The guide shows each of them (checked against the committed files).
"$PYTHON" -m pytest -q -p no:randomly tests/e2e/test_user_guide_screenshots.py -k committed
