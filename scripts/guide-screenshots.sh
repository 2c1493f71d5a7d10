#!/usr/bin/env bash
# The user guide's screenshots (docs/guide/img/<lang>/*.png), taken by the e2e test
# tests/e2e/test_user_guide_screenshots.py in Debian chromium against a real hub and a gateway's
# LAN page, in zh-CN and en. The test checks every screen before it takes its picture; here it
# writes them into the guide (palette PNGs, 1280x800) instead of its temporary directory.
#   scripts/guide-screenshots.sh        (or: make guide-screenshots)
# Needs the test peers (make peers: chromium, the CJK font). Commit docs/guide/img/ afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=docs/guide/img
rm -rf "$OUT/zh-CN" "$OUT/en"
mkdir -p "$OUT"
IMAGING_HUB_GUIDE_SCREENSHOTS="$(pwd)/$OUT" "$PYTHON" -m pytest -q -p no:randomly \
  tests/e2e/test_user_guide_screenshots.py "$@"
count=$(find "$OUT" -name '*.png' | wc -l)
size=$(du -sk "$OUT" | cut -f1)
echo "guide-screenshots: $count PNG files in $OUT, ${size} KiB"
if [ "$size" -gt 3072 ]; then
  echo "guide-screenshots: more than 3 MiB of screenshots; keep the guide's images small" >&2
  exit 1
fi
