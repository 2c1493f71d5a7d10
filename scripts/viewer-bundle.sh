#!/usr/bin/env bash
# The diagnostic viewer's bundle (src/imaging_hub/viewer_static/viewer/), built from viewer/
# (package.json + package-lock.json, esbuild, pinned) with the npm registry's exact versions.
#   scripts/viewer-bundle.sh build   npm ci, then rebuild the committed bundle in place
#   scripts/viewer-bundle.sh check   npm ci, rebuild into a temporary directory and compare with
#                                    the committed bundle; exit 1 listing the files that differ
# Needs Node 20+ and npm. The build is deterministic: the same lock file gives the same bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
BUNDLE=src/imaging_hub/viewer_static/viewer

need_node() {
  if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "viewer-bundle: node and npm are needed (Node 20+; Debian: apt-get install nodejs npm)" >&2
    exit 2
  fi
}

install() {
  # --ignore-scripts: no package needs an install script for this build (esbuild's binary comes
  # from its platform package).
  (cd viewer && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
}

case "${1:-}" in
  build)
    need_node
    install
    (cd viewer && node build.mjs "$ROOT/$BUNDLE")
    ;;
  check)
    need_node
    install
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd viewer && node build.mjs "$tmp/viewer" >/dev/null)
    if ! diff_out=$(diff -rq "$BUNDLE" "$tmp/viewer" 2>&1); then
      echo "viewer-bundle: the committed bundle in $BUNDLE differs from a rebuild of viewer/ from its lock file:" >&2
      echo "$diff_out" | sed -e "s|$tmp/viewer|<rebuilt>|g" -e 's/^/  /' >&2
      echo "Run 'make viewer' (scripts/viewer-bundle.sh build) and commit the result." >&2
      exit 1
    fi
    echo "viewer-bundle: the committed bundle matches a rebuild from viewer/package-lock.json"
    ;;
  *)
    echo "usage: $0 build|check" >&2
    exit 2
    ;;
esac
